"""Turning what users and `datasets` hand over (paths, bytes, arrays, torchcodec decoders) into media data.

Decoding is the one place where real-world files fail, so every loader here raises `MediaDecodingError` with a
description of the source; the processor adds the sample index and modality. Audio and video go through
torchcodec (FFmpeg), images through PIL: torchvision and torchaudio are not required.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import PIL.Image
import torch


class MediaDecodingError(ValueError):
    """A media item could not be read or has an unsupported type."""


def describe_source(source: Any) -> str:
    """A short human-readable name of a media item for error messages: the file path when there is one."""
    if isinstance(source, (str, os.PathLike)):
        return f"file {os.fspath(source)!r}"
    if isinstance(source, Mapping):
        if source.get("path"):
            return f"file {source['path']!r}"
        if source.get("bytes") is not None:
            return f"{len(source['bytes'])} bytes"
        return f"dict with keys {sorted(source)}"
    if isinstance(source, (bytes, bytearray)):
        return f"{len(source)} bytes"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"{type(source).__name__} of shape {tuple(source.shape)}"
    encoded = getattr(source, "_hf_encoded", None)  # set by `datasets` on the decoders its features yield
    if isinstance(encoded, Mapping) and encoded.get("path"):
        return f"{type(source).__name__} of file {encoded['path']!r}"
    return f"object of type {type(source).__name__}"


def _first_line(error: Exception) -> str:
    """FFmpeg / torchcodec errors carry a bug-report footer; the first line says what went wrong."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text.splitlines()[0])  # drop "Class, /src/file.cpp:52, "


def _file_or_bytes(source: Any) -> str | bytes | None:
    """The path or encoded bytes of `source` (str, PathLike, bytes, `{"path", "bytes"}` dict), else None."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise MediaDecodingError(f"no such file: {path!r}")
        return path
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, Mapping) and ("bytes" in source or "path" in source) and "array" not in source:
        if source.get("bytes") is not None:
            return bytes(source["bytes"])
        if source.get("path"):
            return _file_or_bytes(source["path"])
    return None


# ----------------------------------------------------------------------------------------------------- images
def load_image(source: Any) -> PIL.Image.Image | np.ndarray:
    """An RGB PIL image from a path / bytes / `{"path","bytes"}` dict / PIL image, or a 3-channel array."""
    if isinstance(source, PIL.Image.Image):
        return source.convert("RGB") if source.mode != "RGB" else source
    if isinstance(source, (np.ndarray, torch.Tensor)):
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        if array.ndim == 2:  # greyscale
            return np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3:
            raise MediaDecodingError(
                f"an image array needs 2 or 3 dimensions, got shape {tuple(array.shape)}"
            )
        if array.shape[-1] in (1, 4) and array.shape[0] not in (1, 3):  # channels last: grey or RGBA
            return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
        if array.shape[0] in (1, 4) and array.shape[-1] not in (1, 3):  # channels first
            return np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
        return array
    encoded = _file_or_bytes(source)
    if encoded is None:
        raise MediaDecodingError(
            f"unsupported image type {type(source).__name__}; expected a PIL image, an array, a path or bytes"
        )
    try:
        image = PIL.Image.open(io.BytesIO(encoded) if isinstance(encoded, bytes) else encoded)
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise MediaDecodingError(f"cannot decode image: {_first_line(error)}") from error


# ------------------------------------------------------------------------------------------------------ video
def _is_video_decoder(source: Any) -> bool:
    return hasattr(source, "get_frames_played_at") and hasattr(source, "metadata")


def _sample_decoder_frames(decoder: Any, fps: float, max_frames: int) -> np.ndarray:
    """Frames at `fps` from the stream's start, at most `max_frames`, as uint8 (T, H, W, C)."""
    metadata = decoder.metadata
    begin = float(metadata.begin_stream_seconds or 0.0)
    end = metadata.end_stream_seconds
    if end is None and metadata.duration_seconds is not None:
        end = begin + float(metadata.duration_seconds)
    if end is None:
        raise MediaDecodingError("the video stream has no known duration")
    available = max(1, math.ceil((float(end) - begin) * fps - 1e-6))
    timestamps = begin + np.arange(min(available, max_frames)) / fps
    timestamps = np.minimum(timestamps, np.nextafter(float(end), begin)).tolist()
    frames = decoder.get_frames_played_at(seconds=timestamps).data  # (T, C, H, W) or (T, H, W, C)
    if frames.shape[-1] not in (1, 3, 4):
        frames = frames.permute(0, 2, 3, 1)
    return frames.numpy()


