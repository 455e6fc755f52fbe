"""Audio feature extractor of SCALE: MFCC (default) or log-mel frames of the start of a product's sound track.

The mel filter bank comes from `transformers.audio_utils`; the STFT is `torch.stft` by default (like Whisper's
feature extractor; about 20x faster on CPU than the loop in `transformers.audio_utils.spectrogram`, which is
kept as the `"numpy"` backend), then a type-II DCT from scipy: neither torchaudio nor librosa needed. The
MFCC follows torchaudio's `MFCC` definition: HTK mel scale without filter normalisation, power spectrogram, dB
with an 80 dB floor below the peak, orthonormal DCT-II.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

from .media_decoding_scale import load_audio

FEATURE_TYPES = ("mfcc", "log_mel")
STFT_BACKENDS = ("torch", "numpy")


class ScaleFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Computes `audio_features` (B, L, F) and `audio_mask` (B, L) from mono waveforms at `sampling_rate`.

    Defaults follow the paper's released preprocessing: the first 12 s at 16 kHz, n_fft 1024, hop 256, 80 mel
    bins, which gives at most `max_frames` = 12 * 16000 / 256 = 750 frames.

    Args:
        feature_size: coefficients per frame (F); for MFCC at most `num_mel_bins`, for log-mel equal to it.
        sampling_rate: rate the waveforms must have (the processor resamples to it).
        num_mel_bins: mel filters.
        n_fft, hop_length: STFT window and hop in samples (Hann window).
        max_duration: seconds kept from the start of each clip.
        feature_type: `"mfcc"` or `"log_mel"` (natural log of the mel power, floored at 1e-10).
        top_db: dynamic range of the dB mel spectrogram the MFCC is taken from.
        normalize: standardise each clip with one mean and one standard deviation over all its frames and
            coefficients. Raw dB-scale MFCCs reach hundreds, so MAM's regression loss would dwarf every
            other pretraining term; standardised features keep it O(1). The statistics are per clip but
            shared by the coefficients, so the spectral shape survives: per-coefficient CMVN (as speech front
            ends do) would erase everything stationary in the clip, such as the pitch of a steady tone or hum.
        stft_backend: `"torch"` (`torch.stft`, default) or `"numpy"` (`transformers.audio_utils.spectrogram`);
            both give the same features up to float rounding.
        padding_value: value of padded frames.
    """

    model_input_names = ["audio_features", "audio_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        num_mel_bins: int = 80,
        n_fft: int = 1024,
        hop_length: int = 256,
        max_duration: float = 12.0,
        feature_type: str = "mfcc",
        top_db: float = 80.0,
        normalize: bool = True,
        stft_backend: str = "torch",
        padding_value: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}")
        if stft_backend not in STFT_BACKENDS:
            raise ValueError(f"stft_backend must be one of {STFT_BACKENDS}, got {stft_backend!r}")
        if feature_type == "log_mel" and feature_size != num_mel_bins:
            raise ValueError(
                f"log_mel features have num_mel_bins ({num_mel_bins}) values, not {feature_size}"
            )
        if feature_size > num_mel_bins:
            raise ValueError(f"feature_size ({feature_size}) cannot exceed num_mel_bins ({num_mel_bins})")
        self.num_mel_bins = num_mel_bins
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.max_duration = max_duration
        self.feature_type = feature_type
        self.top_db = top_db
        self.normalize = normalize
        self.stft_backend = stft_backend
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + n_fft // 2,
            num_mel_filters=num_mel_bins,
            min_frequency=0.0,
            max_frequency=sampling_rate / 2,
            sampling_rate=sampling_rate,
            norm=None,
            mel_scale="htk",
        )
        self.window = window_function(n_fft, "hann")

    def load(self, audio: Any) -> np.ndarray:
        """Decode one clip (path, bytes, AudioDecoder, array, `(array, rate)`) for this extractor: the first
        `max_duration` seconds, mono, at `sampling_rate`."""
        return load_audio(audio, self.sampling_rate, self.max_duration)

    @property
    def max_frames(self) -> int:
        return int(self.max_duration * self.sampling_rate) // self.hop_length

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("mel_filters", None)
        output.pop("window", None)
        return output

    def _numpy_log_mel(self, waveform: np.ndarray) -> np.ndarray:
        return spectrogram(
            waveform,
            self.window,
            frame_length=self.n_fft,
            hop_length=self.hop_length,
            power=2.0,
            mel_filters=self.mel_filters,
            log_mel="dB" if self.feature_type == "mfcc" else "log",
            db_range=self.top_db,
        )  # (num_mel_bins, frames)

    def _power_spectrogram(self, waveform: np.ndarray) -> torch.Tensor:
        """|STFT|^2 (centred, reflect-padded, periodic Hann window), (frequencies, frames): float32 (half the
        time of float64) unless the power could overflow it, |X|^2 <= (n_fft * peak amplitude)^2."""
        loud = self.n_fft * float(np.abs(waveform).max(initial=0.0)) > 1e18
        dtype = torch.float64 if loud else torch.float32
        stft = torch.stft(
            torch.from_numpy(waveform).to(dtype),
            self.n_fft,
            self.hop_length,
            window=torch.hann_window(self.n_fft, dtype=dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return stft.real.square() + stft.imag.square()  # (a reduction over view_as_real is 5x slower)

    def _torch_log_mel(self, waveform: np.ndarray) -> np.ndarray:
        """`_numpy_log_mel` computed with torch."""
        power = self._power_spectrogram(waveform)
        mel = torch.clamp(torch.from_numpy(self.mel_filters).T.to(power.dtype) @ power, min=1e-10)
        if self.feature_type == "log_mel":
            return mel.log().numpy()
        decibels = 10.0 * mel.log10()
        return torch.maximum(decibels, decibels.max() - self.top_db).numpy()

    def extract_features(self, waveform: np.ndarray) -> np.ndarray:
        """(N,) waveform at `sampling_rate` -> (L, F) float32 frames, L <= `max_frames`."""
        waveform = np.asarray(waveform, dtype=np.float32)[: int(self.max_duration * self.sampling_rate)]
        if waveform.size < self.n_fft // 2 + 1:  # reflect padding needs more samples than half a window
            waveform = np.pad(waveform, (0, self.n_fft // 2 + 1 - waveform.size))
        log_mel = (
            self._torch_log_mel(waveform) if self.stft_backend == "torch" else self._numpy_log_mel(waveform)
        )
        if self.feature_type == "mfcc":
            features = scipy.fft.dct(log_mel, type=2, axis=0, norm="ortho")[: self.feature_size]
        else:
            features = log_mel
        features = features.T[: self.max_frames]
        if self.normalize:
            features = (features - features.mean()) / np.sqrt(features.var() + 1e-7)
        return np.ascontiguousarray(features, dtype=np.float32)

    def __call__(
        self,
        raw_speech: np.ndarray | list[np.ndarray],
        sampling_rate: int | None = None,
        padding: str = "longest",
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Features of one waveform or a list of them, padded to the longest one, or to `max_frames` with
        `padding="max_length"`.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"the waveforms are at {sampling_rate} Hz but this feature extractor expects "
                f"{self.sampling_rate} Hz; "
                "resample first (ScaleProcessor does it for you)"
            )
        if isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 1:
            raw_speech = [raw_speech]
        features = [self.extract_features(waveform) for waveform in raw_speech]
        length = self.max_frames if padding == "max_length" else max(len(f) for f in features)
        batch = np.full((len(features), length, self.feature_size), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(features), length), dtype=np.int64)
        for row, frames in enumerate(features):
            batch[row, : len(frames)] = frames
            mask[row, : len(frames)] = 1
        return BatchFeature({"audio_features": batch, "audio_mask": mask}, tensor_type=return_tensors)


ScaleFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["FEATURE_TYPES", "ScaleFeatureExtractor"]
