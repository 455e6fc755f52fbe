"""Keyword arguments of `ScaleProcessor.__call__`, as transformers' `ProcessingKwargs` typed dicts.

Kept apart from processing_scale.py: `_merge_kwargs` reads these annotations at run time, so this module must
not use `from __future__ import annotations` (which would turn them into strings).
"""

from typing import Literal, TypedDict

from transformers.processing_utils import ImagesKwargs, ProcessingKwargs
from transformers.utils import TensorType

Padding = Literal["longest", "max_length"] | bool
Tensors = str | TensorType | None


class ScaleTextKwargs(TypedDict, total=False):
    """Captions and tables. `padding`: "longest" (or True) in the batch, or "max_length" (the processor's
    lengths); `truncation` (default True) cuts captions to `max_length` (default: the processor's
    `max_text_length`); without it a longer caption is an error."""

    padding: Padding
    truncation: bool
    max_length: int | None
    return_tensors: Tensors


class ScalePaddedKwargs(TypedDict, total=False):
    """Videos (frames) and audio (feature frames): `padding` as for text."""

    padding: Padding
    return_tensors: Tensors


class ScaleProcessorKwargs(ProcessingKwargs, total=False):
    """The keyword arguments of `ScaleProcessor.__call__`, merged by transformers' `_merge_kwargs`: flat
    (`padding=`, `truncation=`, `max_length=`, `return_tensors=`, any image-processor setting) or per modality
    (`text_kwargs={...}`, `images_kwargs={...}`, `videos_kwargs={...}`, `audio_kwargs={...}`)."""

    text_kwargs: ScaleTextKwargs
    images_kwargs: ImagesKwargs
    videos_kwargs: ScalePaddedKwargs
    audio_kwargs: ScalePaddedKwargs
    on_error: str | None
    return_modalities: list[str] | tuple[str, ...]


__all__ = ["Padding", "ScaleProcessorKwargs"]
