"""Pretraining collator of SCALE: pads per-sample processor outputs, applies the paper's five masked tasks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .configuration_scale import MODALITIES, TABLE_MASKINGS, ScaleConfig

TEXT_KEYS = ("input_ids", "attention_mask")
TABLE_KEYS = ("table_input_ids", "table_attention_mask", "table_entity_ids")
# dense fields whose first per-sample dimension varies (padded with zeros, mask 0)
SEQUENCE_KEYS = (
    "image_features",
    "image_boxes",
    "image_mask",
    "video_pixel_values",
    "video_features",
    "video_mask",
    "audio_features",
    "audio_mask",
)
# which key holds each modality's values (the first present one wins) and its token mask
MODALITY_KEYS = {
    "text": ("input_ids", "attention_mask"),
    "table": ("table_input_ids", "table_attention_mask"),
    "image": ("pixel_values", "image_features"),
    "video": ("video_pixel_values", "video_features"),
    "audio": ("audio_features",),
}


def _as_tensor(value: Any) -> torch.Tensor:
    """Tensors as given; lists / arrays (as `datasets` returns them) as tensors, float64 lists as float32."""
    if isinstance(value, torch.Tensor):
        return value
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return torch.from_numpy(array.copy() if not array.flags.writeable else array)


def _is_absent(value: Any) -> bool:
    """`None`, or an empty per-sample sequence (a missing video stored by `datasets` as zero frames)."""
    return value is None or (not isinstance(value, str) and hasattr(value, "__len__") and len(value) == 0)


def _maybe_tensor(values: Any) -> Any:
    """A tensor when `values` is numeric (per-sample tensors stacked), else `values` as given (item ids)."""
    try:
        if isinstance(values, list) and values and isinstance(values[0], torch.Tensor):
            return torch.stack(values)
        return _as_tensor(values) if np.asarray(values).dtype.kind in "biuf" else values
    except (TypeError, RuntimeError, ValueError):
        return values


def _pad_stack(rows: list[torch.Tensor | None], side: str = "right", value: float = 0) -> torch.Tensor:
    """Stack tensors whose first dimension may differ, padding it; `None` rows become all-padding rows."""
    reference = next(row for row in rows if row is not None)
    length = max(row.shape[0] for row in rows if row is not None)
    output = reference.new_full((len(rows), length, *reference.shape[1:]), value)
    for index, row in enumerate(rows):
        if row is None:
            continue
        if row.shape[1:] != reference.shape[1:]:
            raise ValueError(f"sample {index} has shape {tuple(row.shape)}, others {tuple(reference.shape)}")
        if side == "left":
            output[index, length - row.shape[0] :] = row
        else:
            output[index, : row.shape[0]] = row
    return output


def draw_modality_subset(
    present: torch.Tensor, keep_probability: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool like `present` ((..., M)): each present modality kept with `keep_probability`; the present
    modality that drew the lowest number always stays, so a product keeps at least one of those it has."""
    present = present.bool()
    draws = torch.rand(present.shape, generator=generator)
    keep = present & (draws < keep_probability)
    first = torch.where(present, draws, 2.0).argmin(dim=-1)
    return keep | (torch.nn.functional.one_hot(first, present.shape[-1]).bool() & present)


