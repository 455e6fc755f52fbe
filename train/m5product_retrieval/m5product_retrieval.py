"""M5Product retrieval: mAP@k and Prec@k as the M5Product (SCALE) evaluation code computes them.

A self-contained `evaluate` module (NumPy only), so that the folder can be published on its own:

    import evaluate

    metric = evaluate.load("path/to/m5product_retrieval")  # or its Hub id
    metric.compute(
        predictions=query_embeddings,  # (Q, D)
        references=query_labels,  # Q category (coarse) or product-instance (fine-grained) labels
        gallery_embeddings=gallery_embeddings,  # (G, D)
        gallery_labels=gallery_labels,
        query_ids=query_item_ids,  # optional: a gallery item with the query's id is the query itself
        gallery_ids=gallery_item_ids,
        ks=[1, 5, 10],
    )

The project's `train/metrics.py::retrieval_metrics` is the reference implementation (with FAISS / GPU
search for millions of items); a test checks that both give the same numbers.
"""

import datasets
import evaluate
import numpy as np

_CITATION = """\
@inproceedings{dong2022m5product,
  title     = {M5Product: Self-harmonized Contrastive Learning for E-commercial Multi-modal Pretraining},
  author    = {Dong, Xiao and Zhan, Xunlin and Wu, Yangxin and Wei, Yunchao and Kampffmeyer, Michael C. and
               Wei, Xiaoyong and Lu, Minlong and Wang, Yaowei and Liang, Xiaodan},
  booktitle = {CVPR},
  year      = {2022}
}
"""

_DESCRIPTION = """\
Retrieval scores of the M5Product benchmark. For each query the gallery is ranked by the inner product of the
embeddings as given (L2-normalise them first for cosine similarity), with the query's own item removed when
ids are given. Positives are gallery items with the query's label. With k' = min(k, #positives, gallery size):
Prec@k = hits in the top k' / k'; AP@k = (sum over the hits i in the top k' of hits-so-far / rank_i) / hits
(0 without a hit); mAP@k and Prec@k average over the queries (a query without positives scores 0), x100.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (Q, D) query embeddings.
    references: Q query labels (category for coarse retrieval, product instance for fine-grained).
    gallery_embeddings: (G, D) gallery embeddings.
    gallery_labels: G gallery labels.
    query_ids, gallery_ids: optional item ids (both or neither), in query / gallery order; a gallery item
        with the query's id is the query itself: it leaves the query's ranking, positives and gallery size.
    ks: cut-offs (default 1, 5, 10).
    batch_size: queries scored at once (default: a (batch, G) score matrix of about 128 MB).
Returns:
    `mAP@k` and `Prec@k` for every k (x100), `num_queries`, `queries_without_positives`.
Examples:
    >>> metric = evaluate.load("m5product_retrieval")
    >>> metric.compute(predictions=[[1.0, 0.0]], references=["a"], ks=[1],
    ...                gallery_embeddings=[[1.0, 0.0], [0.0, 1.0]], gallery_labels=["b", "a"])
    {'mAP@1': 0.0, 'Prec@1': 0.0, 'num_queries': 1, 'queries_without_positives': 0}
"""


