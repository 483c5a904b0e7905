"""Each augmentation does what its record says (checked on signals with known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysys.data import augment as A

SR = 16000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(seconds * SR), dtype=torch.float64) / SR
    return (amp * torch.sin(2 * torch.pi * freq * t)).float()


def dominant_frequency(wave: torch.Tensor) -> float:
    """Peak of the Hann-windowed spectrum, refined by parabolic interpolation of log power."""
    x = wave.double().numpy()
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    k = int(spec[1:-1].argmax()) + 1
    a, b, c = np.log(spec[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / x.size


def onsets(wave: torch.Tensor, hop: int = 32) -> np.ndarray:
    """Times (s) where the frame RMS envelope rises out of silence (2% of its maximum): the
    phase vocoder smears burst amplitudes, but the gaps between bursts stay silent."""
    x = wave.numpy()
    env = np.sqrt(np.array([np.mean(x[i : i + hop] ** 2) for i in range(0, x.size - hop, hop)]))
    above = env > 0.02 * env.max()
    kept: list[float] = []
    for t in np.flatnonzero(above[1:] & ~above[:-1]) * hop / SR:
        if not kept or t - kept[-1] > 0.1:  # a dip inside one smeared burst is not an onset
            kept.append(float(t))
    return np.array(kept)


def bursts(spacing: float, seconds: float = 2.0, burst: float = 0.04) -> torch.Tensor:
    t = np.arange(round(seconds * SR)) / SR
    gate = (np.mod(t - 0.05, spacing) < burst) & (t >= 0.05)
    return torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t) * gate).astype(np.float32))


# -- waveform ----------------------------------------------------------------------------------


def test_gain_record_gives_rms_ratio():
    wave = sine(300) + 0.1 * torch.randn(SR, generator=torch.Generator().manual_seed(0))
    out, record = A.gain(wave, rng(1), (-6.0, 6.0))
    assert -6.0 <= record["db"] <= 6.0
    ratio = out.pow(2).mean().sqrt() / wave.pow(2).mean().sqrt()
    assert float(ratio) == pytest.approx(10 ** (record["db"] / 20), rel=1e-5)
    again, record_again = A.gain(wave, rng(1), (-6.0, 6.0))
    assert record_again == record and torch.equal(again, out)


def test_noise_record_is_the_realised_snr():
    wave = sine(440)
    out, record = A.noise(wave, rng(2), (10.0, 40.0))
    added = out - wave
    snr = 10 * torch.log10(wave.pow(2).mean() / added.pow(2).mean())
    assert 10.0 <= record["snr_db"] <= 40.0
    assert float(snr) == pytest.approx(record["snr_db"], abs=1e-3)
    silent, _ = A.noise(torch.zeros(100), rng(2), (10.0, 10.0))
    assert not silent.any()


@pytest.mark.parametrize(("freq", "seed"), [(440.0, 0), (440.0, 3), (1000.0, 5), (250.0, 7)])
def test_pitch_shift_moves_dominant_frequency_by_recorded_semitones(freq, seed):
    wave = sine(freq)
    out, record = A.pitch_shift(wave, rng(seed), (-4.0, 4.0))
    assert out.shape == wave.shape and -4.1 <= record["semitones"] <= 4.1
    shifted = dominant_frequency(out[2000:-2000])
    assert shifted == pytest.approx(freq * 2 ** (record["semitones"] / 12), rel=3e-3)


def test_pitch_quantisation_is_fine_and_exact():
    for s in np.linspace(-4, 4, 33):
        k, exact = A.quantised_pitch_ratio(float(s), 200)
        assert abs(exact - s) <= 0.09
        assert 2 ** (exact / 12) * 200 == pytest.approx(k, rel=1e-12)
    wave = sine(440)
    unchanged, exact = A.apply_pitch_shift(wave, 0.001)
    assert exact == 0.0 and torch.equal(unchanged, wave)


@pytest.mark.parametrize("rate", [0.7, 0.8, 1.25, 1.3])
def test_time_stretch_scales_onset_spacing_by_inverse_rate(rate):
    wave = bursts(0.2)
    stretched = A.apply_time_stretch(wave, rate, 512, 128)
    assert stretched.shape[-1] == round(wave.shape[-1] / rate)
    before, after = np.diff(onsets(wave)), np.diff(onsets(stretched))
    assert np.median(before) == pytest.approx(0.2, abs=2e-3)
    assert np.median(after) == pytest.approx(0.2 / rate, rel=0.03)
    assert dominant_frequency(stretched) == pytest.approx(1000.0, rel=0.01)  # pitch kept


@pytest.mark.parametrize("rate", [0.7, 200 / 237, 1.0, 1.1, 1.3, 200 / 163])
def test_phase_vocoder_is_bit_equal_to_torchaudios(rate):
    import torchaudio.functional as AF

    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(20800).astype(np.float32))
    spec = torch.stft(wave, 512, 128, window=torch.hann_window(512), pad_mode="constant",
                      return_complex=True)
    advance = torch.linspace(0, math.pi * 128, spec.shape[-2])[:, None]
    assert torch.equal(A.phase_vocoder(spec, rate, advance),
                       AF.phase_vocoder(spec, rate, advance))


def test_time_stretch_records_rate_and_fixes_length():
    wave = bursts(0.2, seconds=1.3)
    out, record = A.time_stretch(wave, rng(4), (0.7, 1.3), SR)
    assert out.shape == (SR,) and 0.7 <= record["rate"] <= 1.3
    again, _ = A.time_stretch(wave, rng(4), (0.7, 1.3), SR)
    assert torch.equal(out, again)


def test_crop_start_centre_and_padding():
    wave = torch.arange(100.0)
    seg, start = A.crop(wave, 30, 0.5)
    assert start == 35 and torch.equal(seg, torch.arange(35.0, 65.0))
    seg, start = A.crop(wave, 30, None)
    assert start == 35
    seg, start = A.crop(wave, 30, 1.0)
    assert start == 70 and torch.equal(seg, torch.arange(70.0, 100.0))
    short, _ = A.crop(torch.ones(10), 16, 0.3)
    torch.testing.assert_close(short, torch.tensor([0.0] * 3 + [1.0] * 10 + [0.0] * 3))


# -- features ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_time_mask_zeroes_exactly_the_recorded_frames(seed):
    feats = torch.rand(3, 64, 63) + 1.0
    out, record = A.time_mask(feats, rng(seed), 0.15)
    start, width = round(record["start"] * 63), round(record["width"] * 63)
    assert 1 <= width <= int(0.15 * 63)
    expected = feats.clone()
    expected[..., start : start + width] = 0.0
    assert torch.equal(out, expected)


@pytest.mark.parametrize("seed", range(5))
def test_freq_mask_zeroes_exactly_the_recorded_bins(seed):
    feats = torch.rand(3, 64, 63) + 1.0
    out, record = A.freq_mask(feats, rng(seed), 0.15)
    start, width = round(record["start"] * 64), round(record["width"] * 64)
    expected = feats.clone()
    expected[:, start : start + width, :] = 0.0
    assert width >= 1 and torch.equal(out, expected)


# -- image -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_random_resized_crop_record_reproduces_the_crop(seed):
    img = torch.from_numpy(rng(9).integers(0, 256, (3, 120, 90), dtype=np.uint8))
    out, r = A.random_resized_crop(img, rng(seed), (0.3, 1.0), 32)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    top, left = round(r["top"] * 120), round(r["left"] * 90)
    h, w = round(r["height"] * 120), round(r["width"] * 90)
    assert top + h <= 120 and left + w <= 90
    assert 0.3 - 0.05 <= h * w / (120 * 90) <= 1.0
    ref = torch.nn.functional.interpolate(
        img[None, :, top : top + h, left : left + w].float(), size=(32, 32), mode="bilinear",
        antialias=True, align_corners=False,
    )[0]
    assert (out.float() - ref.round().clamp(0, 255)).abs().max() <= 1.0


def test_crop_box_fallback_for_extreme_aspect():
    top, left, h, w = A.sample_crop_box(rng(0), 10, 1000, (0.9, 1.0))
    assert (h, w) == (10, round(10 * 4 / 3)) and top == 0 and left == (1000 - w) // 2


def test_flip_equals_mirror():
    img = torch.from_numpy(rng(1).integers(0, 256, (3, 5, 7), dtype=np.uint8))
    out, record = A.hflip(img, rng(0))
    assert record == {} and np.array_equal(out.numpy(), img.numpy()[:, :, ::-1])


def plain_color(x: np.ndarray, b: float, c: float, s: float) -> np.ndarray:
    """Brightness, contrast (towards the mean grey level), saturation (towards per-pixel grey)."""
    def grey(y: np.ndarray) -> np.ndarray:
        return 0.2989 * y[0] + 0.587 * y[1] + 0.114 * y[2]

    y = np.clip(x * b, 0, 1)
    y = np.clip(c * y + (1 - c) * grey(y).mean(), 0, 1)
    return np.clip(s * y + (1 - s) * grey(y)[None], 0, 1)


@pytest.mark.parametrize("seed", range(3))
def test_color_jitter_matches_plain_formulas_of_recorded_factors(seed):
    x = torch.from_numpy(rng(seed + 10).random((3, 8, 8)).astype(np.float32))
    out, r = A.color_jitter(x, rng(seed), 0.4)
    for name in ("brightness", "contrast", "saturation"):
        assert 0.6 <= r[name] <= 1.4
    ref = plain_color(x.double().numpy(), r["brightness"], r["contrast"], r["saturation"])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    assert torch.equal(A.apply_color(x, 1.0, 1.0, 1.0), x)


# -- tabular -----------------------------------------------------------------------------------


def tab_window() -> A.TabWindow:
    g = rng(3)
    num = g.normal(size=(10, 4)).astype(np.float32)
    num_mask = g.random((10, 4)) < 0.7
    row_mask = np.arange(10) < 8
    num_mask &= row_mask[:, None]
    num[~num_mask] = 0.0
    cat = (g.integers(1, 6, (10, 3)) * row_mask[:, None]).astype(np.int64)
    cat[0, 1] = 0
    return num, num_mask, cat, row_mask


@pytest.mark.parametrize("seed", range(4))
def test_corrupt_replaces_the_recorded_fraction_of_observed_values(seed):
    window = tab_window()
    (num, num_mask, cat, row_mask), record = A.corrupt(window, rng(seed), (0.1, 0.5))
    f = record["fraction"]
    assert 0.1 <= f <= 0.5
    changed = num != window[0]
    assert changed.sum() == round(f * window[1].sum())
    assert not (changed & ~window[1]).any()  # only observed values, never padding
    assert np.array_equal(num_mask, window[1]) and np.array_equal(row_mask, window[3])
    cat_changed = cat != window[2]
    assert cat_changed.sum() <= round(f * ((window[2] != 0) & window[3][:, None]).sum())
    for j in range(3):
        real = window[2][window[3], j]
        assert set(cat[window[3], j]) <= set(real)  # ids come from the same column
        assert (cat[window[2][:, j] == 0, j] == 0).all()


def test_corrupt_of_empty_window_records_fraction():
    empty = (np.zeros((4, 2), np.float32), np.zeros((4, 2), bool), np.zeros((4, 0), np.int64),
             np.zeros(4, bool))
    out, record = A.corrupt(empty, rng(0), (0.2, 0.2))
    assert record == {"fraction": 0.2} and not out[0].any()


def test_aug_params_cover_every_record():
    wave, feats = sine(440, 0.2), torch.rand(2, 8, 10)
    records = {
        ("audio", "gain"): A.gain(wave, rng(), (0, 1))[1],
        ("audio", "noise"): A.noise(wave, rng(), (0, 1))[1],
        ("audio", "eq"): A.eq(wave, rng(), SR, (-3, 3), (-8, 8), (300, 4000))[1],
        ("audio", "band"): A.band(wave, rng(), SR, (20, 400), (3000, 7000))[1],
        ("audio", "reverb"): A.reverb(wave, rng(), SR, (0.1, 0.5), (0.1, 0.5))[1],
        ("audio", "pitch_shift"): A.pitch_shift(wave, rng(), (1, 2))[1],
        ("audio", "time_stretch"): A.time_stretch(wave, rng(), (1, 2), 100)[1],
        ("audio", "time_mask"): A.time_mask(feats, rng(), 0.5)[1],
        ("audio", "freq_mask"): A.freq_mask(feats, rng(), 0.5)[1],
        ("image", "crop"): A.random_resized_crop(torch.zeros(3, 8, 8, dtype=torch.uint8),
                                                 rng(), (0.5, 1), 4)[1],
        ("image", "flip"): A.hflip(torch.zeros(3, 2, 2))[1],
        ("image", "color"): A.color_jitter(torch.zeros(3, 2, 2), rng(), 0.5)[1],
        ("tabular", "corrupt"): A.corrupt(tab_window(), rng(), (0.1, 0.2))[1],
    }
    for (modality, name), record in records.items():
        assert tuple(record) == A.AUG_PARAMS[modality][name]


def test_eq_matches_its_formula_on_sines():
    """apply_eq: a 1 kHz sine keeps its level under a pure tilt, a 2 kHz one gains the tilt's
    dB per octave; a resonance at its centre adds its peak dB; the record holds the values."""
    sr, n = 16000, 16000
    t = torch.arange(n) / sr
    rms_db = lambda x: 20 * torch.log10(x.pow(2).mean().sqrt())  # noqa: E731
    for hz, tilt, peak, peak_hz, want in ((1000, 3.0, 0.0, 500.0, 0.0),
                                         (2000, 3.0, 0.0, 500.0, 3.0),
                                         (4000, -2.0, 0.0, 500.0, -4.0),
                                         (1000, 0.0, 6.0, 1000.0, 6.0)):
        x = torch.sin(2 * math.pi * hz * t)
        y = A.apply_eq(x, sr, tilt, peak, peak_hz)
        assert float(rms_db(y) - rms_db(x)) == pytest.approx(want, abs=0.05)
    out, record = A.eq(x, np.random.default_rng(0), sr, (-3, 3), (-8, 8), (300, 4000))
    assert set(record) == {"tilt_db", "peak_db", "peak_hz"} and 300 <= record["peak_hz"] <= 4000
    assert torch.allclose(out, A.apply_eq(x, sr, *record.values()))


def test_band_passes_the_band_attenuates_outside_and_never_clips():
    """apply_band: 0 dB inside the band, -3 dB at each corner, -24 dB two octaves outside
    (2nd order per edge), and a loud in-band sine passes at its level (no clipping to 1)."""
    rms_db = lambda x: 20 * torch.log10(x[SR // 4:].pow(2).mean().sqrt())  # noqa: E731
    for hz, want in ((1000, 0.0), (200, -3.0), (4000, -3.0), (50, -24.0)):
        x = sine(hz, amp=3.0)
        got = float(rms_db(A.apply_band(x, SR, 200.0, 4000.0)) - rms_db(x))
        assert got == pytest.approx(want, abs=1.0 if want > -10 else 2.0), hz
    loud = A.apply_band(sine(1000, amp=3.0), SR, 200.0, 4000.0)
    assert loud.abs().max() > 2.9 and loud.dtype == torch.float32
    x = sine(440)
    out, record = A.band(x, rng(3), SR, (20, 400), (3000, 7000))
    assert 20 <= record["highpass_hz"] <= 400 and 3000 <= record["lowpass_hz"] <= 7000
    torch.testing.assert_close(out, A.apply_band(x, SR, *record.values()))
    draws = [A.band(x, rng(s), SR, (20, 400), (3000, 7000))[1]["highpass_hz"] for s in range(400)]
    assert 0.4 < np.mean(np.array(draws) < math.sqrt(20 * 400)) < 0.6  # log-uniform: median


def test_reverb_response_decays_by_60_db_at_rt60_and_the_mix_is_recorded():
    """room_response: unit energy, the Schroeder energy decay crosses -60 dB near rt60;
    apply_reverb: wet = 0 is the dry signal, wet = 1 the convolution (tail cut)."""
    rt60 = 0.4
    ir = A.room_response(rt60, SR, rng(0).standard_normal(round(rt60 * SR)))
    assert float(ir.pow(2).sum()) == pytest.approx(1.0, rel=1e-5)
    decay = 10 * np.log10(np.cumsum(ir.numpy()[::-1] ** 2)[::-1])
    t20 = np.argmax(decay < -20.0) / SR  # a -20 dB point extrapolated (T20), as rooms are measured
    assert 3 * t20 == pytest.approx(rt60, rel=0.15)
    x = sine(440)
    torch.testing.assert_close(A.apply_reverb(x, ir, 0.0), x)
    full = np.convolve(x.numpy(), ir.numpy())[: x.numel()]
    np.testing.assert_allclose(A.apply_reverb(x, ir, 1.0).numpy(), full, atol=1e-4)
    out, record = A.reverb(x, rng(5), SR, (0.1, 0.5), (0.1, 0.5))
    assert 0.1 <= record["rt60"] <= 0.5 and 0.1 <= record["wet"] <= 0.5 and out.shape == x.shape
    again = rng(5)
    rt60_, wet_ = again.uniform(0.1, 0.5), again.uniform(0.1, 0.5)
    ir_ = A.room_response(rt60_, SR, again.standard_normal(max(1, round(rt60_ * SR))))
    torch.testing.assert_close(out, A.apply_reverb(x, ir_, wet_))
