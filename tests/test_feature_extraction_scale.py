"""ScaleFeatureExtractor: MFCC / log-mel frames checked against an independent NumPy implementation."""

import numpy as np
import pytest
from scale_media import tone

from modeling_scale.feature_extraction_scale import ScaleFeatureExtractor

RATE = 16000


def reference_mfcc(
    waveform, n_fft=1024, hop=256, n_mels=80, n_mfcc=80, top_db=80.0, rate=RATE, log_mel_only=False
):
    """torchaudio's MFCC definition written out: centred STFT, HTK mel, floored power dB, DCT-II."""
    padded = np.pad(waveform.astype(np.float64), n_fft // 2, mode="reflect")
    count = 1 + (len(padded) - n_fft) // hop
    frames = padded[np.arange(count)[:, None] * hop + np.arange(n_fft)[None, :]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    to_mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10 ** (mel / 2595.0) - 1.0)  # noqa: E731
    edges = to_hz(np.linspace(to_mel(0.0), to_mel(rate / 2), n_mels + 2))
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    filters = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        rising = (bins - edges[m]) / (edges[m + 1] - edges[m])
        falling = (edges[m + 2] - bins) / (edges[m + 2] - edges[m + 1])
        filters[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    mel = np.maximum(power @ filters, 1e-10)
    if log_mel_only:
        return np.log(mel), edges
    decibels = 10 * np.log10(mel)
    decibels = np.maximum(decibels, decibels.max() - top_db)
    n = np.arange(n_mels)
    dct = np.sqrt(2.0 / n_mels) * np.cos(np.pi / n_mels * (n[None, :] + 0.5) * np.arange(n_mfcc)[:, None])
    dct[0] /= np.sqrt(2.0)
    return decibels @ dct.T, edges


@pytest.fixture
def waveform():
    noise = np.random.default_rng(0).normal(scale=0.01, size=2 * RATE).astype(np.float32)
    return tone(2.0, RATE) + noise


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("feature_type", ["mfcc", "log_mel"])
def test_features_match_reference_definition(waveform, backend, feature_type):
    extractor = ScaleFeatureExtractor(stft_backend=backend, feature_type=feature_type, normalize=False)
    features = extractor(waveform, sampling_rate=RATE, return_tensors="np")["audio_features"][0]
    expected, _ = reference_mfcc(waveform, log_mel_only=feature_type == "log_mel")
    assert features.shape == expected.shape == (1 + len(waveform) // 256, 80)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=2e-3)


def test_fewer_mfcc_coefficients_are_the_leading_ones(waveform):
    full = ScaleFeatureExtractor(normalize=False)(waveform, return_tensors="np")["audio_features"]
    few = ScaleFeatureExtractor(feature_size=13, normalize=False)(waveform, return_tensors="np")[
        "audio_features"
    ]
    np.testing.assert_allclose(few, full[..., :13], rtol=1e-6)


def test_log_mel_peaks_at_the_tone(waveform):
    extractor = ScaleFeatureExtractor(feature_type="log_mel", normalize=False)
    log_mel = extractor(waveform, return_tensors="np")["audio_features"][0]
    _, edges = reference_mfcc(waveform)
    peak = int(log_mel.mean(axis=0).argmax())
    assert edges[peak] < 1000.0 < edges[peak + 2]  # the peak filter's support holds 1 kHz


def test_normalised_features_are_standardised_per_clip(waveform):
    raw = ScaleFeatureExtractor(normalize=False)(waveform, return_tensors="np")["audio_features"][0]
    normalised = ScaleFeatureExtractor()(waveform, return_tensors="np")["audio_features"][0]
    assert abs(normalised.mean()) < 1e-4 and abs(normalised.std() - 1.0) < 1e-3
    np.testing.assert_allclose(normalised, (raw - raw.mean()) / raw.std(), rtol=1e-3, atol=1e-3)
    assert np.abs(raw).max() > 50  # what the normalisation is for


def test_normalised_features_keep_the_pitch_of_a_steady_tone():
    """Per-coefficient CMVN would make a steady low and a steady high tone indistinguishable."""
    extractor = ScaleFeatureExtractor()
    low, high = extractor([tone(2.0, RATE, 220.0), tone(2.0, RATE, 880.0)], return_tensors="np")[
        "audio_features"
    ]
    low_centre, high_centre = low.mean(axis=0), high.mean(axis=0)
    assert np.linalg.norm(low_centre - high_centre) > np.linalg.norm(low.std(axis=0)) + np.linalg.norm(
        high.std(axis=0)
    )
    frames_closer_to_own_tone = np.concatenate(
        [
            np.linalg.norm(low - low_centre, axis=1) < np.linalg.norm(low - high_centre, axis=1),
            np.linalg.norm(high - high_centre, axis=1) < np.linalg.norm(high - low_centre, axis=1),
        ]
    )
    assert frames_closer_to_own_tone.mean() > 0.9


def test_first_twelve_seconds_give_750_frames_and_padding_mask():
    extractor = ScaleFeatureExtractor()
    long_clip, short_clip = tone(15.0, RATE), tone(1.0, RATE)
    out = extractor([long_clip, short_clip], return_tensors="pt")
    assert out["audio_features"].shape == (2, 750, 80) and extractor.max_frames == 750
    assert out["audio_mask"].sum(1).tolist() == [750, 1 + RATE // 256]
    assert out["audio_features"][1, 1 + RATE // 256 :].abs().sum() == 0
    padded = extractor([short_clip], padding="max_length", return_tensors="np")
    assert padded["audio_features"].shape == (1, 750, 80)


def test_very_short_clip_still_gives_a_frame():
    out = ScaleFeatureExtractor()([np.ones(10, np.float32)], return_tensors="np")
    assert out["audio_mask"].sum() >= 1 and np.isfinite(out["audio_features"]).all()


def test_invalid_settings_and_rate():
    with pytest.raises(ValueError, match="feature_type"):
        ScaleFeatureExtractor(feature_type="mel")
    with pytest.raises(ValueError, match="stft_backend"):
        ScaleFeatureExtractor(stft_backend="cuda")
    with pytest.raises(ValueError, match="log_mel"):
        ScaleFeatureExtractor(feature_type="log_mel", feature_size=40)
    with pytest.raises(ValueError, match="Hz"):
        ScaleFeatureExtractor()(tone(1.0, 8000), sampling_rate=8000)


def test_save_and_reload(tmp_path, waveform):
    extractor = ScaleFeatureExtractor(feature_size=20, hop_length=160, max_duration=5.0)
    extractor.save_pretrained(tmp_path)
    reloaded = ScaleFeatureExtractor.from_pretrained(tmp_path)
    assert (reloaded.feature_size, reloaded.hop_length, reloaded.max_frames) == (20, 160, 500)
    np.testing.assert_array_equal(
        reloaded(waveform, return_tensors="np")["audio_features"],
        extractor(waveform, return_tensors="np")["audio_features"],
    )