def _codes(first, second) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of two label (or id) lists in one shared vocabulary (as strings)."""
    values = np.asarray([str(value) for value in list(first) + list(second)])
    _, codes = np.unique(values, return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(first)], codes[len(first) :], int(codes.max()) + 1 if len(codes) else 0


def ranked_hits(
    query_embeddings: np.ndarray,
    query_codes: np.ndarray,
    gallery_embeddings: np.ndarray,
    gallery_codes: np.ndarray,
    depth: int,
    query_id_codes: np.ndarray | None,
    gallery_id_codes: np.ndarray | None,
    batch_size: int,
) -> np.ndarray:
    """(Q, depth) bool: whether each query's r-th ranked gallery item (own item removed) shares its label."""
    hits = np.zeros((len(query_embeddings), depth), dtype=bool)
    for start in range(0, len(query_embeddings), batch_size):
        scores = query_embeddings[start : start + batch_size] @ gallery_embeddings.T
        candidates = np.ones(scores.shape, dtype=bool)
        if query_id_codes is not None:
            candidates = gallery_id_codes[None, :] != query_id_codes[start : start + batch_size, None]
        scores = np.where(candidates, scores, -np.inf)
        keep = min(depth, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        valid = np.take_along_axis(candidates, top, axis=1)
        hits[start : start + batch_size, :keep] = valid & (
            gallery_codes[top] == query_codes[start : start + batch_size, None]
        )
    return hits


def ranking_scores(
    hits: np.ndarray, num_positives: np.ndarray, gallery_sizes: np.ndarray, ks
) -> dict[str, float]:
    """mAP@k / Prec@k (x100) from ranked hit lists, with k' = min(k, #positives, gallery size)."""
    num_queries = hits.shape[0]
    cumulative_hits = np.cumsum(hits, axis=1)
    precision_at_rank = np.where(hits, cumulative_hits / np.arange(1, hits.shape[1] + 1), 0.0)
    cumulative_precision = np.cumsum(precision_at_rank, axis=1)
    results = {}
    for k in ks:
        cut = np.minimum(np.minimum(k, num_positives), gallery_sizes).astype(np.int64)
        rows = np.nonzero(cut > 0)[0]
        found = np.zeros(num_queries)
        precision_sum = np.zeros(num_queries)
        found[rows] = cumulative_hits[rows, cut[rows] - 1]
        precision_sum[rows] = cumulative_precision[rows, cut[rows] - 1]
        precision = np.divide(found, cut, out=np.zeros(num_queries), where=cut > 0)
        average_precision = np.divide(precision_sum, found, out=np.zeros(num_queries), where=found > 0)
        results[f"mAP@{k}"] = 100.0 * float(average_precision.mean()) if num_queries else 0.0
        results[f"Prec@{k}"] = 100.0 * float(precision.mean()) if num_queries else 0.0
    return results


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class M5ProductRetrieval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("string"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2109.04275"],
        )

    def _compute(
        self,
        predictions,
        references,
        gallery_embeddings,
        gallery_labels,
        query_ids=None,
        gallery_ids=None,
        ks=(1, 5, 10),
        batch_size: int | None = None,
    ) -> dict[str, float]:
        queries = np.asarray(predictions, dtype=np.float32).reshape(len(references), -1)
        gallery = np.asarray(gallery_embeddings, dtype=np.float32).reshape(len(gallery_labels), -1)
        if queries.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"query embeddings are {queries.shape[1]}-d, gallery embeddings {gallery.shape[1]}-d"
            )
        if (query_ids is None) != (gallery_ids is None):
            raise ValueError(
                "pass both query_ids and gallery_ids (to remove each query's own item) or neither"
            )
        query_codes, gallery_codes, num_labels = _codes(references, gallery_labels)
        num_positives = np.bincount(gallery_codes, minlength=num_labels)[query_codes]
        gallery_sizes = np.full(len(queries), len(gallery))
        query_id_codes = gallery_id_codes = None
        if query_ids is not None:
            if len(query_ids) != len(queries) or len(gallery_ids) != len(gallery):
                raise ValueError("query_ids / gallery_ids must match the number of query / gallery items")
            query_id_codes, gallery_id_codes, num_ids = _codes(query_ids, gallery_ids)
            gallery_sizes = gallery_sizes - np.bincount(gallery_id_codes, minlength=num_ids)[query_id_codes]
            # gallery items that are the query itself and carry its label are not its positives
            pairs, counts = np.unique(
                gallery_id_codes.astype(np.int64) * num_labels + gallery_codes, return_counts=True
            )
            query_pairs = query_id_codes.astype(np.int64) * num_labels + query_codes
            position = np.clip(np.searchsorted(pairs, query_pairs), 0, len(pairs) - 1)
            num_positives = num_positives - np.where(pairs[position] == query_pairs, counts[position], 0)
        hits = ranked_hits(
            queries,
            query_codes,
            gallery,
            gallery_codes,
            max(ks),
            query_id_codes,
            gallery_id_codes,
            batch_size or max(1, 2**25 // max(len(gallery), 1)),
        )
        results = ranking_scores(hits, num_positives, gallery_sizes, ks)
        results["num_queries"] = len(queries)
        results["queries_without_positives"] = int((num_positives == 0).sum())
        return results
