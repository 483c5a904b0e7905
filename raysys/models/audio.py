"""Audio encoders over the multi-channel spectrogram stack: a VGG-style CNN and a TDNN.

## cnn (`model.audio.kind: cnn`)

Input `[N, C, F, T]` (C = len(data.audio.channels), F = n_bins, T = frames). Each stage is
`(conv3x3 -> GroupNorm -> ReLU) x 2 -> maxpool 2x2`; the last stage (no max-pool) ends in
- `pool: time` (default): a mean over frames, an adaptive mean down to `freq_bands` frequency
  bands, flattened (`widths[-1] * freq_bands`) and a Linear back to `widths[-1]`;
- `pool: global`: one mean over (F, T).
Any F, T >= 2**(stages-1) work. Output `[N, widths[-1]]`.

Why `time` is the default: after GroupNorm + ReLU every channel of every clip has nearly the
same spatial mean, so a global mean keeps almost nothing of the clip (random-init features of
different demo clips had cosine 0.99) and pitch, which is *where* in frequency the energy
lies, is averaged away. Keeping the frequency axis lets the encoder read it.
Parameters: sum over stages of 9 * (c_in * w + w * w) (about 72k for the default 16/32/64),
plus `(w * freq_bands + 1) * w` for the time pool (33k at w = 64, 8 bands).
Activation memory per view: about 2 * widths[0] * F * T floats at the first stage.

## tdnn (`model.audio.kind: tdnn`)
The x-vector frame-level network (Snyder et al., "X-vectors: robust DNN embeddings for speaker
recognition", 2018): each frame's whole spectral vector (C * F values) is one input vector, and
each width is a 1-D convolution over time (kernel 5, then kernel 3 with dilation 2, 3, ...),
GroupNorm, ReLU; then the mean and standard deviation over frames and a Linear to
`widths[-1]`. With `aggregate: all` the statistics are taken over every frame layer's output,
concatenated (the multi-layer feature aggregation of ECAPA-TDNN, Desplanques et al. 2020):
the first layer, which separates speakers best (docs/learning.md, claim 3), reaches the
embedding directly. With `periodicity: P`, P learned mixtures of the pooled frame features
also contribute their autocorrelation over `periodicity_lags` frames (`Periodicity`): how
fast the sound repeats, which the mean and standard deviation cannot show (tempo).
Frequency is never pooled: what distinguishes voices and instruments (the spectral envelope
and how it moves) reaches the pooling intact. On the one-word speech corpus
at random init, `raysys evaluate` found the speaker with a logistic probe on the backbone at
0.89 (the CNN: 0.61; mean MFCC statistics: 0.92), on the invariant head at 0.69 (CNN: 0.53)
(docs/learning.md). Parameters: 5 * C * F * w0 + sum 3 * w_i * w_i+1
+ 2 w^2 (about 0.7M at C * F = 144, widths 256 x 3).
"""

from __future__ import annotations

import torch
from torch import nn

from raysys.models.base import LayerStack, StagedEncoder, group_norm
from raysys.models.config import AudioEncoderConfig


def conv_stage(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), group_norm(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class TimePool(nn.Module):
    """`[N, C, F, T]` -> adaptive mean over F to `bands`, then over T the mean (and, with
    `stats`, also the standard deviation) -> `[N, C * bands]` (`[N, 2 * C * bands]`)."""

    def __init__(self, bands: int, stats: bool = False) -> None:
        super().__init__()
        self.bands, self.stats = bands, stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, (self.bands, x.shape[-1]))
        parts = [x.mean(dim=-1)] + ([x.std(dim=-1, unbiased=False)] if self.stats else [])
        return torch.cat(parts, dim=1).flatten(1)


def pooling(cfg: AudioEncoderConfig) -> nn.Sequential:
    """The last stage's pooling to `[N, widths[-1]]` (module docstring)."""
    w = cfg.widths[-1]
    if cfg.pool == "global":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    stats = cfg.pool == "stats"
    return nn.Sequential(TimePool(cfg.freq_bands, stats),
                         nn.Linear(w * cfg.freq_bands * (2 if stats else 1), w))


class AudioCNN(StagedEncoder):
    """Spectrogram-stack CNN; `trunk` = all stages but the last, `last` = last stage + pool."""

    def __init__(self, cfg: AudioEncoderConfig, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"model.audio: in_channels must be >= 1 (got {in_channels})")
        self.in_channels = in_channels
        assert cfg.widths is not None
        widths = [in_channels, *cfg.widths]
        stages = [conv_stage(widths[i], widths[i + 1], pool=True) for i in range(len(cfg.widths))]
        self.trunk = nn.Sequential(*stages[:-1])
        self.last = nn.Sequential(stages[-1][:-1], *pooling(cfg))
        self.out_dim = cfg.widths[-1]

    def check(self, x: torch.Tensor) -> None:  # type: ignore[override]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"audio encoder: expected [N, {self.in_channels}, F, T], got {list(x.shape)}"
            )


