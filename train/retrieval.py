"""Exact top-k search of a query set against a gallery, without ever holding the full score matrix.

The paper's coarse protocol ranks 24 k queries against 1.18 M gallery items: a dense 24 k x 1.18 M float
matrix is 113 GB, so both back-ends below walk the problem in blocks and keep only each query's running
top-k. Scores are plain inner products of the embeddings as given (callers L2-normalise for cosine).

- `"torch"`: blocks of queries x blocks of gallery on the GPU when present (or CPU), merging the running
  top-k after each gallery block. Exact.
- `"faiss"`: `faiss.IndexFlatIP` (exact, multi-threaded BLAS on CPU), or any prebuilt FAISS index the caller
  passes: `build_faiss_index` makes an approximate one (IVF / HNSW / PQ) and `recall_at_k` measures it against
  the exact search. Time, memory and recall at the paper's size: `train/benchmark_retrieval.py`.
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


def build_faiss_index(
    gallery_embeds: np.ndarray | torch.Tensor,
    index_factory: str,
    train_size: int = 65536,
    search_parameters: str | None = None,
    add_chunk_size: int = 65536,
    seed: int = 0,
):
    """
    An inner-product FAISS index over `gallery_embeds` from a factory string: `"IVF1024,Flat"` (inverted
    lists, exact vectors), `"IVF1024,SQ8"` (1 byte per dimension), `"IVF1024,PQ48"` (48 bytes per item),
    `"HNSW32"` (graph). Trained on `train_size` random gallery rows (FAISS wants >= 39 per IVF list), filled
    in chunks so that no second copy of the gallery is made; `search_parameters` (e.g. `"nprobe=32"` or
    `"efSearch=128"`) trade speed for recall (see `recall_at_k`).
    """
    import faiss

    gallery = _as_float32(gallery_embeds, "gallery_embeds")
    index = faiss.index_factory(gallery.shape[1], index_factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rows = np.random.default_rng(seed).choice(len(gallery), min(train_size, len(gallery)), replace=False)
        index.train(gallery[np.sort(rows)])
    for start in range(0, len(gallery), add_chunk_size):
        index.add(gallery[start : start + add_chunk_size])
    if search_parameters:
        faiss.ParameterSpace().set_index_parameters(index, search_parameters)
    return index


def recall_at_k(approximate_indices: np.ndarray, exact_indices: np.ndarray, k: int = 10) -> float:
    """Share of each query's exact top-`k` gallery rows that the approximate top-`k` also returns, averaged
    over queries (FAISS's "k-recall@k"; 1.0 = the approximate index changes no top-k list)."""
    approximate, exact = np.asarray(approximate_indices)[:, :k], np.asarray(exact_indices)[:, :k]
    if approximate.shape[0] != exact.shape[0]:
        raise ValueError(f"{approximate.shape[0]} approximate result rows for {exact.shape[0]} queries")
    valid = exact >= 0
    found = ((approximate[:, :, None] == exact[:, None, :]) & valid[:, None, :]).any(axis=1).sum(axis=1)
    return float(np.mean(found / np.maximum(valid.sum(axis=1), 1)))


def top_k_search(
    query_embeds: np.ndarray | torch.Tensor,
    gallery_embeds: np.ndarray | torch.Tensor,
    k: int,
    backend: str = "auto",
    device: str | torch.device | None = None,
    query_chunk_size: int | None = None,
    gallery_chunk_size: int = 65536,
    index=None,
) -> tuple[np.ndarray, np.ndarray]:
    """
    The `k` gallery items of highest inner product for each query, best first.

    Args:
        backend: `"torch"` (chunked exact search on `device`), `"faiss"` (exact `IndexFlatIP` on CPU) or
            `"auto"` (torch on a GPU when one is present, FAISS otherwise).
        index: a FAISS index over `gallery_embeds` (e.g. from `build_faiss_index`) to search instead of an
            exact one; implies the FAISS back-end.

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
    if index is not None:
        if index.ntotal != gallery.shape[0]:
            raise ValueError(f"the index holds {index.ntotal} items but the gallery has {gallery.shape[0]}")
        return faiss_top_k(queries, None, k, index=index, query_chunk_size=query_chunk_size or 16384)
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
