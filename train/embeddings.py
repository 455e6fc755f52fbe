"""Batched product-embedding extraction, shared by evaluation and the demo's gallery index.

```python
from train.embeddings import extract_embeddings

gallery = load_dataset("outputs/m5product", "retrieval_coarse", split="gallery")
result = extract_embeddings(model, processor, gallery, modalities=("text", "image"), batch_size=64)
result["product_embeds"]  # (N, hidden_size) float32 numpy, L2-normalised
result["item_ids"]        # the N item ids, in dataset order
```

A modality subset is evaluated by leaving the other modalities out of the processor call, so they are never
decoded and their `modality_mask` column is 0 (the model ignores them). Extraction runs under `torch.no_grad`
in eval mode, on the GPU when one is present (bf16 autocast there), with the processor in DataLoader workers.
An input that cannot be read (a corrupt file, NaN values) is embedded as missing, logged with its item id
and listed in `input_failures`: one bad file does not stop an evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_scale import MODALITIES
from train.data import ScaleBatchCollator, model_inputs, only_columns_of

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def product_loader(
    dataset, processor, modalities: Sequence[str], batch_size: int, num_workers: int
) -> DataLoader:
    """Batches of the processor's tensors for `dataset`'s rows, in order, decoding only `modalities` (an
    unreadable input becomes a missing modality, listed in the batch's `input_failures`)."""
    return DataLoader(
        only_columns_of(dataset, modalities),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=ScaleBatchCollator(processor, modalities),
        persistent_workers=False,
    )


def inference_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a GPU, none elsewhere: the precision embeddings are extracted in."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def extract_embeddings(
    model: torch.nn.Module,
    processor,
    dataset,
    modalities: Sequence[str] = MODALITIES,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    normalize: bool = True,
    show_progress: bool = True,
) -> dict[str, np.ndarray | list[str]]:
    """
    Product embeddings of every row of `dataset`, in order, using only `modalities`.

    Args:
        model: a `ScaleModel` or any `ScaleFor*` head model (its `base_model` is used).
        processor: the `ScaleProcessor` saved with the model.
        dataset: a map-style dataset (e.g. `datasets.Dataset`) of converted M5Product rows.
        modalities: the modality combination to feed (paper Table 4); the rest are left out.
        normalize: L2-normalise `product_embeds`, so that inner product = cosine similarity.

    Returns:
        `item_ids` (list of N str), `product_embeds` (N, P) float32, `modality_embeds` (N, 5, P) float32 (the
        per-modality contrastive features, zeros where missing), `alignment_scores` (N, 5, 5) float32 (the
        SIMCL matrix S of each item), `modality_mask` (N, 5) int64 (modalities actually used) and
        `input_failures` (the inputs embedded as missing because they could not be read: item id, modality,
        reason).
    """
    device = torch.device(device) if device is not None else default_device()
    encoder = model.base_model
    was_training = encoder.training
    encoder.eval().to(device)
    loader = product_loader(dataset, processor, modalities, batch_size, num_workers)
    item_ids: list[str] = []
    input_failures: list[dict] = []
    embeds, modality_embeds, scores, masks = [], [], [], []
    autocast = inference_autocast(device)
    for batch in tqdm(loader, desc=f"embeddings {'+'.join(modalities)}", disable=not show_progress):
        inputs = model_inputs(batch, device)
        with autocast:
            outputs = encoder(**inputs)
        product = outputs.product_embeds.float()
        if normalize:
            product = torch.nn.functional.normalize(product, dim=-1)
        embeds.append(product.cpu())
        per_modality = [getattr(outputs, f"{modality}_embeds").float().cpu() for modality in MODALITIES]
        modality_embeds.append(torch.stack(per_modality, dim=1))
        scores.append(outputs.alignment_scores.float().cpu())
        masks.append(inputs["modality_mask"].cpu())
        item_ids.extend(batch["item_ids"])
        input_failures.extend(batch["input_failures"])
    encoder.train(was_training)
    if input_failures:
        logger.warning(
            "%d inputs could not be read and were embedded as missing (first: %s)",
            len(input_failures),
            input_failures[:3],
        )
    return {
        "item_ids": item_ids,
        "product_embeds": torch.cat(embeds).numpy() if embeds else np.zeros((0, 0), np.float32),
        "modality_embeds": torch.cat(modality_embeds).numpy() if embeds else np.zeros((0, 5, 0), np.float32),
        "alignment_scores": torch.cat(scores).numpy() if scores else np.zeros((0, 5, 5), np.float32),
        "modality_mask": torch.cat(masks).long().numpy() if masks else np.zeros((0, 5), np.int64),
        "input_failures": input_failures,
    }
