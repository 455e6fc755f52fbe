"""Query encoding and search: a checked `ProductQuery` in, ranked gallery products and timings out.

Kept apart from the page so that the API, the tests and the load test exercise exactly what the page does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gallery_index import GalleryHit, GalleryIndex, load_or_build_index
from query_inputs import ProductQuery, QueryError
from scale_code import MODALITIES

PROCESSOR_ARGUMENTS = {
    "text": "text",
    "table": "tables",
    "image": "images",
    "video": "videos",
    "audio": "audio",
}
"""The processor keyword that takes each modality."""
GALLERY_COLUMNS = {"text": "caption", "table": "table", "image": "image", "video": "video", "audio": "audio"}
"""The converted dataset's column that holds each modality."""


@dataclass
class SearchResult:
    hits: list[GalleryHit]
    alignment: np.ndarray
    """The query's modality alignment matrix S (5x5, NaN for the modalities the query lacks)."""
    query_modalities: tuple[str, ...]
    encode_ms: float
    search_ms: float

    @property
    def total_ms(self) -> float:
        return self.encode_ms + self.search_ms


class ProductSearchEngine:
    """Encodes queries with a SCALE model and looks them up in a `GalleryIndex`.

    Query embeddings are L2-normalised like the gallery's, so scores are cosine similarities.
    """

    def __init__(self, model, processor, index: GalleryIndex):
        self.model = model.eval()
        self.processor = processor
        self.index = index
        self.device = next(model.parameters()).device

    def processor_inputs(self, query: ProductQuery) -> dict:
        """The processor's keyword arguments for a one-product batch of the query's modalities."""
        return {PROCESSOR_ARGUMENTS[m]: [getattr(query, m)] for m in query.modalities}

    @torch.inference_mode()
    def encode(self, query: ProductQuery) -> tuple[np.ndarray, np.ndarray]:
        """(1, D) normalised product embedding and the 5x5 alignment matrix of one query."""
        try:
            inputs = self.processor(**self.processor_inputs(query), return_tensors="pt")
        except (ValueError, RuntimeError, OSError) as error:
            raise QueryError(
                f"The query ({', '.join(query.modalities)}) could not be prepared for the model: {error}"
            ) from error
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        outputs = self.model(**inputs)
        embeds = torch.nn.functional.normalize(outputs.product_embeds.float(), dim=-1)
        alignment = outputs.alignment_scores[0].float().cpu().numpy().copy()
        missing = [i for i, m in enumerate(MODALITIES) if m not in query.modalities]
        alignment[missing, :] = np.nan
        alignment[:, missing] = np.nan
        return embeds.cpu().numpy(), alignment

    def search(self, query: ProductQuery, k: int) -> SearchResult:
        start = time.perf_counter()
        embeds, alignment = self.encode(query)
        encoded = time.perf_counter()
        hits = self.index.search(embeds, k)[0]
        searched = time.perf_counter()
        return SearchResult(
            hits=hits,
            alignment=alignment,
            query_modalities=query.modalities,
            encode_ms=1000 * (encoded - start),
            search_ms=1000 * (searched - encoded),
        )


def load_search_engine(
    checkpoint: str | Path,
    dataset: str | Path,
    dataset_config: str = "retrieval_coarse",
    split: str = "gallery",
    index_root: str | Path = "outputs/index",
    index_factory: str | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> ProductSearchEngine:
    """Loads the checkpoint like any transformers model, by the code it ships (`trust_remote_code`: the Space
    has no SCALE package), and the gallery like any dataset, then its index."""
    from datasets import load_dataset
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(str(checkpoint), trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(str(checkpoint), trust_remote_code=True)
    gallery = load_dataset(str(dataset), dataset_config, split=split)

    def embed_gallery(products):
        return embed_products(model, processor, products, batch_size=batch_size, device=device)

    faiss_device = _faiss_gpu(device)
    index = load_or_build_index(gallery, embed_gallery, checkpoint, index_root, index_factory, faiss_device)
    return ProductSearchEngine(model, processor, index)


@torch.inference_mode()
def embed_products(model, processor, products, batch_size: int = 16, device: str = "cpu") -> np.ndarray:
    """(N, D) float32 L2-normalised `product_embeds` of converted M5Product rows (a `datasets.Dataset`), from
    every modality each product has; an unreadable file counts as a missing modality. The same numbers as the
    project's `train.embeddings.extract_embeddings`, which the Space cannot import: media stay encoded and the
    processor decodes them (at the model's size; a corrupt file becomes a missing modality)."""
    from datasets import Audio, Image, Video
    from tqdm.auto import tqdm

    for column, feature in products.features.items():
        if isinstance(feature, (Audio, Image, Video)) and feature.decode:
            products = products.cast_column(column, type(feature)(decode=False))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")
    embeds = []
    for start in tqdm(range(0, len(products), batch_size), desc="gallery embeddings"):
        rows = products[start : start + batch_size]
        inputs = {PROCESSOR_ARGUMENTS[m]: rows[c] for m, c in GALLERY_COLUMNS.items() if c in rows}
        batch = processor(**inputs, return_tensors="pt", on_error="missing")
        with autocast:
            outputs = model(**{name: value.to(device) for name, value in batch.items()})
        embeds.append(torch.nn.functional.normalize(outputs.product_embeds.float(), dim=-1).cpu())
    return torch.cat(embeds).numpy() if embeds else np.zeros((0, 0), np.float32)


def _faiss_gpu(device: str) -> int | None:
    """FAISS's GPU: the model's, when FAISS was built with GPU support; None (CPU) otherwise."""
    import faiss

    if not str(device).startswith("cuda") or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return None
    return torch.device(device).index or 0