class FrameStats(nn.Module):
    """`[N, W, T]` -> `[N, 2W]`: the mean and standard deviation over frames."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h.mean(dim=-1), h.std(dim=-1, unbiased=False)], dim=1)


class Periodicity(nn.Module):
    """`[N, W, T]` -> `[N, channels * lags]`: `channels` learned mixtures of the W frame
    features (a 1x1 convolution), each centred over frames, and their autocorrelation at lags
    1..`lags` frames divided by the lag-0 value (zero beyond T - 1).

    Why: a mean and a standard deviation over frames are the same for a phrase and the phrase
    played faster, so no head after them can read tempo (docs/learning.md, session 17: tempo
    R² 0.24 in every space). How often a feature repeats is its autocorrelation; on the music
    corpus the autocorrelation of a hand-made onset curve alone recovers tempo at R² 0.47-0.49
    (experiments/tempo_ceiling.py). Computed in at least float32, by FFT."""

    def __init__(self, width: int, channels: int, lags: int) -> None:
        super().__init__()
        self.mix = nn.Conv1d(width, channels, 1)
        self.lags = lags

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.mix(h)
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # fp16 FFT needs powers of 2
        x = x - x.mean(dim=-1, keepdim=True)
        frames = x.shape[-1]
        spectrum = torch.fft.rfft(x, n=2 * frames)
        power = spectrum.real.square() + spectrum.imag.square()  # abs() has no gradient at 0
        ac = torch.fft.irfft(power, n=2 * frames)[..., :frames]
        ac = ac[..., 1:self.lags + 1] / (ac[..., :1] + 1e-6 * frames)
        ac = nn.functional.pad(ac, (0, self.lags - ac.shape[-1]))
        return ac.flatten(1).to(h.dtype)


class FrameSummary(nn.Module):
    """`[N, W, T]` -> `[N, out_dim]`: `FrameStats`, and with `periodicity` channels also their
    `Periodicity` (model.audio.periodicity)."""

    def __init__(self, width: int, periodicity: int, lags: int) -> None:
        super().__init__()
        self.stats = FrameStats()
        self.periodicity = Periodicity(width, periodicity, lags) if periodicity else None
        self.out_dim = 2 * width + periodicity * lags

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.periodicity is None:
            return self.stats(h)
        return torch.cat([self.stats(h), self.periodicity(h)], dim=1)


def frame_layer(c_in: int, c_out: int, index: int) -> nn.Sequential:
    """Layer `index` of the TDNN: kernel 5 first, then kernel 3 with dilation index + 1."""
    kernel, dilation = (5, 1) if index == 0 else (3, index + 1)
    conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation,
                     padding=dilation * (kernel // 2), bias=False)
    return nn.Sequential(conv, group_norm(c_out), nn.ReLU())


class AggregatedLast(nn.Module):
    """Last frame layer on the newest `width_in` channels of the stacked trunk output, then the
    frame summary of everything (trunk layers and last layer) and a Linear."""

    def __init__(self, layer: nn.Module, width_in: int, stacked: int, width: int,
                 cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.width_in = width_in
        self.layer = layer
        self.stats = FrameSummary(stacked + width, cfg.periodicity, cfg.periodicity_lags)
        self.out = nn.Linear(self.stats.out_dim, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        last = self.layer(h[:, -self.width_in:])
        return self.out(self.stats(torch.cat([h, last], dim=1)))


class AudioTDNN(StagedEncoder):
    """x-vector frame layers over `[N, C*F, T]`; `last` = last frame layer + stats + Linear
    (with `aggregate: all`, the stats of every frame layer: `LayerStack` + `AggregatedLast`)."""

    def __init__(self, cfg: AudioEncoderConfig, in_channels: int, n_bins: int) -> None:
        super().__init__()
        if in_channels < 1 or n_bins < 1:
            raise ValueError(f"model.audio: need in_channels, n_bins >= 1 "
                             f"(got {in_channels}, {n_bins})")
        self.in_channels, self.n_bins = in_channels, n_bins
        assert cfg.widths is not None
        widths = [in_channels * n_bins, *cfg.widths]
        layers = [frame_layer(widths[i], widths[i + 1], i) for i in range(len(cfg.widths))]
        w = cfg.widths[-1]
        if cfg.aggregate == "all":
            self.trunk = nn.Sequential(nn.Flatten(1, 2), LayerStack(*layers[:-1]))
            self.last = AggregatedLast(layers[-1], widths[-2], sum(cfg.widths[:-1]), w, cfg)
        else:
            self.trunk = nn.Sequential(nn.Flatten(1, 2), *layers[:-1])
            summary = FrameSummary(w, cfg.periodicity, cfg.periodicity_lags)
            self.last = nn.Sequential(layers[-1], summary, nn.Linear(summary.out_dim, w))
        self.out_dim = w

    def check(self, x: torch.Tensor) -> None:  # type: ignore[override]
        if x.dim() != 4 or tuple(x.shape[1:3]) != (self.in_channels, self.n_bins):
            raise ValueError(f"audio encoder: expected [N, {self.in_channels}, {self.n_bins}, "
                             f"T], got {list(x.shape)}")


def build_audio_encoder(cfg: AudioEncoderConfig, in_channels: int,
                        n_bins: int) -> StagedEncoder:
    if cfg.kind == "cnn":
        return AudioCNN(cfg, in_channels)
    if cfg.kind == "tdnn":
        return AudioTDNN(cfg, in_channels, n_bins)
    raise ValueError(f"model.audio.kind: unknown encoder {cfg.kind!r}")
