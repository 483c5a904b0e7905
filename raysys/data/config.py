"""Typed config of the data pipeline (`data.*`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from raysys.config_base import AutoOrPositive, Section

Modality = Literal["audio", "image", "tabular"]
AudioChannel = Literal["logmel", "logstft", "pcen", "logfreq"]


def _check_range(
    name: str, value: tuple[float, float], low: float | None, high: float | None
) -> None:
    """A sampling range `(lo, hi)` must satisfy low <= lo <= hi <= high (None = unbounded)."""
    lo, hi = value
    if lo > hi or (low is not None and lo < low) or (high is not None and hi > high):
        raise ValueError(f"{name}={value}: need {low} <= lo <= hi <= {high}")


class AudioFeatures(Section):
    """Multi-channel time-frequency stack `[C, F, T]` computed with torchaudio."""

    channels: list[AudioChannel] = Field(
        default_factory=lambda: ["logmel", "logstft", "pcen"], min_length=1
    )
    n_fft: int = Field(512, gt=0)
    hop_length: int = Field(256, gt=0)
    n_bins: int = Field(64, gt=0, description="frequency bins F shared by every channel")
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0, description="upper band edge in Hz; None = sr/2")
    log_eps: float = Field(1e-6, gt=0, description="floor added before log: log(x + log_eps)")
    logfreq_f_min: float = Field(
        110.0, gt=0, description="logfreq channel: centre of its lowest bin in Hz (A2)"
    )
    logfreq_bins_per_octave: int = Field(
        12, gt=0, description="logfreq channel: bins per octave (12: one per semitone)"
    )
    logfreq_n_fft: int = Field(
        4096, gt=0, description="logfreq channel: its own STFT size, long enough to resolve "
        "its lowest bins (shares hop_length, so T is the same)"
    )
    pcen_time_constant: float = Field(
        0.4, gt=0, description="PCEN smoother time constant in seconds (Wang et al. 2017: 0.4)"
    )
    pcen_gain: float = Field(0.98, ge=0, le=1, description="PCEN alpha (AGC strength)")
    pcen_bias: float = Field(2.0, gt=0, description="PCEN delta (offset before compression)")
    pcen_power: float = Field(0.5, gt=0, le=1, description="PCEN r (root compression)")
    pcen_eps: float = Field(1e-6, gt=0, description="PCEN epsilon in (eps + M)^alpha")
    standardize: Literal["clip", "none"] = Field(
        "clip", description="clip: each channel of each view to zero mean, unit std over (F, T)"
    )
    standardize_floor: float = Field(
        1e-3, gt=0, description="smallest std divided by (a silent channel becomes all zeros)"
    )

    @model_validator(mode="after")
    def _check(self) -> AudioFeatures:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels has duplicates: {self.channels}")
        return self


class AudioAugment(Section):
    """Audio augmentations; each records whether it was applied and its parameters."""

    gain_db: tuple[float, float] = (-6.0, 6.0)
    gain_p: float = Field(0.8, ge=0, le=1)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    noise_p: float = Field(0.5, ge=0, le=1)
    eq_p: float = Field(1.0, ge=0, le=1, description="random microphone colouring (tilt and "
                        "resonance/notch), so two views do not share the recording's colour; "
                        "0 = off (docs/learning.md; 0.8 until session 31)")
    # ±5 dB/oct and ±12 dB (±3 and ±8 until session 31): +1-3 points on every speech measure,
    # nothing lost on music, 3 seeds each; milder lost 3-8, stronger gained no more
    # (docs/learning.md, session 30)
    eq_tilt_db: tuple[float, float] = Field((-5.0, 5.0), description="dB per octave at 1 kHz")
    eq_peak_db: tuple[float, float] = Field((-12.0, 12.0), description="resonance (+) / notch "
                                            "(-)")
    eq_peak_hz: tuple[float, float] = Field((300.0, 4000.0), description="its centre, Hz")
    band_p: float = Field(0.0, ge=0, le=1, description="random band limit (high-pass and "
                          "low-pass), so two views do not share the recording's bandwidth; "
                          "0 = off")
    band_highpass_hz: tuple[float, float] = Field((20.0, 400.0), description="high-pass corner, "
                                                  "drawn log-uniformly, Hz")
    band_lowpass_hz: tuple[float, float] = Field((3000.0, 7500.0), description="low-pass "
                                                 "corner, drawn log-uniformly, Hz (below "
                                                 "sample_rate / 2)")
    reverb_p: float = Field(0.0, ge=0, le=1, description="another room: a synthetic room "
                            "response mixed in, so two views do not share the recording's "
                            "room; 0 = off")
    reverb_rt60: tuple[float, float] = Field((0.1, 0.8), description="seconds to -60 dB")
    reverb_wet: tuple[float, float] = Field((0.05, 0.5), description="share of the "
                                            "reverberant signal in the mix")
    pitch_shift_semitones: tuple[float, float] = (-4.0, 4.0)
    pitch_shift_p: float = Field(0.5, ge=0, le=1)
    time_stretch_rate: tuple[float, float] = (0.7, 1.3)
    time_stretch_p: float = Field(0.5, ge=0, le=1)
    time_mask_max_frac: float = Field(0.15, ge=0, le=1)
    time_mask_p: float = Field(0.5, ge=0, le=1)
    freq_mask_max_frac: float = Field(0.15, ge=0, le=1)
    freq_mask_p: float = Field(0.5, ge=0, le=1)
    crop_p: float = Field(1.0, ge=0, le=1, description="random (vs centre) clip crop")
    crop_shared: bool | Annotated[int, Field(ge=1)] = Field(
        False, description="which views of an entity share a crop position: false = each view "
        "its own crop (COLA; better embeddings, docs/learning.md); true = all views one crop "
        "(the LOEV paper's setting); n >= 2 = consecutive groups of n views share one crop "
        "(LOEV heads get same-crop pairs, the invariant head cross-crop ones)"
    )
    pitch_shift_ratio_base: int = Field(
        200,
        ge=10,
        le=2000,
        description="pitch ratio is quantised to k/base so resampling stays cheap (base=200: "
        "<=0.09 semitone steps, ~1 ms per 1 s clip; the recorded semitones are the exact ones)",
    )
    vocoder_n_fft: int = Field(512, ge=16, description="phase-vocoder STFT size (stretch, pitch)")
    vocoder_hop: int = Field(128, ge=1, description="phase-vocoder hop")

    @model_validator(mode="after")
    def _check(self) -> AudioAugment:
        _check_range("gain_db", self.gain_db, None, None)
        _check_range("noise_snr_db", self.noise_snr_db, None, None)
        _check_range("eq_tilt_db", self.eq_tilt_db, None, None)
        _check_range("eq_peak_db", self.eq_peak_db, None, None)
        _check_range("eq_peak_hz", self.eq_peak_hz, 1.0, None)
        _check_range("band_highpass_hz", self.band_highpass_hz, 1.0, None)
        _check_range("band_lowpass_hz", self.band_lowpass_hz, 1.0, None)
        _check_range("reverb_rt60", self.reverb_rt60, 0.01, 10.0)
        _check_range("reverb_wet", self.reverb_wet, 0.0, 1.0)
        _check_range("pitch_shift_semitones", self.pitch_shift_semitones, -24.0, 24.0)
        _check_range("time_stretch_rate", self.time_stretch_rate, 0.25, 4.0)
        if self.vocoder_hop > self.vocoder_n_fft:
            raise ValueError(f"vocoder_hop={self.vocoder_hop} exceeds vocoder_n_fft")
        return self


class ImageAugment(Section):
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_p: float = Field(1.0, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    color_strength: float = Field(0.4, ge=0, le=1)
    color_p: float = Field(0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ImageAugment:
        _check_range("crop_scale", self.crop_scale, 1e-3, 1.0)
        return self


class TabularAugment(Section):
    corrupt_fraction: tuple[float, float] = (0.1, 0.3)
    corrupt_p: float = Field(0.5, ge=0, le=1)
    corrupt_categorical: bool = Field(
        True, description="also replace categorical ids with ids drawn from other rows"
    )
    window_p: float = Field(1.0, ge=0, le=1, description="random (vs centre) row-window offset")

    @model_validator(mode="after")
    def _check(self) -> TabularAugment:
        _check_range("corrupt_fraction", self.corrupt_fraction, 0.0, 1.0)
        return self


class Augment(Section):
    enabled: bool = True
    audio: AudioAugment = Field(default_factory=AudioAugment)
    image: ImageAugment = Field(default_factory=ImageAugment)
    tabular: TabularAugment = Field(default_factory=TabularAugment)


class DataConfig(Section):
    """Where the archive is and how entities become heterogeneous-view batches."""

    modalities: list[Modality] = Field(
        default_factory=lambda: ["audio", "image", "tabular"], min_length=1
    )
    views_per_modality: int = Field(2, ge=1, le=8)
    sample_rate: int = Field(16000, gt=0)
    clip_seconds: float = Field(1.0, gt=0, description="crop/pad length of every audio view")
    audio: AudioFeatures = Field(default_factory=AudioFeatures)
    image_size: int = Field(64, ge=8)
    tabular_window: int = Field(16, ge=1, description="rows per tabular view (padded + masked)")
    tabular_max_vocab: int = Field(
        1000, ge=1, description="most frequent categories kept per column; ids 1..N, 0 = unknown"
    )
    max_candidates: int = Field(16, ge=1, description="graded-relevance list length per entity")
    relevance_group: int = Field(
        4, ge=0, description="training order puts each query next to up to this many - 1 of "
        "its relevance candidates, so graded lists meet their candidates in a batch; 0 = off"
    )
    augment: Augment = Field(default_factory=Augment)
    batch_size: int = Field(32, ge=1)
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="entities held out by key hash")
    withhold_views: float = Field(
        0.0, ge=0, lt=1, description="for experiments on missing views: the share of "
        "training entities whose view of each modality training does not see (drawn per "
        "entity and modality from its key and the seed); evaluation sees every view"
    )
    incomplete_entities: Literal["mask", "drop"] = Field(
        "mask", description="a training entity lacking a view of some configured modality: "
        "`mask` trains on the views it has (the multi-view loss skips the missing pairs), "
        "`drop` leaves it out of training"
    )
    allow_outside_paths: bool = Field(
        False, description="read manifest paths that leave the archive root (absolute paths, "
        "../, symlinks to elsewhere, URIs of other buckets); false = quarantine them with reason "
        "'outside the archive'"
    )
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="abort above this bad share")
    read_timeout_s: float = Field(
        60.0, gt=0, description="limit of one read of a media file; a stuck read (a hung mount "
        "or endpoint) quarantines that record as 'read timeout'"
    )
    rows_per_task: int = Field(
        64, ge=1, description="entities per decode task (Ray block). Ray Data leaves a decode "
        "slot idle for a scheduling round trip after every task, so small tasks waste CPU: "
        "8 rows ran at 0.5x a DataLoader on 2 cores, 64 at 0.95x (docs/benchmarks.md)"
    )
    prefetch_batches: int = Field(
        2, ge=0, description="micro-batches each training worker keeps fetched ahead of the step "
        "(Ray Data iter_batches); more absorbs short decode stalls at the cost of memory"
    )
    executor_pause_ms: float = Field(
        5.0, ge=0, le=100, description="sleep of Ray Data's scheduling loop after each step "
        "while the consumer has batches waiting (raysys.data.pacing); 0 = Ray's loop, which "
        "spins then and took as much CPU as each training worker's step on 2 cores"
    )
    decode_concurrency: int | None = Field(None, ge=1, description="map tasks; None = Ray's")
    decode_cpus: AutoOrPositive = Field(
        "auto", description="logical CPUs per decode task (fractions let decoding share CPUs "
        "with training workers); auto = 1 for `data inspect`, and in pretraining min(1, half "
        "the CPUs the workers leave free)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities has duplicates: {self.modalities}")
        self._check_audio_bands()
        return self

    def _check_logfreq_bands(self) -> None:
        a, nyquist = self.audio, self.sample_rate / 2
        per_bin = 2.0 ** (1.0 / a.logfreq_bins_per_octave)
        top = a.logfreq_f_min * per_bin ** a.n_bins  # upper corner of the highest triangle
        if top > nyquist:
            raise ValueError(
                f"audio.logfreq_f_min={a.logfreq_f_min} with audio.n_bins={a.n_bins} at "
                f"{a.logfreq_bins_per_octave} bins per octave reaches {top:.0f} Hz, above "
                f"sample_rate/2 = {nyquist}; use fewer bins or a lower logfreq_f_min"
            )
        narrowest = a.logfreq_f_min * (per_bin - 1.0 / per_bin)
        spacing = self.sample_rate / a.logfreq_n_fft
        if narrowest < spacing:
            raise ValueError(
                f"audio.logfreq_n_fft={a.logfreq_n_fft}: its {spacing:.1f} Hz STFT bins are wider "
                f"than the lowest logfreq filter ({narrowest:.1f} Hz at logfreq_f_min="
                f"{a.logfreq_f_min}); use a larger logfreq_n_fft or a higher logfreq_f_min"
            )
        if round(self.clip_seconds * self.sample_rate) <= a.logfreq_n_fft // 2:
            raise ValueError(
                f"clip_seconds={self.clip_seconds} gives fewer than logfreq_n_fft/2 = "
                f"{a.logfreq_n_fft // 2} samples; the centred STFT needs more"
            )
        if a.hop_length > a.logfreq_n_fft:
            raise ValueError(f"audio.hop_length={a.hop_length} exceeds audio.logfreq_n_fft="
                             f"{a.logfreq_n_fft}")

    def _check_audio_bands(self) -> None:
        nyquist = self.sample_rate / 2
        a = self.audio
        if a.n_bins > a.n_fft // 2 + 1:
            raise ValueError(
                f"audio.n_bins={a.n_bins} exceeds the {a.n_fft // 2 + 1} STFT bins of "
                f"audio.n_fft={a.n_fft}"
            )
        f_max = nyquist if a.f_max is None else a.f_max
        if f_max > nyquist or a.f_min >= f_max:
            raise ValueError(
                f"audio.f_min={a.f_min}, audio.f_max={a.f_max}: need f_min < f_max <= "
                f"sample_rate/2 = {nyquist}"
            )
        if round(self.clip_seconds * self.sample_rate) <= a.n_fft // 2:
            raise ValueError(
                f"clip_seconds={self.clip_seconds} gives fewer than n_fft/2 = {a.n_fft // 2} "
                "samples; the centred STFT needs more"
            )
        if a.hop_length > a.n_fft:
            raise ValueError(f"audio.hop_length={a.hop_length} exceeds audio.n_fft={a.n_fft}")
        if "logfreq" in a.channels:
            self._check_logfreq_bands()
        aug = self.augment.audio
        if aug.band_p > 0 and aug.band_lowpass_hz[1] >= nyquist:
            raise ValueError(f"augment.audio.band_lowpass_hz={list(aug.band_lowpass_hz)}: the "
                             f"low-pass corner must stay below sample_rate/2 = {nyquist}")
