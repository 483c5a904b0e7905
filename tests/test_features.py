"""Audio stack, image tensor and tabular statistics/windows against plain reference code."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchaudio

from raysys.data.config import DataConfig
from raysys.data.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AudioFeaturizer,
    Moments,
    TabularStats,
    image_to_tensor,
    pcen,
    pcen_smoothing_coef,
    standardize_channels,
    tabular_window,
)

SR = 16000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def config(**audio) -> DataConfig:
    return DataConfig(audio=audio) if audio else DataConfig()


# -- audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "n_bins", "hop", "seconds"),
    [(["logmel", "logstft", "pcen"], 64, 256, 1.0), (["pcen"], 32, 160, 0.5),
     (["logstft", "logmel"], 40, 128, 0.25), (["logmel", "logfreq"], 48, 256, 1.0)],
)
def test_featurizer_shape_dtype(channels, n_bins, hop, seconds):
    cfg = DataConfig(clip_seconds=seconds, audio={"channels": channels, "n_bins": n_bins,
                                                  "hop_length": hop})
    feat = AudioFeaturizer(cfg)
    samples = round(seconds * SR)
    single = feat(sine(440, seconds))
    assert single.shape == (len(channels), n_bins, 1 + samples // hop) == feat.shape
    assert single.dtype == torch.float32 and torch.isfinite(single).all()
    batch = feat(np.stack([sine(440, seconds), sine(880, seconds)]))
    assert batch.shape == (2, *feat.shape)
    torch.testing.assert_close(batch[0], single)


def test_standardized_stack_is_the_raw_stack_per_channel():
    wave = sine(440) + sine(1800, amp=0.05)
    raw = AudioFeaturizer(config(standardize="none"))(wave)
    ours = AudioFeaturizer(config())(wave)
    mean = raw.mean(dim=(1, 2), keepdim=True)
    std = raw.std(dim=(1, 2), keepdim=True, unbiased=False)
    torch.testing.assert_close(ours, (raw - mean) / std, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.mean(dim=(1, 2)), torch.zeros(3), rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.std(dim=(1, 2), unbiased=False), torch.ones(3),
                               rtol=0, atol=1e-4)


def test_silent_and_loud_clips_are_standardised():
    """Raw log channels of silence sit at log(log_eps) = -13.8 while a loud tone peaks near
    +10: a constant dominated the encoder input. Standardised, silence is exactly zero (no
    NaN) and a gain change (a constant shift of the log channels) leaves logmel unchanged."""
    feat, raw = AudioFeaturizer(config()), AudioFeaturizer(config(standardize="none"))
    silent = np.zeros(SR, dtype=np.float32)
    noise = np.random.default_rng(0).normal(0, 0.05, SR).astype(np.float32)
    loud = sine(440, amp=0.8) + noise  # noise keeps every bin far above log_eps
    quiet = loud * np.float32(10 ** (-20 / 20))  # -20 dB
    assert float(raw(silent)[0].mean()) == pytest.approx(np.log(1e-6), abs=1e-3)
    assert torch.equal(feat(silent), torch.zeros(feat.shape))
    for x in (feat(loud), feat(quiet)):
        assert torch.isfinite(x).all()
        assert float(x.abs().mean(dim=(1, 2)).min()) > 0.1  # every channel carries signal
    torch.testing.assert_close(feat(loud)[0], feat(quiet)[0], rtol=0, atol=1e-2)
    # a batch of views is standardised view by view
    both = feat(np.stack([loud, silent]))
    torch.testing.assert_close(both[0], feat(loud))
    assert torch.equal(both[1], torch.zeros(feat.shape))


def test_standardize_channels_floor():
    x = torch.full((2, 4, 5), 3.0)
    x[1] = torch.arange(20.0).reshape(4, 5)
    out = standardize_channels(x, floor=1e-3)
    assert torch.equal(out[0], torch.zeros(4, 5))
    assert float(out[1].std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)


def test_featurizer_rejects_wrong_length():
    with pytest.raises(ValueError, match="L=16000"):
        AudioFeaturizer(config())(np.zeros(15000, dtype=np.float32))


def test_logmel_matches_torchaudio_melspectrogram():
    cfg = config(channels=["logmel"], standardize="none")
    wave = sine(1000) + sine(3000, amp=0.1)
    ours = AudioFeaturizer(cfg)(wave)[0]
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=512, hop_length=256, n_mels=64)
    ref = torch.log(mel(torch.from_numpy(wave)) + 1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def plain_stft_magnitude(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with a periodic Hann window and reflect padding by n_fft // 2: [n_fft//2+1, T]."""
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    return np.abs(np.fft.rfft(np.array(frames), axis=1)).T