class DataCollatorForScalePretraining:
    r"""
    Builds SCALE pretraining batches: pads / stacks the processor's per-sample features, then masks
    `mask_probability` of the tokens of each modality a sample really has (never padding, never a missing
    modality):

    - MLM: caption tokens; `labels` holds the original ids (-100 elsewhere); 80 % become [MASK], 10 % a random
      token, 10 % stay.
    - MEM: whole table entities (a key or a value span, `table_entity_ids`); `table_labels` as for MLM, the
      80/10/10 choice made once per entity. With `table_masking="token"` (the paper's Table 7 ablation), the
      table's word pieces are masked one by one, as MLM masks the caption.
    - MRP / MFP / MAM: image patches (pixel path, row-major) or regions (feature path), video frames, and
      groups of `audio_subsampling` audio frames. `masked_{image,video,audio}_positions` (B, N) marks them,
      the input is zeroed there, and `{image,video,audio}_targets` keeps an unmasked copy of the input.
    - `subset_modality_mask` (B, V, 5): `num_subset_views` random subsets of each product's modalities (each
      kept with `subset_keep_probability`, at least one), the extra views of the subset-consistency loss.

    Args:
        processor_or_tokenizer: a [`ScaleProcessor`] or its tokenizer (pads token fields, gives [MASK]).
        config: a [`ScaleConfig`] giving `mask_probability`, `table_masking`, `patch_size`,
            `audio_subsampling`, `subset_keep_probability` and `num_subset_views`.
        mask_probability, table_masking, patch_size, audio_subsampling, subset_keep_probability,
            num_subset_views: explicit values (override the config).
        generator: a seeded `torch.Generator` makes the masks deterministic; `seed` creates one.
    """

    def __init__(
        self,
        processor_or_tokenizer: Any,
        config: ScaleConfig | None = None,
        mask_probability: float | None = None,
        table_masking: str | None = None,
        patch_size: int | None = None,
        audio_subsampling: int | None = None,
        subset_keep_probability: float | None = None,
        num_subset_views: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ):
        self.tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        defaults = config if config is not None else ScaleConfig()
        self.mask_probability = defaults.mask_probability if mask_probability is None else mask_probability
        self.table_masking = defaults.table_masking if table_masking is None else table_masking
        self.patch_size = defaults.patch_size if patch_size is None else patch_size
        self.audio_subsampling = (
            defaults.audio_subsampling if audio_subsampling is None else audio_subsampling
        )
        self.subset_keep_probability = (
            defaults.subset_keep_probability if subset_keep_probability is None else subset_keep_probability
        )
        self.num_subset_views = defaults.num_subset_views if num_subset_views is None else num_subset_views
        if not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability must lie in (0, 1), got {self.mask_probability}")
        if self.table_masking not in TABLE_MASKINGS:
            raise ValueError(f"table_masking must be one of {TABLE_MASKINGS}, got {self.table_masking!r}")
        if self.tokenizer.mask_token_id is None or self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a mask token and a pad token for MLM / MEM")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.special_token_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)

    # ------------------------------------------------------------------------------------------ collation
    def _pad_tokens(
        self, features: list[Mapping[str, Any]], keys: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        """Token fields through the tokenizer's `pad`; rows without them become padding."""
        ids_key, mask_key = keys[0], keys[1]
        rows = []
        for feature in features:
            if _is_absent(feature.get(ids_key)):
                rows.append({"input_ids": [self.tokenizer.pad_token_id], "attention_mask": [0]})
            else:
                rows.append(
                    {
                        "input_ids": _as_tensor(feature[ids_key]).tolist(),
                        "attention_mask": _as_tensor(feature[mask_key]).tolist(),
                    }
                )
        padded = self.tokenizer.pad(rows, padding="longest", return_tensors="pt")
        output = {ids_key: padded["input_ids"].long(), mask_key: padded["attention_mask"].long()}
        for extra in keys[2:]:
            extra_rows = [None if _is_absent(f.get(extra)) else _as_tensor(f[extra]).long() for f in features]
            if any(row is not None for row in extra_rows):
                extra_rows = [
                    row if row is not None else torch.zeros(1, dtype=torch.long) for row in extra_rows
                ]
                output[extra] = _pad_stack(extra_rows, side=self.tokenizer.padding_side)
        return output

    def _collate(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        keys = {key for feature in features for key in feature}
        if "input_ids" in keys:
            batch.update(self._pad_tokens(features, TEXT_KEYS))
        if "table_input_ids" in keys:
            batch.update(self._pad_tokens(features, TABLE_KEYS))
        for key in keys - set(TEXT_KEYS) - set(TABLE_KEYS):
            values = [feature.get(key) for feature in features]
            if key in SEQUENCE_KEYS or key == "pixel_values":
                rows = [None if _is_absent(value) else _as_tensor(value) for value in values]
                if key == "pixel_values" and any(row is None for row in rows):
                    reference = next(row for row in rows if row is not None)
                    rows = [torch.zeros_like(reference) if row is None else row for row in rows]
                batch[key] = _pad_stack(rows) if key != "pixel_values" else torch.stack(rows)
            elif key == "modality_mask":
                if all(value is not None for value in values):  # else derived from the fields below
                    batch[key] = torch.stack([_as_tensor(value) for value in values]).long()
            else:
                batch[key] = _maybe_tensor(values)
        if "modality_mask" not in batch:
            batch["modality_mask"] = torch.tensor(
                [
                    [
                        int(any(not _is_absent(feature.get(key)) for key in MODALITY_KEYS[m]))
                        for m in MODALITIES
                    ]
                    for feature in features
                ]
            )
        return batch

    # ------------------------------------------------------------------------------------------ masking
    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def _mask_tokens(self, ids: torch.Tensor, masked: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Apply BERT's 80/10/10 rule: `action` < 0.8 -> [MASK], < 0.9 -> random token, else keep."""
        ids = ids.clone()
        ids[masked & (action < 0.8)] = self.tokenizer.mask_token_id
        random_positions = masked & (action >= 0.8) & (action < 0.9)
        random_tokens = torch.randint(len(self.tokenizer), ids.shape, generator=self.generator)
        ids[random_positions] = random_tokens[random_positions]
        return ids

    def _mask_text(self, batch: dict[str, Any], present: torch.Tensor) -> None:
        ids = batch["input_ids"]
        candidates = (
            batch["attention_mask"].bool() & present[:, None] & ~torch.isin(ids, self.special_token_ids)
        )
        masked = candidates & (self._rand(*ids.shape) < self.mask_probability)
        batch["labels"] = torch.where(masked, ids, torch.full_like(ids, -100))
        batch["input_ids"] = self._mask_tokens(ids, masked, self._rand(*ids.shape))

    def _mask_table(self, batch: dict[str, Any], present: torch.Tensor) -> None:
        ids, entities = batch["table_input_ids"], batch["table_entity_ids"]
        if self.table_masking == "token":  # every word piece its own unit (its own 80/10/10 draw)
            positions = torch.arange(1, ids.shape[1] + 1).expand_as(ids)
            entities = torch.where((entities > 0) & ~torch.isin(ids, self.special_token_ids), positions, 0)
        num_entities = int(entities.max()) + 1
        chosen = self._rand(ids.shape[0], num_entities) < self.mask_probability
        chosen[:, 0] = False  # entity 0 = [CLS], [SEP], separators, padding
        candidates = batch["table_attention_mask"].bool() & present[:, None] & (entities > 0)
        masked = candidates & chosen.gather(1, entities)
        entity_action = self._rand(ids.shape[0], num_entities).gather(1, entities)
        batch["table_labels"] = torch.where(masked, ids, torch.full_like(ids, -100))
        batch["table_input_ids"] = self._mask_tokens(ids, masked, entity_action)

    def _mask_dense(
        self, batch: dict[str, Any], modality: str, key: str, valid: torch.Tensor
    ) -> torch.Tensor:
        """Choose masked tokens among `valid` (B, N) and record targets; returns the (B, N) choice."""
        masked = valid & (self._rand(*valid.shape) < self.mask_probability)
        batch[f"{modality}_targets"] = batch[key].clone()
        batch[f"masked_{modality}_positions"] = masked
        return masked

    def _mask_image(self, batch: dict[str, Any], present: torch.Tensor) -> None:
        if "pixel_values" in batch:
            pixels = batch["pixel_values"]
            size, (height, width) = self.patch_size, pixels.shape[-2:]
            if height % size or width % size:
                raise ValueError(f"pixel_values of {height}x{width} do not split into {size}x{size} patches")
            grid_h, grid_w = height // size, width // size
            valid = present[:, None].expand(-1, grid_h * grid_w)
            masked = self._mask_dense(batch, "image", "pixel_values", valid)
            keep = (~masked).view(-1, 1, grid_h, 1, grid_w, 1).to(pixels.dtype)
            shape = (pixels.shape[0], pixels.shape[1], grid_h, size, grid_w, size)
            batch["pixel_values"] = (pixels.view(shape) * keep).view(pixels.shape)
        elif "image_features" in batch:
            valid = (
                present[:, None]
                & batch.get("image_mask", torch.ones(batch["image_features"].shape[:2])).bool()
            )
            masked = self._mask_dense(batch, "image", "image_features", valid)
            batch["image_features"] = batch["image_features"].masked_fill(masked[..., None], 0)

    def _mask_video(self, batch: dict[str, Any], present: torch.Tensor) -> None:
        key = "video_pixel_values" if "video_pixel_values" in batch else "video_features"
        values = batch[key]
        valid = present[:, None] & batch.get("video_mask", torch.ones(values.shape[:2])).bool()
        masked = self._mask_dense(batch, "video", key, valid)
        batch[key] = values.masked_fill(masked.view(*masked.shape, *([1] * (values.dim() - 2))), 0)

    def _mask_audio(self, batch: dict[str, Any], present: torch.Tensor) -> None:
        features = batch["audio_features"]
        frames, step = features.shape[1], self.audio_subsampling
        groups = math.ceil(frames / step)
        frame_valid = batch.get("audio_mask", torch.ones(features.shape[:2])).bool()
        frame_valid = torch.nn.functional.pad(frame_valid, (0, groups * step - frames))
        valid = present[:, None] & frame_valid.view(-1, groups, step).any(-1)
        masked = self._mask_dense(batch, "audio", "audio_features", valid)
        frame_masked = masked.repeat_interleave(step, dim=1)[:, :frames]
        batch["audio_features"] = features.masked_fill(frame_masked[..., None], 0)

    def __call__(self, features: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict[str, Any]:
        """Per-sample features (a list of dicts) or an already batched processor output -> a masked batch."""
        if isinstance(features, Mapping):
            batch = {key: _maybe_tensor(value) for key, value in features.items()}
            if "modality_mask" not in batch:
                raise ValueError("a batched input needs the processor's modality_mask")
        else:
            if not features:
                raise ValueError("cannot collate an empty list of features")
            batch = self._collate(features)
        present = batch["modality_mask"].bool()
        if "input_ids" in batch:
            self._mask_text(batch, present[:, MODALITIES.index("text")])
        if "table_input_ids" in batch:
            if "table_entity_ids" not in batch:
                raise ValueError("MEM needs table_entity_ids (the processor emits them)")
            self._mask_table(batch, present[:, MODALITIES.index("table")])
        if "pixel_values" in batch or "image_features" in batch:
            self._mask_image(batch, present[:, MODALITIES.index("image")])
        if "video_pixel_values" in batch or "video_features" in batch:
            self._mask_video(batch, present[:, MODALITIES.index("video")])
        if "audio_features" in batch:
            self._mask_audio(batch, present[:, MODALITIES.index("audio")])
        views = present[:, None].expand(-1, self.num_subset_views, -1)
        batch["subset_modality_mask"] = draw_modality_subset(
            views, self.subset_keep_probability, self.generator
        ).long()
        return batch


__all__ = ["DataCollatorForScalePretraining"]
