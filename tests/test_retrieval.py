"""Million-scale retrieval pieces: approximate FAISS indexes, their recall against exact search, and the
chunked torch search (the GPU back-end) run on the CPU."""

import numpy as np
import pytest

from train.retrieval import build_faiss_index, recall_at_k, top_k_search, torch_top_k


def clustered(count: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    rows = centres[rng.integers(0, 12, count)] + 0.3 * rng.normal(size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_recall_counts_the_exact_top_k_found():
    exact = np.array([[1, 2, 9], [7, 8, 6]])
    assert recall_at_k(exact, exact, k=3) == 1.0
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), exact, k=3) == pytest.approx(0.5)  # 2/3 and 1/3
    assert recall_at_k(np.array([[9, 2, 1], [6, 7, 8]]), exact, k=3) == 1.0  # order within the top k is free
    with pytest.raises(ValueError, match="rows"):
        recall_at_k(exact[:1], exact)


def test_ivf_probing_every_list_is_exact_and_fewer_lists_lose_recall():
    gallery, queries = clustered(3000), clustered(60, seed=1)
    _, exact = top_k_search(queries, gallery, 10, backend="faiss")
    index = build_faiss_index(gallery, "IVF16,Flat", train_size=1000, search_parameters="nprobe=16")
    assert index.ntotal == len(gallery)
    _, found = top_k_search(queries, gallery, 10, index=index)
    assert recall_at_k(found, exact) == 1.0
    index = build_faiss_index(gallery, "IVF16,Flat", train_size=1000, search_parameters="nprobe=1")
    assert recall_at_k(top_k_search(queries, gallery, 10, index=index)[1], exact) < 1.0


@pytest.mark.parametrize("factory,parameters", [("HNSW16", "efSearch=128"), ("IVF8,SQ8", "nprobe=8")])
def test_approximate_indexes_find_most_of_the_exact_top_10(factory, parameters):
    gallery, queries = clustered(2000), clustered(50, seed=2)
    _, exact = top_k_search(queries, gallery, 10, backend="faiss")
    index = build_faiss_index(gallery, factory, train_size=1000, search_parameters=parameters)
    assert recall_at_k(top_k_search(queries, gallery, 10, index=index)[1], exact) > 0.9


def test_index_must_cover_the_gallery():
    gallery = clustered(300)
    index = build_faiss_index(gallery[:200], "Flat")
    with pytest.raises(ValueError, match="200 items but the gallery has 300"):
        top_k_search(gallery[:5], gallery, 3, index=index)


def test_torch_chunked_search_on_cpu_matches_faiss_scores_and_rows():
    """The GPU back-end's algorithm (blocks of queries x gallery, running top-k merge) checked on the CPU,
    with blocks smaller than k and a last block shorter than the others."""
    gallery, queries = clustered(1000, dim=24), clustered(33, dim=24, seed=3)
    faiss_scores, faiss_rows = top_k_search(queries, gallery, 25, backend="faiss")
    scores, rows = torch_top_k(queries, gallery, 25, device="cpu", query_chunk_size=8, gallery_chunk_size=19)
    np.testing.assert_allclose(scores, faiss_scores, atol=1e-5)
    assert recall_at_k(rows, faiss_rows, k=25) == 1.0
    assert scores.shape == (33, 25) and np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
