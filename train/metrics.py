"""
The paper's evaluation metrics: retrieval mAP@k / Prec@k, k-means NMI / Purity, linear-probe accuracy.

Retrieval follows the authors' evaluation code (DESIGN.md, "Evaluation protocol"): for each query the
gallery is ranked by the inner product of the embeddings as given (L2-normalise first for cosine), the query's
own item removed. Positives are gallery items with the query's label (category for coarse retrieval, product
instance for fine-grained retrieval). With k' = min(k, #positives, gallery size):

    Prec@k = hits in the top k' / k'
    AP@k   = (sum over the hits i in the top k' of hits-so-far / rank_i) / hits   (0 when there is no hit)

mAP@k and Prec@k average over queries, so mAP@1 = Prec@1. A query without any positive in the gallery
scores 0 (it is counted, not dropped, and reported as `queries_without_positives`). All scores are x100,
like the paper.

Only each query's top max(ks) (+ its own item) is ever computed (see `train/retrieval.py`), and #positives
comes from the gallery's label histogram, so the metrics scale to the paper's 24 k x 1.18 M coarse protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from train.retrieval import top_k_search


def _joint_codes(first: Sequence, second: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of two label (or id) lists in one shared vocabulary (works for ints and strings)."""
    first, second = np.asarray(first), np.asarray(second)
    if first.dtype.kind != second.dtype.kind:
        first, second = first.astype(str), second.astype(str)
    _, codes = np.unique(np.concatenate([first, second]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(first)], codes[len(first) :], int(codes.max()) + 1 if len(codes) else 0


def ranking_metrics(
    hits: np.ndarray, num_positives: np.ndarray, gallery_sizes: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """
    mAP@k and Prec@k from each query's ranked hit list.

    Args:
        hits: `(num_queries, K)` bool, whether the r-th ranked gallery item (own item already removed) is a
            positive; K >= max(ks) wherever the gallery allows.
        num_positives: `(num_queries,)` positives of each query in the gallery (own item excluded).
        gallery_sizes: `(num_queries,)` gallery items each query is ranked against (own item excluded).
    """
    hits = np.asarray(hits, dtype=bool)
    num_queries = hits.shape[0]
    cumulative_hits = np.cumsum(hits, axis=1)
    ranks = np.arange(1, hits.shape[1] + 1)
    precision_at_rank = np.where(hits, cumulative_hits / ranks, 0.0)
    cumulative_precision = np.cumsum(precision_at_rank, axis=1)
    results: dict[str, float] = {}
    for k in ks:
        cut = np.minimum(np.minimum(k, num_positives), gallery_sizes).astype(np.int64)
        if np.any(cut > hits.shape[1]):
            raise ValueError(f"hit lists of length {hits.shape[1]} are too short for k={k}")
        valid = cut > 0
        rows = np.nonzero(valid)[0]
        hits_in_cut = np.zeros(num_queries)
        precision_sum = np.zeros(num_queries)
        hits_in_cut[rows] = cumulative_hits[rows, cut[rows] - 1]
        precision_sum[rows] = cumulative_precision[rows, cut[rows] - 1]
        precision = np.divide(hits_in_cut, cut, out=np.zeros(num_queries), where=valid)
        average_precision = np.divide(
            precision_sum, hits_in_cut, out=np.zeros(num_queries), where=hits_in_cut > 0
        )
        results[f"mAP@{k}"] = 100.0 * float(average_precision.mean()) if num_queries else 0.0
        results[f"Prec@{k}"] = 100.0 * float(precision.mean()) if num_queries else 0.0
    return results


def ranked_gallery(
    query_embeds: np.ndarray | torch.Tensor,
    gallery_embeds: np.ndarray | torch.Tensor,
    depth: int,
    query_ids: Sequence | None = None,
    gallery_ids: Sequence | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """(Q, min(depth, G)) gallery rows of each query's top `depth`, best first, with the query's own item
    (a gallery item with its id, when ids are given) removed; -1 fills the places left at the end."""
    extra = 0
    if query_ids is not None and gallery_ids is not None:
        query_id_codes, gallery_id_codes, num_ids = _joint_codes(query_ids, gallery_ids)
        extra = int(np.bincount(gallery_id_codes, minlength=num_ids)[query_id_codes].max(initial=0))
    _, indices = top_k_search(query_embeds, gallery_embeds, depth + extra, backend=backend, device=device)
    if extra:
        is_self = gallery_id_codes[indices] == query_id_codes[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")
        indices = np.where(
            np.take_along_axis(is_self, order, axis=1), -1, np.take_along_axis(indices, order, 1)
        )
    return indices[:, : min(depth, indices.shape[1])]


def modality_set_share(
    ranked: np.ndarray, query_sets: np.ndarray, gallery_sets: np.ndarray, k: int = 10
) -> dict[str, float]:
    """How much a ranking favours gallery items holding exactly the query's modalities.

    Args:
        ranked: (Q, >= k) gallery rows best first (`ranked_gallery`; -1 = no item).
        query_sets, gallery_sets: (Q, M) / (G, M) 0/1 masks of the modalities each item was embedded from.

    Returns:
        `top_share`: % of the top-k items whose modality set equals the query's; `gallery_share`: % of the
        gallery holding the query's set (both averaged over queries); `ratio` = top_share / gallery_share
        (1 = the ranking ignores which modalities items have; None when no gallery item holds the set).
    """
    bits = 2 ** np.arange(np.shape(query_sets)[1])
    query_codes = np.asarray(query_sets, np.int64) @ bits
    gallery_codes = np.asarray(gallery_sets, np.int64) @ bits
    top = ranked[:, :k]
    same = (top >= 0) & (gallery_codes[top] == query_codes[:, None])
    top_share = 100.0 * float((same.sum(axis=1) / np.maximum((top >= 0).sum(axis=1), 1)).mean())
    gallery_counts = np.bincount(gallery_codes, minlength=2 ** len(bits))
    gallery_share = 100.0 * float(gallery_counts[query_codes].mean()) / len(gallery_codes)
    return {
        "top_share": top_share,
        "gallery_share": gallery_share,
        "ratio": top_share / gallery_share if gallery_share else None,
    }


def retrieval_metrics(
    query_embeds: np.ndarray | torch.Tensor,
    query_labels: Sequence,
    gallery_embeds: np.ndarray | torch.Tensor,
    gallery_labels: Sequence,
    ks: Sequence[int] = (1, 5, 10),
    query_ids: Sequence | None = None,
    gallery_ids: Sequence | None = None,
    backend: str = "auto",
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """
    The paper's retrieval metrics (module docstring) of `query_embeds` against `gallery_embeds`.

    Args:
        query_labels, gallery_labels: category or product-instance of each item (ints or strings).
        query_ids, gallery_ids: item ids; when both are given, a gallery item with the query's id is the query
            itself and is removed from its ranking (and from its positives and gallery size).
        backend, device: search back-end of `train.retrieval.top_k_search` (chunked exact torch on the GPU,
            exact FAISS on the CPU).

    Returns:
        `{"mAP@1": ..., "Prec@1": ..., ..., "num_queries": Q, "queries_without_positives": n}`, scores x100.
    """
    num_queries, num_gallery = len(query_labels), len(gallery_labels)
    if len(query_embeds) != num_queries or len(gallery_embeds) != num_gallery:
        raise ValueError(
            f"embeddings and labels differ in length: {len(query_embeds)} query embeddings for "
            f"{num_queries} labels, {len(gallery_embeds)} gallery embeddings for {num_gallery} labels"
        )
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("pass both query_ids and gallery_ids (to remove each query's own item) or neither")
    query_codes, gallery_codes, num_labels = _joint_codes(query_labels, gallery_labels)

    self_in_gallery = np.zeros(num_queries, dtype=np.int64)
    self_positives = np.zeros(num_queries, dtype=np.int64)
    if query_ids is not None:
        if len(query_ids) != num_queries or len(gallery_ids) != num_gallery:
            raise ValueError("query_ids / gallery_ids must match the number of query / gallery items")
        query_id_codes, gallery_id_codes, num_ids = _joint_codes(query_ids, gallery_ids)
        self_in_gallery = np.bincount(gallery_id_codes, minlength=num_ids)[query_id_codes]
        gallery_pairs = gallery_id_codes.astype(np.int64) * num_labels + gallery_codes
        query_pairs = query_id_codes.astype(np.int64) * num_labels + query_codes
        unique_pairs, pair_counts = np.unique(gallery_pairs, return_counts=True)
        position = np.clip(np.searchsorted(unique_pairs, query_pairs), 0, max(len(unique_pairs) - 1, 0))
        found = unique_pairs[position] == query_pairs if len(unique_pairs) else np.zeros(num_queries, bool)
        self_positives = np.where(found, pair_counts[position] if len(unique_pairs) else 0, 0)

    num_positives = np.bincount(gallery_codes, minlength=num_labels)[query_codes] - self_positives
    gallery_sizes = num_gallery - self_in_gallery
    depth = max(ks)
    indices = ranked_gallery(
        query_embeds, gallery_embeds, depth, query_ids, gallery_ids, backend=backend, device=device
    )
    hits = (indices >= 0) & (gallery_codes[indices] == query_codes[:, None])
    results = ranking_metrics(hits, num_positives, gallery_sizes, ks)
    results["num_queries"] = num_queries
    results["queries_without_positives"] = int((num_positives == 0).sum())
    return results


def purity_score(labels: Sequence, clusters: Sequence) -> float:
    """Fraction of items whose cluster's majority class is their own class."""
    _, label_codes = np.unique(np.asarray(labels), return_inverse=True)
    _, cluster_codes = np.unique(np.asarray(clusters), return_inverse=True)
    contingency = np.zeros((cluster_codes.max() + 1, label_codes.max() + 1), dtype=np.int64)
    np.add.at(contingency, (cluster_codes.reshape(-1), label_codes.reshape(-1)), 1)
    return float(contingency.max(axis=1).sum() / len(label_codes))


def clustering_metrics(
    embeds: np.ndarray | torch.Tensor, labels: Sequence, n_clusters: int | None = None, seed: int = 0
) -> dict[str, float]:
    """k-means (k = number of classes by default) on `embeds`; NMI and Purity of the clusters, x100."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeds = embeds.detach().cpu().numpy() if isinstance(embeds, torch.Tensor) else np.asarray(embeds)
    labels = np.asarray(labels)
    n_clusters = n_clusters or len(np.unique(labels))
    if not 1 <= n_clusters <= len(labels):
        raise ValueError(f"n_clusters must lie in [1, {len(labels)}] (number of items), got {n_clusters}")
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    clusters = kmeans.fit_predict(embeds.astype(np.float64))
    return {
        "NMI": 100.0 * float(normalized_mutual_info_score(labels, clusters)),
        "Purity": 100.0 * purity_score(labels, clusters),
    }


def linear_probe_accuracy(
    train_embeds: np.ndarray,
    train_labels: Sequence,
    test_embeds: np.ndarray,
    test_labels: Sequence,
    max_iter: int = 2000,
) -> float:
    """Accuracy (x100) of a logistic-regression classifier fitted on frozen `train_embeds`. Features are
    standardised first: L2-normalised embeddings can differ by little in absolute terms, and an unscaled
    L2-regularised probe would then fall back to the majority class whatever the features hold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    classifier.fit(np.asarray(train_embeds, dtype=np.float64), np.asarray(train_labels))
    predictions = classifier.predict(np.asarray(test_embeds, dtype=np.float64))
    return 100.0 * float((predictions == np.asarray(test_labels)).mean())
