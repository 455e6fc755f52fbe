"""The checks `ScaleModel` runs on its inputs before anything else, so that a malformed tensor gets a
`ValueError` naming the argument, what was expected and what was given, not an `IndexError` deep inside an
embedding or a device-side assert.

Cost. Ranks, shapes, widths and dtypes are tensor metadata: checking them never synchronises host and device,
and under `torch.compile` they become guards. The range of token ids and labels needs the values, so it is
checked only where that is cheap:

- CPU tensors: exactly, with a readable `ValueError` (a min/max over a few thousand ids, no device involved);
- accelerator tensors: with `torch._assert_async`, which queues the comparison on the device without a sync;
  a bad id then stops the run at the next synchronisation with this module's message as the device-side
  assert (the embedding lookup would have asserted anyway, with no name). Run with `CUDA_LAUNCH_BLOCKING=1`
  to have it raised at the offending call;
- inside `torch.compile` / tracing: not at all (a data-dependent check would break the graph).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .configuration_scale import MODALITIES, ScaleConfig

_INTEGER = "integer"
_FLOAT = "floating-point"


def _input_specs(config: ScaleConfig) -> dict[str, tuple[tuple[str | int, ...], str | None, str | None]]:
    """argument -> (its dimensions: names, or sizes fixed by the config; dtype kind, None for any; the
    argument whose (batch, length) it must share)."""
    size = config.image_size
    return {
        "input_ids": (("batch", "text_length"), _INTEGER, None),
        "attention_mask": (("batch", "text_length"), None, "input_ids"),
        "table_input_ids": (("batch", "table_length"), _INTEGER, None),
        "table_attention_mask": (("batch", "table_length"), None, "table_input_ids"),
        "table_entity_ids": (("batch", "table_length"), _INTEGER, "table_input_ids"),
        "pixel_values": (("batch", config.num_channels, size, size), _FLOAT, None),
        "image_features": (("batch", "regions", config.image_feature_dim), _FLOAT, None),
        "image_boxes": (("batch", "regions", config.image_box_dim), _FLOAT, "image_features"),
        "image_mask": (("batch", "regions"), None, "image_features"),
        "video_pixel_values": (("batch", "frames", config.num_channels, size, size), _FLOAT, None),
        "video_features": (("batch", "frames", config.video_feature_dim), _FLOAT, None),
        "video_mask": (("batch", "frames"), None, None),
        "audio_features": (("batch", "audio_frames", config.audio_feature_dim), _FLOAT, None),
        "audio_mask": (("batch", "audio_frames"), None, "audio_features"),
        "modality_mask": (("batch", len(MODALITIES)), None, None),
    }


def _shape_text(dimensions: tuple[str | int, ...]) -> str:
    return "(" + ", ".join(str(dimension) for dimension in dimensions) + ")"


def _check_values_in_range(name: str, values: torch.Tensor, low: int | None, high: int, what: str) -> None:
    """`low <= values < high` (no lower bound when `low` is None): exactly on the CPU, queued on
    accelerators, skipped while compiling."""
    if values.numel() == 0 or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    allowed = f"outside [{low}, {high})" if low is not None else f"of {high} or more"
    message = f"`{name}` holds {what} {allowed}"
    if values.device.type != "cpu":
        valid = values < high if low is None else (values >= low) & (values < high)
        torch._assert_async(valid.all(), message)
        return
    smallest, largest = int(values.min()), int(values.max())
    if (low is not None and smallest < low) or largest >= high:
        raise ValueError(f"{message}: the given values range over [{smallest}, {largest}]")


def check_model_inputs(config: ScaleConfig, inputs: Mapping[str, Any]) -> None:
    """
    Validate the inputs of `ScaleModel.forward` (None entries are absent inputs).

    Raises:
        TypeError: an input is not a tensor.
        ValueError: wrong rank (e.g. no batch dimension), wrong feature width or image size, wrong dtype
            (float token ids, integer pixels), batch sizes or lengths that disagree, token ids outside the
            vocabulary.
    """
    specs = _input_specs(config)
    batch_sizes: dict[str, int] = {}
    for name, (dimensions, kind, partner) in specs.items():
        value = inputs.get(name)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"`{name}` must be a torch.Tensor of shape {_shape_text(dimensions)}, got {type(value)}"
            )
        given = tuple(value.shape)
        if value.dim() != len(dimensions):
            hint = " (is the batch dimension missing?)" if value.dim() == len(dimensions) - 1 else ""
            raise ValueError(
                f"`{name}` must have {len(dimensions)} dimensions {_shape_text(dimensions)}, "
                f"got shape {given}{hint}"
            )
        for axis, expected in enumerate(dimensions):
            if isinstance(expected, int) and given[axis] != expected:
                raise ValueError(
                    f"`{name}` must have shape {_shape_text(dimensions)}: dimension {axis} must be "
                    f"{expected} (from the model config), got shape {given}"
                )
        if kind == _INTEGER and (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool
        ):
            raise ValueError(f"`{name}` must hold integer token ids (torch.long), got dtype {value.dtype}")
        if kind == _FLOAT and not value.is_floating_point():
            raise ValueError(
                f"`{name}` must be floating-point (normalised as the processor does), got dtype {value.dtype}"
            )
        if partner is not None and inputs.get(partner) is not None:
            shared = tuple(inputs[partner].shape[:2])  # (batch, length)
            if given[:2] != shared:
                raise ValueError(
                    f"`{name}` must share (batch, length) = {shared} with `{partner}`, got shape {given}"
                )
        batch_sizes[name] = given[0]
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"batch size mismatch: the inputs have different batch sizes {batch_sizes}")
    for name in ("input_ids", "table_input_ids"):
        if inputs.get(name) is not None:
            _check_values_in_range(name, inputs[name], 0, config.vocab_size, "token ids")


def check_class_labels(labels: Any, num_labels: int, batch_size: int) -> None:
    """`labels` (batch,) integer class ids below `num_labels`; a negative one means "no label" (ignored)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor of shape ({batch_size},), got {type(labels)}")
    if tuple(labels.shape) != (batch_size,):
        raise ValueError(
            f"`labels` must have shape ({batch_size},) (one class id per sample), got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must hold integer class ids (torch.long), got dtype {labels.dtype}")
    _check_values_in_range("labels", labels, None, num_labels, "class ids (a negative one means no label)")


__all__ = ["check_class_labels", "check_model_inputs"]
