"""Video processor of SCALE: frames sampled at a fixed rate, processed like images, padded, with a mask."""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature

from .image_processing_scale import ScaleImageProcessor
from .media_decoding_scale import load_video_frames


class ScaleVideoProcessor:
    r"""
    Turns videos into `video_pixel_values` (B, T, 3, H, W) and `video_mask` (B, T).

    The paper's released features take one S3D clip per second for the first 12 s; the raw-pixel equivalent
    is one frame per second (`fps`), at most `max_frames`. Frames go through the image processor, so they have
    the image encoder's size and normalisation. transformers' `BaseVideoProcessor` needs torchvision, which is
    not available here; this class therefore composes the PIL image processor instead of subclassing it, and
    its two settings are saved with [`ScaleProcessor`].

    Args:
        image_processor: resizes and normalises each frame.
        fps: frames sampled per second of video.
        max_frames: frames kept from the start (T).
    """

    def __init__(self, image_processor: ScaleImageProcessor, fps: float = 1.0, max_frames: int = 12):
        if fps <= 0 or max_frames < 1:
            raise ValueError(f"fps must be > 0 and max_frames >= 1, got fps={fps}, max_frames={max_frames}")
        self.image_processor = image_processor
        self.fps = fps
        self.max_frames = max_frames

    def load(self, video: Any) -> np.ndarray:
        """Decode / sample one video (path, bytes, VideoDecoder, decoded frames) to (T, H, W, C); files and
        bytes are decoded straight at the image processor's size."""
        size = self.image_processor.size
        return load_video_frames(
            video, fps=self.fps, max_frames=self.max_frames, size=(size.height, size.width)
        )

    def __call__(
        self, videos: list[np.ndarray], padding: str = "longest", return_tensors: str | None = None
    ) -> BatchFeature:
        """Sampled frames (T_i, H, W, C) per video -> padded arrays (to `max_frames` with "max_length")."""
        lengths = [len(frames) for frames in videos]
        all_frames = [frame for frames in videos for frame in frames]
        pixels = self.image_processor(all_frames, return_tensors="np")["pixel_values"]
        length = self.max_frames if padding == "max_length" else max(lengths)
        if all(count == length for count in lengths):  # nothing to pad: a view, no copy
            batch = pixels.reshape(len(videos), length, *pixels.shape[1:])
            mask = np.ones((len(videos), length), dtype=np.int64)
        else:
            batch = np.zeros((len(videos), length, *pixels.shape[1:]), dtype=pixels.dtype)
            mask = np.zeros((len(videos), length), dtype=np.int64)
            start = 0
            for row, count in enumerate(lengths):
                batch[row, :count] = pixels[start : start + count]
                mask[row, :count] = 1
                start += count
        return BatchFeature({"video_pixel_values": batch, "video_mask": mask}, tensor_type=return_tensors)


__all__ = ["ScaleVideoProcessor"]
