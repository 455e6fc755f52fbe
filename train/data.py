"""From converted M5Product rows to model inputs: the processor runs inside DataLoader workers.

A row of the converted dataset (`dataset_script`) has `item_id`, `caption`, `table` (list of
`{"key", "value"}`), `image`, `video`, `audio` (None when missing), `label` and `instance_id`.
`ScaleBatchCollator` turns a list of rows into the processor's tensors (optionally only some modalities, for
the paper's modality-combination evaluation), then into pretraining inputs with
`DataCollatorForScalePretraining`. Because it is the DataLoader's `collate_fn`, decoding and feature
extraction run in the worker processes, in parallel with the model.

One undecodable file in a million must not end a run: the collator calls the processor with
`on_error="missing"`, so such an input becomes a missing modality, is logged with its item id and is listed in
the batch's `input_failures` (`{"item_id", "modality", "reason"}`), which the training loop and the embedding
extraction count.

Masking must not depend on which worker builds a batch or on whether training was resumed mid-epoch, so the
pretraining collator's generator is seeded from the dataset indices of the batch (`_index`, added by
`IndexedDataset`) and the run's seed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from modeling_scale import MODALITIES

logger = logging.getLogger(__name__)

MODALITY_COLUMNS = {"text": "caption", "table": "table", "image": "image", "video": "video", "audio": "audio"}
"""The dataset column that holds each modality."""

PROCESSOR_ARGUMENTS = {
    "text": "text",
    "table": "tables",
    "image": "images",
    "video": "videos",
    "audio": "audio",
}
"""The processor keyword that takes each modality."""


def check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
    return tuple(m for m in MODALITIES if m in modalities)


def _table_pairs(table: Any) -> list[tuple[str, str]] | None:
    if not table:
        return None
    return [(entry["key"], entry["value"]) if isinstance(entry, dict) else tuple(entry) for entry in table]


def processor_inputs(rows: Sequence[dict], modalities: Sequence[str] = MODALITIES) -> dict[str, list]:
    """The processor's keyword arguments for `rows`, restricted to `modalities` (None marks a missing one)."""
    inputs = {}
    for modality in check_modalities(modalities):
        values = [row.get(MODALITY_COLUMNS[modality]) for row in rows]
        if modality == "table":
            values = [_table_pairs(value) for value in values]
        elif modality == "text":
            values = [value if value else None for value in values]
        if any(value is not None for value in values):
            inputs[PROCESSOR_ARGUMENTS[modality]] = values
    return inputs


def only_columns_of(dataset, modalities: Sequence[str], keep: Sequence[str] = ("item_id", "label")):
    """`dataset` without the columns of other modalities, so that their media are never decoded, and with
    its media left encoded (`{"bytes", "path"}`): `datasets` would decode an image, or open a video, when the
    row is read, where a corrupt file is an exception that ends the DataLoader; the processor decodes them
    in the collator instead, where such a file becomes a missing modality (and at the model's size, which is
    faster). A `datasets.Dataset`; other datasets are returned unchanged."""
    if not hasattr(dataset, "select_columns"):
        return dataset
    wanted = [MODALITY_COLUMNS[m] for m in check_modalities(modalities)] + list(keep)
    dataset = dataset.select_columns([column for column in dataset.column_names if column in wanted])
    from datasets import Audio, Image, Video

    for column, feature in dataset.features.items():
        if isinstance(feature, (Audio, Image, Video)) and feature.decode:
            dataset = dataset.cast_column(column, type(feature)(decode=False))
    return dataset


class IndexedDataset(Dataset):
    """A map-style dataset whose rows carry their own index as `_index` (seeds the batch's masking)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = dict(self.dataset[int(index)])
        row["_index"] = int(index)
        return row


def batch_seed(seed: int, indices: Sequence[int]) -> int:
    """A 63-bit seed that depends only on the run's seed and the batch's dataset indices."""
    digest = hashlib.blake2b(repr((seed, list(indices))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ScaleBatchCollator:
    """
    DataLoader `collate_fn`: dataset rows -> processor tensors (+ pretraining targets, + `labels` for
    classification, + `item_ids`).

    Args:
        processor: a `ScaleProcessor`.
        modalities: modalities to feed; the others are left out of the batch entirely (not decoded).
        pretraining_collator: a `DataCollatorForScalePretraining`; when given, masking targets are added.
        label_column: when given, `labels` (B,) long is added from this column (classification).
        seed: the run's seed, mixed with the batch's `_index` values to seed the masking.
        on_error: the processor's `on_error`; `"missing"` (default) turns an unreadable input into a missing
            modality listed in `input_failures`, `"raise"` stops at it.
    """

    def __init__(
        self,
        processor,
        modalities: Sequence[str] = MODALITIES,
        pretraining_collator=None,
        label_column: str | None = None,
        seed: int = 0,
        on_error: str = "missing",
    ):
        self.processor = processor
        self.modalities = check_modalities(modalities)
        self.pretraining_collator = pretraining_collator
        self.label_column = label_column
        self.seed = seed
        self.on_error = on_error

    def __call__(self, rows: Sequence[dict]) -> dict[str, Any]:
        inputs = processor_inputs(rows, self.modalities)
        if not inputs:
            ids = [row.get("item_id") for row in rows]
            raise ValueError(f"none of the items {ids} has any of the modalities {self.modalities}")
        failures = []
        try:
            batch = dict(
                self.processor(**inputs, return_tensors="pt", on_error=self.on_error, failures=failures)
            )
        except Exception as error:
            ids = [row.get("item_id") for row in rows]
            raise type(error)(f"{error} (batch item ids, by sample index: {ids})") from error
        input_failures = [
            {
                "item_id": rows[failure.sample].get("item_id"),
                "modality": failure.modality,
                "reason": failure.reason,
            }
            for failure in failures
        ]
        for failure in input_failures:
            logger.warning("item %(item_id)s: %(modality)s treated as missing: %(reason)s", failure)
        if self.pretraining_collator is not None:
            indices = [row.get("_index", position) for position, row in enumerate(rows)]
            # the collator draws its masks from `generator`; re-seeding it per batch makes them independent
            # of worker assignment and of resuming
            generator = torch.Generator().manual_seed(batch_seed(self.seed, indices))
            self.pretraining_collator.generator = generator
            batch = self.pretraining_collator(batch)
        if self.label_column is not None:
            batch["labels"] = torch.tensor([row[self.label_column] for row in rows], dtype=torch.long)
        batch["item_ids"] = [row.get("item_id") for row in rows]
        batch["input_failures"] = input_failures
        return batch


def model_inputs(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """The tensors of a collated batch (bookkeeping such as `item_ids` dropped), moved to `device`."""
    return {
        key: value.to(device) if device is not None else value
        for key, value in batch.items()
        if isinstance(value, torch.Tensor)
    }