def _frames_to_thwc(frames: Any) -> np.ndarray:
    """Decoded frames (array / tensor in T,H,W,C or T,C,H,W, or a list of images) as a (T, H, W, C) array."""
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if len(frames) == 0:
            raise MediaDecodingError("an empty list of frames")
        frames = np.stack([np.asarray(load_image(frame)) for frame in frames])
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise MediaDecodingError(
            f"decoded video frames must have shape (T, H, W, C) or (T, C, H, W), got {tuple(frames.shape)}"
        )
    if frames.shape[-1] not in (1, 3, 4) and frames.shape[1] in (1, 3, 4):
        frames = np.moveaxis(frames, 1, -1)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def load_video_frames(source: Any, fps: float, max_frames: int) -> np.ndarray:
    """
    Frames sampled at `fps` frames per second from the start, at most `max_frames`, as (T, H, W, C).

    Files, bytes and torchcodec `VideoDecoder` objects (what `datasets`' `Video` feature yields) are sampled
    at `fps`; already decoded frames (arrays / tensors / lists of images) are taken as sampled and only cut
    to `max_frames`.
    """
    if _is_video_decoder(source):
        decoder = source
    elif isinstance(source, (np.ndarray, torch.Tensor)) or (
        isinstance(source, Sequence) and not isinstance(source, (str, bytes, bytearray))
    ):
        return _frames_to_thwc(source)[:max_frames]
    else:
        encoded = _file_or_bytes(source)
        if encoded is None:
            raise MediaDecodingError(
                f"unsupported video type {type(source).__name__}; expected a path, bytes, a torchcodec "
                "VideoDecoder or decoded frames"
            )
        from torchcodec.decoders import VideoDecoder

        try:
            decoder = VideoDecoder(encoded, dimension_order="NHWC", seek_mode="approximate")
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot open video: {_first_line(error)}") from error
    try:
        return _sample_decoder_frames(decoder, fps, max_frames)
    except (RuntimeError, IndexError) as error:
        raise MediaDecodingError(f"cannot decode video frames: {_first_line(error)}") from error


# ------------------------------------------------------------------------------------------------------ audio
def _is_audio_decoder(source: Any) -> bool:
    return hasattr(source, "get_samples_played_in_range") and hasattr(source, "metadata")


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), the way torchaudio-free feature extractors do it."""
    if orig_rate == target_rate:
        return waveform
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_rate), int(orig_rate))
    return resample_poly(waveform, ratio.numerator, ratio.denominator).astype(np.float32)


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """(N,) or channels-first (C, N) / channels-last (N, C) audio -> (N,) float32."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        channel_axis = 0 if samples.shape[0] <= samples.shape[1] else 1
        samples = samples.mean(axis=channel_axis)
    if samples.ndim != 1:
        raise MediaDecodingError(f"audio must be 1-D or (channels, samples), got shape {samples.shape}")
    return samples


def load_audio(source: Any, sampling_rate: int, max_seconds: float | None) -> np.ndarray:
    """
    The first `max_seconds` of mono audio at `sampling_rate` Hz as a float32 array.

    Accepts paths / bytes (decoded and resampled by torchcodec), torchcodec `AudioDecoder` objects (what
    `datasets`' `Audio` feature yields), `(array, sampling_rate)` tuples, `{"array", "sampling_rate"}` dicts,
    and bare arrays or tensors, which are taken to be at `sampling_rate` already.
    """
    stop = None if max_seconds is None else float(max_seconds)
    if _is_audio_decoder(source):
        try:
            samples = source.get_samples_played_in_range(start_seconds=0.0, stop_seconds=stop)
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot decode audio: {_first_line(error)}") from error
        waveform = resample(_to_mono(samples.data.numpy()), samples.sample_rate, sampling_rate)
    elif isinstance(source, Mapping) and "array" in source:
        if "sampling_rate" not in source:
            raise MediaDecodingError('an audio dict needs both "array" and "sampling_rate"')
        waveform = resample(_to_mono(source["array"]), int(source["sampling_rate"]), sampling_rate)
    elif isinstance(source, tuple) and len(source) == 2 and np.isscalar(source[1]):
        waveform = resample(_to_mono(source[0]), int(source[1]), sampling_rate)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        waveform = _to_mono(source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source)
    else:
        encoded = _file_or_bytes(source)
        if encoded is None:
            raise MediaDecodingError(
                f"unsupported audio type {type(source).__name__}; expected a path, bytes, a torchcodec "
                "AudioDecoder, (array, sampling_rate) or {'array', 'sampling_rate'}"
            )
        from torchcodec.decoders import AudioDecoder

        try:
            decoder = AudioDecoder(encoded, sample_rate=sampling_rate, num_channels=1)
            samples = decoder.get_samples_played_in_range(start_seconds=0.0, stop_seconds=stop)
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot decode audio: {_first_line(error)}") from error
        waveform = _to_mono(samples.data.numpy())
    if stop is not None:
        waveform = waveform[: int(round(stop * sampling_rate))]
    if waveform.size == 0:
        raise MediaDecodingError("the audio has no samples")
    return np.ascontiguousarray(waveform, dtype=np.float32)
