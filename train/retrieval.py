"""Exact top-k search of a query set against a gallery, without ever holding the full score matrix.

The paper's coarse protocol ranks 24 k queries against 1.18 M gallery items: a dense 24 k x 1.18 M float
matrix is 113 GB, so both back-ends below walk the problem in blocks and keep only each query's running
top-k. Scores are plain inner products of the embeddings as given (callers L2-normalise for cosine).

- `"torch"`: blocks of queries x blocks of gallery on the GPU when present (or CPU), merging the running
  top-k after each gallery block. Exact.
- `"faiss"`: `faiss.IndexFlatIP` (exact, multi-threaded BLAS on CPU), or any prebuilt FAISS index the caller
  passes (e.g. an IVF index for approximate search at larger scale).
"""

from __future__ import annotations

import numpy as np
import torch

SEARCH_BACKENDS = ("auto", "torch", "faiss")


def _as_float32(embeds: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = embeds.detach().cpu().numpy() if isinstance(embeds, torch.Tensor) else np.asarray(embeds)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (items, dim) array, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def torch_top_k(
    query_embeds: np.ndarray,
    gallery_embeds: np.ndarray,
    k: int,
    device: str | torch.device | None = None,
    query_chunk_size: int = 1024,
    gallery_chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product, block by block; memory O(query_chunk * (gallery_chunk + k))."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    num_gallery = gallery_embeds.shape[0]
    k = min(k, num_gallery)
    gallery_blocks = [
        torch.from_numpy(gallery_embeds[start : start + gallery_chunk_size]).to(device)
        for start in range(0, num_gallery, gallery_chunk_size)
    ]
    all_scores, all_indices = [], []
    for q_start in range(0, query_embeds.shape[0], query_chunk_size):
        queries = torch.from_numpy(query_embeds[q_start : q_start + query_chunk_size]).to(device)
        best_scores = torch.full((queries.shape[0], 0), float("-inf"), device=device)
        best_indices = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=device)
        offset = 0
        for block in gallery_blocks:
            scores = queries @ block.T
            block_k = min(k, block.shape[0])
            block_scores, block_indices = scores.topk(block_k, dim=1)
            merged_scores = torch.cat([best_scores, block_scores], dim=1)
            merged_indices = torch.cat([best_indices, block_indices + offset], dim=1)
            best_scores, order = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
            best_indices = merged_indices.gather(1, order)
            offset += block.shape[0]
        all_scores.append(best_scores.cpu())
        all_indices.append(best_indices.cpu())
    return torch.cat(all_scores).numpy(), torch.cat(all_indices).numpy()


def faiss_top_k(
    query_embeds: np.ndarray,
    gallery_embeds: np.ndarray | None,
    k: int,
    index=None,
    query_chunk_size: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k with FAISS: exact `IndexFlatIP` over `gallery_embeds`, or the given prebuilt `index`."""
    import faiss

    if index is None:
        index = faiss.IndexFlatIP(gallery_embeds.shape[1])
        index.add(gallery_embeds)
    k = min(k, index.ntotal)
    scores, indices = [], []
    for start in range(0, query_embeds.shape[0], query_chunk_size):
        chunk_scores, chunk_indices = index.search(query_embeds[start : start + query_chunk_size], k)
        scores.append(chunk_scores)
        indices.append(chunk_indices.astype(np.int64))
    return np.concatenate(scores), np.concatenate(indices)


def top_k_search(
    query_embeds: np.ndarray | torch.Tensor,
    gallery_embeds: np.ndarray | torch.Tensor,
    k: int,
    backend: str = "auto",
    device: str | torch.device | None = None,
    query_chunk_size: int | None = None,
    gallery_chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """
    The `k` gallery items of highest inner product for each query, best first.

    Args:
        backend: `"torch"` (chunked exact search on `device`), `"faiss"` (exact `IndexFlatIP` on CPU) or
            `"auto"` (torch on a GPU when one is present, FAISS otherwise).

    Returns:
        `(scores, indices)`, both `(num_queries, min(k, num_gallery))`; indices are gallery row numbers.
    """
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f"backend must be one of {SEARCH_BACKENDS}, got {backend!r}")
    queries = _as_float32(query_embeds, "query_embeds")
    gallery = _as_float32(gallery_embeds, "gallery_embeds")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query and gallery embeddings differ in size: {queries.shape[1]} vs {gallery.shape[1]}"
        )
    if k < 1 or gallery.shape[0] == 0:
        raise ValueError(f"need k >= 1 and a non-empty gallery, got k={k}, gallery of {gallery.shape[0]}")
    if backend == "auto":
        on_gpu = (device is not None and torch.device(device).type == "cuda") or (
            device is None and torch.cuda.is_available()
        )
        backend = "torch" if on_gpu else "faiss"
    if backend == "torch":
        return torch_top_k(
            queries,
            gallery,
            k,
            device=device,
            query_chunk_size=query_chunk_size or 1024,
            gallery_chunk_size=gallery_chunk_size,
        )
    return faiss_top_k(queries, gallery, k, query_chunk_size=query_chunk_size or 16384)
