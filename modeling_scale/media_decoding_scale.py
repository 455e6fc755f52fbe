"""Turning what users and `datasets` hand over (paths, bytes, arrays, torchcodec decoders) into media data.

Decoding is the one place where real-world files fail, so every loader here raises `MediaDecodingError` with a
description of the source; the processor adds the sample index and modality. Video files go through PyAV
(FFmpeg), audio and `datasets`' decoder objects through torchcodec (FFmpeg), images through PIL: torchvision
and torchaudio are not required.
"""

from __future__ import annotations

import bisect
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


def first_line(error: Exception) -> str:
    """FFmpeg / torchcodec errors carry a bug-report footer; the first line says what went wrong."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = re.sub(r"^\w+, \S+:\d+, ", "", text.splitlines()[0])  # drop "Class, /src/file.cpp:52, "
    return re.sub(r"^\[Errno -?\d+\] ", "", line)  # and PyAV's error number


def _file_or_bytes(source: Any) -> str | bytes | None:
    """The path or encoded bytes of `source` (str, PathLike, bytes, `{"path", "bytes"}` dict), else None."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise MediaDecodingError(f"no such file: {path!r}")
        if os.path.getsize(path) == 0:
            raise MediaDecodingError("the file is empty (0 bytes)")
        return path
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise MediaDecodingError("the file is empty (0 bytes)")
        return bytes(source)
    if isinstance(source, Mapping) and ("bytes" in source or "path" in source) and "array" not in source:
        if source.get("bytes") is not None:
            return bytes(source["bytes"])
        if source.get("path"):
            return _file_or_bytes(source["path"])
    return None