def plain_triangles(n_freqs: int, corners: np.ndarray, unit_sum: bool = True) -> np.ndarray:
    """Triangles b over corners[b] < corners[b + 1] < corners[b + 2], of height 1 or normalised
    to sum 1: [n_freqs, len(corners) - 2]."""
    freqs = np.linspace(0, SR // 2, n_freqs)
    n_bins = len(corners) - 2
    fb = np.zeros((n_freqs, n_bins))
    for b in range(n_bins):
        lo, mid, hi = corners[b], corners[b + 1], corners[b + 2]
        for i, f in enumerate(freqs):
            fb[i, b] = max(0.0, min((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    return fb / fb.sum(axis=0) if unit_sum else fb


def test_logstft_matches_plain_stft_and_triangles():
    cfg = config(channels=["logstft"], n_bins=32, standardize="none")
    wave = sine(700) + sine(2500, amp=0.2)
    ours = AudioFeaturizer(cfg)(wave)[0].numpy()
    corners = np.linspace(0.0, SR / 2, 34)
    ref = plain_triangles(257, corners).T @ plain_stft_magnitude(wave, 512, 256)
    # compared in the linear domain: float32 leakage floors differ by ~1e-7 of the peak
    np.testing.assert_allclose(np.exp(ours) - 1e-6, ref, rtol=1e-4, atol=1e-6 * ref.max())
    # the 700 Hz sine peaks in the bin whose centre is nearest 700 Hz
    centres = np.linspace(0, SR / 2, 34)[1:-1]
    assert ours[:, 10].argmax() == np.abs(centres - 700).argmin()


def test_logfreq_matches_plain_stft_and_log_spaced_triangles():
    cfg = config(channels=["logfreq"], n_bins=48, standardize="none")
    wave = sine(440) + sine(1000, amp=0.2)
    ours = AudioFeaturizer(cfg)(wave)[0].numpy()
    corners = 110.0 * 2.0 ** (np.arange(-1, 49) / 12)
    ref = plain_triangles(2049, corners, unit_sum=False).T @ plain_stft_magnitude(wave, 4096, 256)
    np.testing.assert_allclose(np.exp(ours) - 1e-6, ref, rtol=1e-4, atol=1e-6 * ref.max())
    assert ours[:, 30].argmax() == 24  # 440 Hz = 110 Hz * 2^(24/12)


def harmonic(f0: float, partials: int = 6) -> np.ndarray:
    return sum(sine(f0 * k, amp=0.4 / k) for k in range(1, partials + 1))


@pytest.mark.parametrize("semitones", [1, 3, 7])
def test_logfreq_moves_a_harmonic_tone_by_its_shift_in_semitones(semitones):
    """A pitch shift is a translation along logfreq's F axis, one bin per semitone, in level
    too (unit-height triangles)."""
    feat = AudioFeaturizer(config(channels=["logfreq"], n_bins=48, standardize="none"))
    low = feat(harmonic(196.0))[:, :, 10:-10].mean(dim=-1)  # G3, away from the padded edges
    high = feat(harmonic(196.0 * 2 ** (semitones / 12)))[:, :, 10:-10].mean(dim=-1)
    for partial in (1, 2, 4):
        b = round(12 * np.log2(196.0 * partial / 110.0))
        assert low[0, b] > low[0, b - 1] and low[0, b] > low[0, b + 1]  # a peak per partial
        torch.testing.assert_close(high[0, b + semitones], low[0, b], atol=0.15, rtol=0.0)


@pytest.mark.parametrize(
    ("audio", "clip", "message"),
    [({"channels": ["logfreq"], "n_bins": 96}, 1.0, "reaches 2.*above sample_rate/2"),
     ({"channels": ["logfreq"], "logfreq_n_fft": 512}, 1.0, "wider than the lowest logfreq"),
     ({"channels": ["logfreq"]}, 0.1, "fewer than logfreq_n_fft/2"),
     ({"channels": ["logfreq"], "hop_length": 512, "logfreq_n_fft": 256, "n_bins": 16,
       "logfreq_f_min": 1000.0, "n_fft": 512}, 1.0, "exceeds audio.logfreq_n_fft")],
)
def test_logfreq_settings_checked_with_the_key_named(audio, clip, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(clip_seconds=clip, audio=audio)
    DataConfig(clip_seconds=clip, audio={**audio, "channels": ["logmel"]})  # only with logfreq


def plain_pcen(e: np.ndarray, s: float, alpha: float, delta: float, r: float, eps: float):
    out = np.zeros_like(e)
    for f in range(e.shape[0]):
        m = e[f, 0]
        for t in range(e.shape[1]):
            m = (1 - s) * m + s * e[f, t]
            out[f, t] = (e[f, t] / (eps + m) ** alpha + delta) ** r - delta**r
    return out


def test_pcen_matches_plain_loop():
    rng = np.random.default_rng(0)
    energy = rng.gamma(1.0, 10.0, size=(5, 40))
    args = (0.05, 0.98, 2.0, 0.5, 1e-6)
    ours = pcen(torch.from_numpy(energy), *args).numpy()
    np.testing.assert_allclose(ours, plain_pcen(energy, *args), rtol=1e-9, atol=1e-9)


def test_pcen_channel_is_pcen_of_mel_power():
    cfg = config(channels=["pcen"], standardize="none")
    wave = sine(440) * np.linspace(0, 1, SR, dtype=np.float32)
    ours = AudioFeaturizer(cfg)(wave)[0].numpy()
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=512, hop_length=256, n_mels=64)
    s = pcen_smoothing_coef(0.4, SR, 256)
    ref = plain_pcen(mel(torch.from_numpy(wave)).double().numpy(), s, 0.98, 2.0, 0.5, 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert abs(s - (np.sqrt(1 + 4 * 25.0**2) - 1) / (2 * 25.0**2)) < 1e-12


# -- image -------------------------------------------------------------------------------------


def test_image_to_tensor_constant_and_normalisation():
    img = np.full((50, 80, 3), (10, 128, 250), dtype=np.uint8)
    out = image_to_tensor(img, 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    for c, v in enumerate((10, 128, 250)):
        expected = (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[c], torch.full((32, 32), expected), rtol=1e-5, atol=1e-5)


def test_image_to_tensor_centre_crops_without_resizing_when_short_side_fits():
    img = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    out = image_to_tensor(img, 64).numpy()
    crop = img[:, 32:96].astype(np.float64) / 255
    ref = (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8)])
def test_image_to_tensor_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="image"):
        image_to_tensor(bad, 16)


# -- tabular -----------------------------------------------------------------------------------


def log_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(5, 2, n)
    a[rng.random(n) < 0.1] = np.nan
    a[rng.random(n) < 0.05] = np.inf
    cat = rng.choice(["red", "green", "blue", "pink"], n, p=[0.5, 0.3, 0.15, 0.05]).astype(object)
    cat[rng.random(n) < 0.1] = None
    return pd.DataFrame({"key": "k", "time": rng.permutation(n).astype(float), "a": a,
                         "b": rng.integers(0, 100, n).astype(float), "c": cat})


def test_stats_merged_from_partials_equal_whole_table():
    df = log_table(500)
    parts = [TabularStats.from_frame(df.iloc[i : i + 97]) for i in range(0, 500, 97)]
    merged = TabularStats.merge_all(parts)
    whole = TabularStats.from_frame(df)
    assert merged.numeric_columns == ["a", "b"] and merged.categorical_columns == ["c"]
    for col in ("a", "b"):
        x = df[col].to_numpy()
        x = x[np.isfinite(x)]
        m = merged.numeric[col]
        assert m.count == whole.numeric[col].count == x.size
        assert m.mean == pytest.approx(x.mean(), rel=1e-12)
        assert m.std == pytest.approx(x.std(), rel=1e-10)
    assert merged.categories == whole.categories
    assert merged.categories["c"] == df["c"].dropna().value_counts().to_dict()


def test_moments_edge_cases():
    assert Moments.of(np.array([np.nan, np.inf])) == Moments()
    assert Moments().merge(Moments.of(np.array([2.0, 4.0]))).mean == 3.0
    assert Moments.of(np.array([3.0, 3.0])).std == 1.0  # constant column: scale 1


def test_vocab_max_size_ids_from_one_and_json_roundtrip():
    stats = TabularStats.from_frame(log_table(400), max_vocab=2)
    assert stats.vocab("c") == {"red": 1, "green": 2}
    restored = TabularStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored == stats and restored.vocab("c") == stats.vocab("c")
    with pytest.raises(ValueError, match="malformed"):
        TabularStats.from_dict({"numeric": {}})


def test_merge_rejects_different_columns():
    a = TabularStats.from_frame(log_table(20))
    b = TabularStats.from_frame(log_table(20).drop(columns=["b"]))
    with pytest.raises(ValueError, match="column sets differ"):
        a.merge(b)


def test_tabular_window_orders_standardises_masks_and_pads():
    stats = TabularStats.from_frame(log_table(300), max_vocab=2)
    rows = pd.DataFrame({"time": [3.0, 1.0, 2.0], "a": [1.0, np.nan, np.inf],
                         "b": [10.0, 20.0, 30.0], "c": ["green", "pink", None],
                         "extra": ["ignored"] * 3})
    num, num_mask, cat, row_mask = tabular_window(rows, stats, window=5, offset=0)
    assert num.shape == (5, 2) and num.dtype == np.float32 and cat.dtype == np.int64
    np.testing.assert_array_equal(row_mask, [True, True, True, False, False])
    # time order: rows 1 (t=1), 2 (t=2), 0 (t=3)
    np.testing.assert_array_equal(num_mask[:, 0], [False, False, True, False, False])
    np.testing.assert_array_equal(num_mask[:, 1], [True, True, True, False, False])
    ma, mb = stats.numeric["a"], stats.numeric["b"]
    expected_b = [(v - mb.mean) / mb.std for v in (20.0, 30.0, 10.0)]
    np.testing.assert_allclose(num[:3, 1], expected_b, rtol=1e-6)
    assert num[2, 0] == pytest.approx((1.0 - ma.mean) / ma.std, rel=1e-6)
    assert num[0, 0] == num[1, 0] == 0.0 and not num[3:].any()
    np.testing.assert_array_equal(cat[:, 0], [0, 0, 2, 0, 0])  # pink unknown, None missing


def test_tabular_window_offsets_and_missing_columns():
    stats = TabularStats.from_frame(log_table(50))
    rows = pd.DataFrame({"time": np.arange(10.0), "b": np.arange(10.0)})
    _, mask, cat, row_mask = tabular_window(rows, stats, window=4, offset=6)
    mb = stats.numeric["b"]
    num = tabular_window(rows, stats, window=4, offset=6)[0]
    np.testing.assert_allclose(num[:, 1], (np.arange(6.0, 10.0) - mb.mean) / mb.std, rtol=1e-6)
    assert row_mask.all() and not mask[:, 0].any() and not cat.any()
    with pytest.raises(ValueError, match=r"offset 7 out of range \[0, 6\]"):
        tabular_window(rows, stats, window=4, offset=7)
