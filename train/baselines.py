"""Baseline features scored by the same metric code as SCALE (the paper's Table 5 has BERT, CLIP and others).

- The frozen text encoder SCALE starts from, mean-pooled over the caption's tokens (for MiniLM-L6, the way it
  was trained as a sentence encoder): what pretraining must not lose.
- Random vectors: the chance level of every metric on this data.

SCALE's own per-modality contrastive features are the third kind of baseline; they come out of the
evaluation's embedding extraction (`modality_embeds`), so they need nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.no_grad()
def text_encoder_embeddings(
    encoder_dir: str,
    captions: Sequence[str | None],
    max_length: int,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(N, hidden) mean of the encoder's last hidden states over each caption's tokens; zeros where an item
    has no caption (it then matches nothing, as a missing modality does in SCALE)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = AutoModel.from_pretrained(encoder_dir).to(device).eval()
    embeds = np.zeros((len(captions), model.config.hidden_size), dtype=np.float32)
    rows = [row for row, caption in enumerate(captions) if caption]
    for start in tqdm(range(0, len(rows), batch_size), desc="frozen text encoder", leave=False):
        chunk = rows[start : start + batch_size]
        inputs = tokenizer(
            [captions[row] for row in chunk],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(**inputs).last_hidden_state
        weights = inputs["attention_mask"][..., None].to(hidden.dtype)
        embeds[chunk] = ((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).float().cpu().numpy()
    return embeds


def random_embeddings(num_items: int, dim: int, seed: int) -> np.ndarray:
    """(N, dim) standard normal vectors: every metric's chance level."""
    return np.random.default_rng(seed).standard_normal((num_items, dim)).astype(np.float32)
