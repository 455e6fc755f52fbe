"""Baseline features scored by the same metric code as SCALE (the paper's Table 5 has BERT, CLIP and others).

- The frozen text encoder SCALE starts from, mean-pooled over the caption's tokens (for MiniLM-L6, the way it
  was trained as a sentence encoder): what pretraining must not lose, and the teacher it distils toward.
- Random vectors: the chance level of every metric on this data.

SCALE's own per-modality contrastive features are the third kind of baseline; they come out of the
evaluation's embedding extraction (`modality_embeds`), so they need nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


class FrozenTextEncoder(torch.nn.Module):
    """A BERT-style encoder, frozen and always in eval mode, read as the mean of its last hidden states over
    each caption's tokens. The baseline row scores it; pretraining distils toward it
    (`ScaleConfig.distillation_loss_weight`)."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FrozenTextEncoder:
        return super().train(False)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask[..., None].to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def teacher_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`teacher_embeds` for a pretraining batch: the captions with the MLM masking undone (the masked
        positions' `labels` hold the original tokens); nothing when the batch has no captions."""
        if "input_ids" not in inputs:
            return {}
        input_ids = inputs["input_ids"]
        labels = inputs.get("labels")
        if labels is not None:
            input_ids = torch.where(labels != -100, labels, input_ids)
        return {"teacher_embeds": self(input_ids, inputs["attention_mask"])}


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
    model = FrozenTextEncoder(AutoModel.from_pretrained(encoder_dir)).to(device)
    embeds = np.zeros((len(captions), model.encoder.config.hidden_size), dtype=np.float32)
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
        embeds[chunk] = model(inputs["input_ids"], inputs["attention_mask"]).float().cpu().numpy()
    return embeds


def random_embeddings(num_items: int, dim: int, seed: int) -> np.ndarray:
    """(N, dim) standard normal vectors: every metric's chance level."""
    return np.random.default_rng(seed).standard_normal((num_items, dim)).astype(np.float32)