# ----------------------------------------------------------------------------------------------------- images
def _as_numpy(source: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(source, torch.Tensor):
        source = source.detach().cpu()
        return (source.float() if source.dtype in (torch.bfloat16, torch.float16) else source).numpy()
    return source


def require_finite(values: np.ndarray, what: str) -> None:
    """NaN or inf in decoded media is damaged data: it would turn every loss of the batch into NaN."""
    if not np.isfinite(values).all():
        raise MediaDecodingError(f"the {what} are not all finite (NaN or inf)")


def image_values_to_uint8(array: np.ndarray) -> np.ndarray:
    """
    Pixel values as uint8, read with their real range: uint8 as is, 16-bit integers (and wider integers
    beyond 255, as PIL's "I" images hold 16-bit PNGs) scaled by 255/65535, booleans as 0/255, floats in
    [0, 1] scaled by 255 and floats in [0, 255] rounded. NaN / inf, negative values and values beyond the
    range are refused: they are damaged data, not an image.
    """
    if array.size == 0:
        raise MediaDecodingError(f"an empty image array of shape {tuple(array.shape)}")
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "u" and size == 1:
        return array
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise MediaDecodingError(
                f"integer pixel values must lie in [0, 255] or [0, 65535] (16-bit), got [{low}, {high}]"
            )
        if (kind == "u" and size == 2) or high > 255:
            return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return array.astype(np.uint8)
    if kind != "f":
        raise MediaDecodingError(f"unsupported pixel type {array.dtype}")
    require_finite(array, "pixel values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise MediaDecodingError(
            f"float pixel values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]"
        )
    return np.rint(array * (255.0 if high <= 1.0 else 1.0)).astype(np.uint8)


def _pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB, keeping the range of 16-bit / 32-bit / float greyscale images (PIL's convert clips at 255)."""
    if image.width == 0 or image.height == 0:
        raise MediaDecodingError(f"an empty image of {image.width}x{image.height} pixels")
    if image.mode.startswith("I") or image.mode == "F":
        return PIL.Image.fromarray(image_values_to_uint8(np.asarray(image))).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA")
"""PIL modes `Image.reduce` averages correctly (palette indices or 16-bit modes must not be averaged)."""


def _decode_reduced(image: PIL.Image.Image, min_size: tuple[int, int]) -> PIL.Image.Image:
    """
    Decode `image` at the smallest size that is still >= `min_size` (height, width) on both sides, so that
    the final resize only shrinks by less than 2x: JPEG through DCT scaling while decoding (`Image.draft`,
    1/2, 1/4 or 1/8: 2-3x less work for a 1000 px photo resized to 224), other formats by box-averaging
    after decoding (`Image.reduce`, which also makes the final resize cheaper).
    """
    height, width = min_size
    if image.format == "JPEG":
        image.draft("RGB", (width, height))
    image.load()
    factor_x, factor_y = image.width // width, image.height // height
    if image.mode in REDUCIBLE_MODES and max(factor_x, factor_y) >= 2:
        image = image.reduce((max(1, factor_x), max(1, factor_y)))
    return image


def load_image(source: Any, min_size: tuple[int, int] | None = None) -> PIL.Image.Image | np.ndarray:
    """An RGB PIL image from a path / bytes / `{"path","bytes"}` dict / PIL image, or a 3-channel uint8 array
    (channels first or last, as given).

    `min_size` (height, width): the size the image will be resized to; encoded images are then decoded at
    the smallest size >= it (see `_decode_reduced`) instead of in full. After the resize to `min_size`, the
    pixels differ from a full decode by < 1 level of 255 on average on photographs (99 % within 5 levels,
    sharp edges more; pure pixel noise, all above the new Nyquist limit: ~6 on average), see
    tests/test_media_decoding.py."""
    if isinstance(source, PIL.Image.Image):
        source.load()  # a lazily opened image is read now, while its file is still open
        return _pil_to_rgb(source)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        array = _as_numpy(source)
        if array.ndim == 2:  # greyscale
            array = array[..., None]
        if array.ndim != 3:
            raise MediaDecodingError(
                f"an image array needs 2 or 3 dimensions, got shape {tuple(array.shape)}"
            )
        array = image_values_to_uint8(array)
        if array.shape[-1] in (1, 4) and array.shape[0] not in (1, 3):  # channels last: grey or RGBA
            return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
        if array.shape[0] in (1, 4) and array.shape[-1] not in (1, 3):  # channels first
            return np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
        if 3 not in (array.shape[0], array.shape[-1]):
            raise MediaDecodingError(
                f"an image array needs 1, 3 or 4 channels first or last, got shape {tuple(array.shape)}"
            )
        return array
    encoded = _file_or_bytes(source)
    if encoded is None:
        raise MediaDecodingError(
            f"unsupported image type {type(source).__name__}; expected a PIL image, an array, a path or bytes"
        )
    try:
        image = PIL.Image.open(io.BytesIO(encoded) if isinstance(encoded, bytes) else encoded)
        if min_size is None:
            image.load()
        else:
            image = _decode_reduced(image, min_size)
    except PIL.UnidentifiedImageError as error:
        raise MediaDecodingError("cannot decode image: not a known image format") from error
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise MediaDecodingError(f"cannot decode image: {first_line(error)}") from error
    return _pil_to_rgb(image)


# ------------------------------------------------------------------------------------------------------ video
def _is_video_decoder(source: Any) -> bool:
    return hasattr(source, "get_frames_played_at") and hasattr(source, "metadata")


def _sampled_times(begin: float, end: float, fps: float, max_frames: int) -> list[float]:
    """The seconds sampled at `fps` from `begin`, each before `end` (at least one, at most `max_frames`)."""
    available = max(1, math.ceil((end - begin) * fps - 1e-6))
    times = begin + np.arange(min(available, max_frames)) / fps
    return np.minimum(times, np.nextafter(end, begin)).tolist()


def _sample_decoder_frames(decoder: Any, fps: float, max_frames: int) -> np.ndarray:
    """Frames at `fps` from the stream's start, at most `max_frames`, as uint8 (T, H, W, C)."""
    metadata = decoder.metadata
    begin = float(metadata.begin_stream_seconds or 0.0)
    end = metadata.end_stream_seconds
    if end is None and metadata.duration_seconds is not None:
        end = begin + float(metadata.duration_seconds)
    if end is None:
        raise MediaDecodingError("the video stream has no known duration")
    timestamps = _sampled_times(begin, float(end), fps, max_frames)
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
    frames = _as_numpy(frames)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise MediaDecodingError(
            f"decoded video frames must have shape (T, H, W, C) or (T, C, H, W), got {tuple(frames.shape)}"
        )
    if frames.shape[-1] not in (1, 3, 4):
        if frames.shape[1] not in (1, 3, 4):
            raise MediaDecodingError(f"video frames need 1, 3 or 4 channels, got shape {tuple(frames.shape)}")
        frames = np.moveaxis(frames, 1, -1)
    frames = image_values_to_uint8(frames)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    return frames[..., :3]


def _video_span_seconds(stream: Any, container: Any) -> tuple[float, float] | None:
    """(start, end) of the stream from its header: the first frame's time, and the start plus the stream's
    duration, else frames / average rate, else the container's duration; None when the header has neither."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if stream.duration is not None:
        return start, start + float(stream.duration * stream.time_base)
    if stream.frames and stream.average_rate:
        return start, start + float(stream.frames / stream.average_rate)
    if container.duration is not None:
        return start, start + container.duration / 1_000_000  # in AV_TIME_BASE units
    return None


def _pts_seconds(pts: int, time_base: Fraction) -> float:
    """A timestamp in seconds, rounded as torchcodec rounds it, so that both pick the same frames."""
    return pts * time_base.numerator / time_base.denominator


def _shown_at_a_target(pts: int, demuxed: list[int], targets: list[float], time_base: Fraction) -> bool:
    """
    Whether the frame of the packet at `pts` can be the one played at a time in `targets` (sorted seconds).

    A frame is shown from its time until the next frame's. The times of the packets demuxed before it
    (`demuxed`, sorted) bound that end from above, since a later packet can only bring it forward, so a frame
    this calls unshown is never the frame played at a target, whatever comes after it.
    """
    later = bisect.bisect_right(demuxed, pts)
    shown_until = _pts_seconds(demuxed[later], time_base) if later < len(demuxed) else math.inf
    first_target = bisect.bisect_left(targets, _pts_seconds(pts, time_base))
    return first_target < len(targets) and targets[first_target] < shown_until


def _sample_encoded_video(
    encoded: str | bytes, fps: float, max_frames: int, size: tuple[int, int] | None
) -> np.ndarray | None:
    """
    The frames played at `fps` from the start, decoding no frame that nobody looks at: H.264 / HEVC / MPEG-4
    non-reference frames (most B-frames) are skipped (FFmpeg's `skip_frame`) unless a sampled time falls in
    their display interval; nothing refers to them, so the frames are those of a full decode. PyAV gives
    this per-packet control; torchcodec does not. Frames are turned upright by the stream's rotation, as
    torchcodec does. Returns None where this cannot be exact (PyAV not installed, packets or frames without
    timestamps): the caller then samples with torchcodec.
    """
    try:
        import av
    except ImportError:
        return None
    try:
        container = av.open(io.BytesIO(encoded) if isinstance(encoded, bytes) else encoded)
    except av.FFmpegError as error:
        raise MediaDecodingError(f"cannot open video: {first_line(error)}") from error
    try:
        with container:
            if not container.streams.video:
                raise MediaDecodingError("the file has no video stream")
            played = _frames_played_at(container, container.streams.video[0], fps, max_frames)
            if played is None:
                return None
            # Bicubic resize in YUV, then RGB: half the difference to the image path's resize of a full-size
            # RGB frame that one combined pass has; each reformatter keeps its FFmpeg scaler for all frames.
            resizer, to_rgb = av.video.reformatter.VideoReformatter(), av.video.reformatter.VideoReformatter()
            turns = round((played[0].rotation or 0) / 90) % 4  # counter-clockwise quarter turns to upright
            height, width = (None, None) if size is None else size[:: -1 if turns % 2 else 1]
            converted: dict[int, np.ndarray] = {}
            for frame in played:
                if id(frame) not in converted:
                    resized = (
                        frame
                        if size is None
                        else resizer.reformat(frame, width=width, height=height, interpolation="BICUBIC")
                    )
                    rgb = to_rgb.reformat(resized, format="rgb24").to_ndarray()
                    converted[id(frame)] = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            return np.stack([converted[id(frame)] for frame in played])
    except av.FFmpegError as error:
        raise MediaDecodingError(f"cannot decode video frames: {first_line(error)}") from error


def _frames_played_at(container: Any, stream: Any, fps: float, max_frames: int) -> list[Any] | None:
    """The PyAV frames played at `fps` from the stream's start (at most `max_frames`; one object per distinct
    frame), skipping the non-reference frames no sampled time shows; None as in `_sample_encoded_video`."""
    context = stream.codec_context
    context.thread_count = 1  # one core per worker, as torchcodec decodes by default
    span, time_base = _video_span_seconds(stream, container), stream.time_base
    if span is None or time_base is None:
        return None
    targets = _sampled_times(*span, fps, max_frames)
    played: list[Any] = []  # the decoded frame played at each target, in order
    previous = None
    demuxed: list[int] = []  # the times of the packets so far, sorted
    for packet in container.demux(stream):
        context.skip_frame = "DEFAULT"
        if packet.pts is not None:
            if not _shown_at_a_target(packet.pts, demuxed, targets[len(played) :], time_base):
                context.skip_frame = "NONREF"  # FFmpeg still decodes it if other frames refer to it
            bisect.insort(demuxed, packet.pts)
        for frame in context.decode(packet):
            if frame.pts is None:
                return None
            while len(played) < len(targets) and _pts_seconds(frame.pts, time_base) > targets[len(played)]:
                played.append(frame if previous is None else previous)
            if len(played) == len(targets):
                return played
            previous = frame
    if previous is None:
        raise MediaDecodingError("the video stream has no decodable frame")
    return played + [previous] * (len(targets) - len(played))


def load_video_frames(
    source: Any, fps: float, max_frames: int, size: tuple[int, int] | None = None
) -> np.ndarray:
    """
    Frames sampled at `fps` frames per second from the start, at most `max_frames`, as (T, H, W, C).

    Files, bytes and torchcodec `VideoDecoder` objects (what `datasets`' `Video` feature yields) are sampled
    at `fps`; already decoded frames (arrays / tensors / lists of images) are taken as sampled and only cut
    to `max_frames`.

    The sampled frames are exact, those a frame-accurate decoder plays at each sampled time, upright. Files
    and bytes are decoded by PyAV (`_sample_encoded_video`), which skips the non-reference frames no sampled
    time shows (0.73x the time of torchcodec on an x264 file with B-frames); torchcodec decoders, and files
    where PyAV is missing, by torchcodec (files in approximate seek mode: one seek, no scan of the file).
    Either way the cost is bound by decoding every reference frame up to the last sampled second (H.264 has
    no reduced-resolution decoding). `size` (height, width): files and bytes are then resized by FFmpeg
    straight to that size (PyAV: bicubic in YUV; torchcodec: bilinear with antialiasing) instead of
    converted to RGB at full size and resized again; pixels differ from the full-size path's bicubic resize
    by < 1.5 levels of 255 on average on natural content (0.54 PyAV, 0.32 torchcodec on the benchmark's
    video; on pixel noise, the worst case, 11 and 4: resizing RGB instead of YUV would cost 3x the time).
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
        frames = _sample_encoded_video(encoded, fps, max_frames, size)
        if frames is not None:
            return frames
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        try:
            decoder = VideoDecoder(
                encoded,
                dimension_order="NHWC",
                seek_mode="approximate",
                transforms=None if size is None else [Resize(size)],
            )
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot open video: {first_line(error)}") from error
    try:
        return _sample_decoder_frames(decoder, fps, max_frames)
    except (RuntimeError, IndexError) as error:
        raise MediaDecodingError(f"cannot decode video frames: {first_line(error)}") from error


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
    """(N,) or channels-first (C, N) / channels-last (N, C) audio -> (N,) float32; integer PCM is scaled to
    [-1, 1] by its type's range (int16 samples are not amplitudes in the thousands)."""
    samples = np.asarray(samples)
    if samples.dtype.kind in "iu":
        info = np.iinfo(samples.dtype)
        half = (info.max + 1) / 2 if info.min == 0 else 0  # unsigned PCM is centred on half its range
        samples = (samples.astype(np.float64) - half) / (info.max + 1 - half)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        channel_axis = 0 if samples.shape[0] <= samples.shape[1] else 1
        samples = samples.mean(axis=channel_axis)
    if samples.ndim != 1:
        raise MediaDecodingError(f"audio must be 1-D or (channels, samples), got shape {samples.shape}")
    return samples


def _first_seconds(decoder: Any, seconds: float | None) -> Any:
    """The samples of a torchcodec `AudioDecoder` over the first `seconds` from its first sample (all when
    None). Streams need not start at 0: an MP3 from LAME starts 25 ms in (its encoder delay), so the range
    [0, 12) would hold 11.975 s."""
    begin = float(decoder.metadata.begin_stream_seconds or 0.0)
    stop = None if seconds is None else begin + seconds
    return decoder.get_samples_played_in_range(start_seconds=begin, stop_seconds=stop)


def load_audio(source: Any, sampling_rate: int, max_seconds: float | None) -> np.ndarray:
    """
    The first `max_seconds` of mono audio (from the stream's first sample) at `sampling_rate` Hz as float32.

    Accepts paths / bytes (decoded and resampled by torchcodec), torchcodec `AudioDecoder` objects (what
    `datasets`' `Audio` feature yields), `(array, sampling_rate)` tuples, `{"array", "sampling_rate"}` dicts,
    and bare arrays or tensors, which are taken to be at `sampling_rate` already.
    """
    stop = None if max_seconds is None else float(max_seconds)
    if _is_audio_decoder(source):
        try:
            samples = _first_seconds(source, stop)
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot decode audio: {first_line(error)}") from error
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
            samples = _first_seconds(decoder, stop)
        except (RuntimeError, ValueError) as error:
            raise MediaDecodingError(f"cannot decode audio: {first_line(error)}") from error
        waveform = _to_mono(samples.data.numpy())
    if stop is not None:
        waveform = waveform[: int(round(stop * sampling_rate))]
    if waveform.size == 0:
        raise MediaDecodingError("the audio has no samples")
    require_finite(waveform, "audio samples")
    return np.ascontiguousarray(waveform, dtype=np.float32)
