"""Per-entity view building: decoded sources -> one row of the heterogeneous-view batch.

`ViewBuilder.build` turns one entity's decoded waveform / image / log rows into the columns of
`raysys.data.batch` (without the relevance columns, which come from the manifest):

    audio [V, C, F, T] float32, image [V, 3, H, W] float32, tabular_num [V, W, Fn] float32,
    tabular_num_mask [V, W, Fn] bool, tabular_cat [V, W, Fc] int64, tabular_row_mask [V, W] bool,
    <modality>_present bool, aug.<modality>.<name>.applied bool [V], aug.<...>.<param> float32 [V]

Randomness: every (entity, epoch, modality, view) has its own generator seeded by
`SeedSequence([seed, entity_id, epoch, modality, stream, view])`, so a row never depends on the
worker, batch or order it is computed in. Audio chain per view (LOEV: invariant + variant
augmentations, each recorded): crop -> time stretch -> pitch shift -> gain -> noise -> eq ->
features -> time mask -> frequency mask. `augment.enabled=False` gives the evaluation
preprocessing: centre crop / centre window, no augmentation, all V views identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision.transforms.v2.functional as VF

from raysys.data import augment as A
from raysys.data.batch import MODALITIES, aug_column
from raysys.data.config import DataConfig
from raysys.data.features import (
    AudioFeaturizer,
    TabularStats,
    clip_samples,
    encode_rows,
    image_chw,
    max_window_offset,
    normalize_image,
    resize_centre_crop,
    time_order,
    window_of,
)

Row = dict[str, Any]
Schema = dict[str, tuple[np.dtype, tuple[int, ...]]]
AugLog = dict[str, A.Record]  # applied augmentation name -> its record
_VIEW_STREAM, _SHARED_STREAM = 0, 1


NON_FINITE_FEATURES = "non-finite features"


class ViewError(ValueError):
    """A modality's source could not be turned into views; `modality` says which, `reason`
    is short and fixed (the quarantine's reason), `detail` free text."""

    def __init__(self, modality: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{modality}: {message}")
        self.modality = modality
        self.reason = reason or f"unusable {modality}"
        self.detail = message


def check_finite(modality: str, values: np.ndarray, what: str) -> None:
    """ViewError(NON_FINITE_FEATURES) naming how many values of `what` are NaN/inf."""
    bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise ViewError(modality, f"{bad} of {values.size} {what} values are NaN or inf "
                                  "(input too large or degenerate?)", NON_FINITE_FEATURES)


def row_schema(cfg: DataConfig, stats: TabularStats | None) -> Schema:
    """column -> (dtype, per-row shape) of every column `ViewBuilder.build` returns."""
    v = cfg.views_per_modality
    schema: Schema = {"key": (np.dtype(str), ()), "entity_id": (np.dtype(np.int64), ())}
    f32, b, i64 = np.dtype(np.float32), np.dtype(bool), np.dtype(np.int64)
    for modality in cfg.modalities:
        if modality == "audio":
            c, f = len(cfg.audio.channels), cfg.audio.n_bins
            schema["audio"] = (f32, (v, c, f, 1 + clip_samples(cfg) // cfg.audio.hop_length))
        elif modality == "image":
            schema["image"] = (f32, (v, 3, cfg.image_size, cfg.image_size))
        else:
            if stats is None:
                raise ValueError("modality 'tabular' needs TabularStats (got None)")
            w, fn, fc = cfg.tabular_window, len(stats.numeric), len(stats.categories)
            schema["tabular_num"] = (f32, (v, w, fn))
            schema["tabular_num_mask"] = (b, (v, w, fn))
            schema["tabular_cat"] = (i64, (v, w, fc))
            schema["tabular_row_mask"] = (b, (v, w))
        schema[f"{modality}_present"] = (b, ())
        for name, params in A.AUG_PARAMS[modality].items():
            schema[aug_column(modality, name, "applied")] = (b, (v,))
            for param in params:
                schema[aug_column(modality, name, param)] = (f32, (v,))
    return schema


def stack_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Rows of one schema -> a numpy batch (leading dim B), as Ray Data's map_batches returns."""
    if not rows:
        raise ValueError("stack_rows: no rows")
    return {col: np.stack([np.asarray(r[col]) for r in rows]) for col in rows[0]}


class ViewBuilder:
    """Builds one entity's row: V independently augmented views per present modality.

    Construct once per worker (filterbanks, resampling kernels are cached). Sets torch to
    `torch_threads` threads (default 1: the pipeline runs many tasks in parallel).
    """

    def __init__(
        self, cfg: DataConfig, stats: TabularStats | None, *, torch_threads: int | None = 1
    ) -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.cfg = cfg
        self.stats = stats
        self.views = cfg.views_per_modality
        self.schema = row_schema(cfg, stats)
        self.featurizer = AudioFeaturizer(cfg) if "audio" in cfg.modalities else None

    def _rng(
        self, entity_id: int, epoch: int, modality: str, stream: int, view: int
    ) -> np.random.Generator:
        words = [
            self.cfg.seed & 0xFFFF_FFFF_FFFF_FFFF,
            int(entity_id) & 0xFFFF_FFFF_FFFF_FFFF,
            int(epoch),
            MODALITIES.index(modality),
            stream,
            view,
        ]
        return np.random.default_rng(np.random.SeedSequence(words))

    def empty_row(self, key: str, entity_id: int) -> Row:
        """A valid row with every modality absent: zeros, present False, no augmentation."""
        row: Row = {}
        for col, (dtype, shape) in self.schema.items():
            row[col] = np.zeros(shape, dtype=dtype)
        row["key"] = str(key)
        row["entity_id"] = np.int64(entity_id)
        return row

    def build(
        self,
        key: str,
        entity_id: int,
        waveform: np.ndarray | None = None,
        image: np.ndarray | None = None,
        log_rows: pd.DataFrame | None = None,
        *,
        epoch: int = 0,
    ) -> Row:
        """One entity's row. A source that is None (or log rows that are empty) gives a
        missing modality. Raises `ViewError(modality, ...)` for an unusable source, so the
        caller can quarantine that view and rebuild with it set to None."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        row = self.empty_row(key, entity_id)
        sources = {"audio": waveform, "image": image, "tabular": log_rows}
        for modality in self.cfg.modalities:
            source = sources[modality]
            if source is None or (isinstance(source, pd.DataFrame) and source.empty):
                continue
            rngs = [self._rng(entity_id, epoch, modality, _VIEW_STREAM, v)
                    for v in range(self.views)]
            if modality == "audio":
                shared = self._rng(entity_id, epoch, modality, _SHARED_STREAM, 0)
                logs = self._audio(row, source, rngs, shared)
            elif modality == "image":
                logs = self._image(row, source, rngs)
            else:
                logs = self._tabular(row, source, rngs)
            row[f"{modality}_present"] = np.bool_(True)
            _write_records(row, modality, logs)
        return row

    # -- audio ---------------------------------------------------------------------------------

    def _audio(
        self, row: Row, source: np.ndarray, rngs: list[np.random.Generator],
        shared: np.random.Generator,
    ) -> list[AugLog]:
        assert self.featurizer is not None
        wave = _check_waveform(source)
        length = clip_samples(self.cfg)
        logs: list[AugLog] = [{} for _ in rngs]
        if not self.cfg.augment.enabled:
            segment, _ = A.crop(wave, length, None)
            feats = self.featurizer(segment).numpy()
            check_finite("audio", feats, "audio feature")
            row["audio"] = np.repeat(feats[None], self.views, axis=0)
            return logs
        a = self.cfg.augment.audio
        group = crop_group_size(a.crop_shared, len(rngs))
        # the first shared crop is drawn whatever the setting: the shared stream stays as it was
        group_crops = [(A.maybe(shared, a.crop_p), float(shared.random()))
                       for _ in range(math.ceil(len(rngs) / group) if group else 1)]
        # segments long enough for the fastest stretch to still fill the clip
        fastest = max(1.0, a.time_stretch_rate[1]) if a.time_stretch_p else 1.0
        seg_len = math.ceil(length * fastest)
        segments = []
        for view, (rng, log) in enumerate(zip(rngs, logs, strict=True)):
            do_crop, start = group_crops[view // group] if group else (
                A.maybe(rng, a.crop_p), float(rng.random()))
            segment, first = A.crop(wave, seg_len, start if do_crop else None)
            if do_crop:
                log["crop"] = {"start": first / wave.shape[-1]}
            segments.append(self._audio_wave_chain(segment, rng, log))
        feats = self.featurizer(torch.stack(segments))
        out = [self._audio_feature_chain(f, rng, log) for f, rng, log in zip(feats, rngs, logs,
                                                                          strict=True)]
        row["audio"] = torch.stack(out).numpy()
        check_finite("audio", row["audio"], "audio feature")
        return logs

    def _audio_wave_chain(
        self, segment: torch.Tensor, rng: np.random.Generator, log: AugLog
    ) -> torch.Tensor:
        a, length = self.cfg.augment.audio, clip_samples(self.cfg)
        vocoder = (a.vocoder_n_fft, a.vocoder_hop)
        if A.maybe(rng, a.time_stretch_p):
            segment, log["time_stretch"] = A.time_stretch(
                segment, rng, a.time_stretch_rate, length, *vocoder
            )
        else:
            segment = A.fix_length(segment, length)
        if A.maybe(rng, a.pitch_shift_p):
            segment, log["pitch_shift"] = A.pitch_shift(
                segment, rng, a.pitch_shift_semitones, a.pitch_shift_ratio_base, *vocoder
            )
        sr = self.cfg.sample_rate
        # no draw when an augmentation added later is off: the other streams stay unchanged
        if a.reverb_p > 0 and A.maybe(rng, a.reverb_p):
            segment, log["reverb"] = A.reverb(segment, rng, sr, a.reverb_rt60, a.reverb_wet)
        if A.maybe(rng, a.gain_p):
            segment, log["gain"] = A.gain(segment, rng, a.gain_db)
        if A.maybe(rng, a.noise_p):
            segment, log["noise"] = A.noise(segment, rng, a.noise_snr_db)
        if a.eq_p > 0 and A.maybe(rng, a.eq_p):
            segment, log["eq"] = A.eq(segment, rng, sr, a.eq_tilt_db, a.eq_peak_db,
                                      a.eq_peak_hz)
        if a.band_p > 0 and A.maybe(rng, a.band_p):
            segment, log["band"] = A.band(segment, rng, sr, a.band_highpass_hz,
                                          a.band_lowpass_hz)
        return segment

    def _audio_feature_chain(
        self, feats: torch.Tensor, rng: np.random.Generator, log: AugLog
    ) -> torch.Tensor:
        a = self.cfg.augment.audio
        if A.maybe(rng, a.time_mask_p):
            feats, log["time_mask"] = A.time_mask(feats, rng, a.time_mask_max_frac)
        if A.maybe(rng, a.freq_mask_p):
            feats, log["freq_mask"] = A.freq_mask(feats, rng, a.freq_mask_max_frac)
        return feats

    # -- image ---------------------------------------------------------------------------------

    def _image(self, row: Row, source: np.ndarray, rngs: list[np.random.Generator]) -> list[AugLog]:
        try:
            img = image_chw(source)
        except ValueError as e:
            raise ViewError("image", str(e)) from None
        size = self.cfg.image_size
        logs: list[AugLog] = [{} for _ in rngs]
        if not self.cfg.augment.enabled:
            x = VF.to_dtype(resize_centre_crop(img, size), torch.float32, scale=True)
            x = normalize_image(x)
            row["image"] = np.repeat(x.numpy()[None], self.views, axis=0)
            return logs
        a = self.cfg.augment.image
        out = []
        for rng, log in zip(rngs, logs, strict=True):
            if A.maybe(rng, a.crop_p):
                x, log["crop"] = A.random_resized_crop(img, rng, a.crop_scale, size)
            else:
                x = resize_centre_crop(img, size)
            if A.maybe(rng, a.flip_p):
                x, log["flip"] = A.hflip(x)
            x = VF.to_dtype(x, torch.float32, scale=True)
            if A.maybe(rng, a.color_p):
                x, log["color"] = A.color_jitter(x, rng, a.color_strength)
            out.append(normalize_image(x))
        row["image"] = torch.stack(out).numpy()
        return logs

    # -- tabular -------------------------------------------------------------------------------

    def _tabular(
        self, row: Row, source: pd.DataFrame, rngs: list[np.random.Generator]
    ) -> list[AugLog]:
        assert self.stats is not None
        if not isinstance(source, pd.DataFrame):
            raise ViewError("tabular", f"log rows must be a pandas DataFrame, got {type(source)}")
        order = time_order(source)
        n, window = order.size, self.cfg.tabular_window
        top = max_window_offset(n, window)
        a, enabled = self.cfg.augment.tabular, self.cfg.augment.enabled
        logs: list[AugLog] = [{} for _ in rngs]
        offsets = []
        for rng, log in zip(rngs, logs, strict=True):
            offsets.append(top // 2)
            if enabled and A.maybe(rng, a.window_p):
                offsets[-1] = int(rng.integers(0, top + 1))
                log["window"] = {"start": offsets[-1] / n}
        # encode only the rows some view uses (logs may be much longer than the windows)
        lo, hi = min(offsets), min(n, max(offsets) + window)
        rows = encode_rows(source, self.stats, order[lo:hi])
        parts = []
        for rng, log, offset in zip(rngs, logs, offsets, strict=True):
            win = window_of(rows, window, offset - lo)
            if enabled and A.maybe(rng, a.corrupt_p):
                win, log["corrupt"] = A.corrupt(win, rng, a.corrupt_fraction, a.corrupt_categorical)
            parts.append(win)
        for col, i in (("tabular_num", 0), ("tabular_num_mask", 1), ("tabular_cat", 2),
                       ("tabular_row_mask", 3)):
            row[col] = np.stack([p[i] for p in parts])
        check_finite("tabular", row["tabular_num"], "standardised log")
        return logs


def crop_group_size(crop_shared: bool | int, views: int) -> int:
    """How many consecutive views share one crop (`augment.audio.crop_shared`); 0 = none."""
    if isinstance(crop_shared, bool):
        return views if crop_shared else 0
    return 0 if crop_shared == 1 else min(crop_shared, views)


def _check_waveform(source: np.ndarray | torch.Tensor) -> torch.Tensor:
    wave = torch.as_tensor(np.asarray(source), dtype=torch.float32)
    if wave.ndim != 1 or wave.numel() == 0:
        raise ViewError("audio", f"waveform must be mono [samples] and non-empty, got "
                                 f"shape {tuple(wave.shape)}")
    if not bool(torch.isfinite(wave).all()):
        raise ViewError("audio", "waveform contains NaN or inf")
    return wave


def _write_records(row: Row, modality: str, logs: list[AugLog]) -> None:
    """Fill the aug.<modality>.* columns (already zero) from each view's applied records."""
    for v, log in enumerate(logs):
        for name, record in log.items():
            row[aug_column(modality, name, "applied")][v] = True
            for param, value in record.items():
                row[aug_column(modality, name, param)][v] = value
