"""The paper's metrics against hand-worked examples, a brute-force reference and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neighbors import NearestNeighbors

from train.metrics import (
    clustering_metrics,
    linear_probe_accuracy,
    modality_set_share,
    purity_score,
    ranked_gallery,
    retrieval_metrics,
)
from train.retrieval import top_k_search


def scores_to_embeddings(scores):
    """Gallery embeddings whose inner product with the query [1, 0] are `scores`."""
    return np.stack([np.asarray(scores, dtype=np.float32), np.zeros(len(scores), np.float32)], axis=1)


QUERY = np.array([[1.0, 0.0]], dtype=np.float32)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_hand_worked_example(backend):
    # Ranking by score: g0 (A), g2 (B), g1 (A), g4 (A), g3 (B); 3 positives, so k' = min(k, 3).
    gallery = scores_to_embeddings([5, 3, 4, 1, 2])
    result = retrieval_metrics(QUERY, ["A"], gallery, ["A", "A", "B", "B", "A"], backend=backend)
    assert result["mAP@1"] == pytest.approx(100.0)
    assert result["Prec@1"] == pytest.approx(100.0)
    # top k' = 3: A B A -> 2 hits; AP = (1/1 + 2/3) / 2
    assert result["Prec@5"] == pytest.approx(100 * 2 / 3)
    assert result["mAP@5"] == pytest.approx(100 * 5 / 6)
    assert result["mAP@10"] == pytest.approx(100 * 5 / 6)
    assert result["Prec@10"] == pytest.approx(100 * 2 / 3)


def test_first_hit_late():
    # Ranking: B, A, B, A, B, A, B, B; 3 positives -> k' = 3 for k >= 3; top 3 = B A B: 1 hit at rank 2.
    gallery = scores_to_embeddings([8, 7, 6, 5, 4, 3, 2, 1])
    labels = ["B", "A", "B", "A", "B", "A", "B", "B"]
    result = retrieval_metrics(QUERY, ["A"], gallery, labels, ks=(1, 2, 5))
    assert result["mAP@1"] == 0.0 and result["Prec@1"] == 0.0
    assert result["Prec@2"] == pytest.approx(50.0)
    assert result["mAP@2"] == pytest.approx(50.0)  # one hit at rank 2: (1/2) / 1
    assert result["Prec@5"] == pytest.approx(100 / 3)
    assert result["mAP@5"] == pytest.approx(50.0)


def test_query_own_item_is_removed():
    # The query's own item ("q") is the best match; removed, the ranking is the hand-worked one above,
    # and q no longer counts as a positive (3 positives left, not 4).
    gallery = scores_to_embeddings([5, 3, 4, 1, 2, 9])
    labels = ["A", "A", "B", "B", "A", "A"]
    ids = ["g0", "g1", "g2", "g3", "g4", "q"]
    result = retrieval_metrics(QUERY, ["A"], gallery, labels, query_ids=["q"], gallery_ids=ids)
    assert result["Prec@5"] == pytest.approx(100 * 2 / 3)
    assert result["mAP@5"] == pytest.approx(100 * 5 / 6)
    without_removal = retrieval_metrics(QUERY, ["A"], gallery, labels)
    assert without_removal["Prec@5"] == pytest.approx(100 * 3 / 4)


def test_query_without_positive_scores_zero_and_is_counted():
    gallery = scores_to_embeddings([2, 1])
    result = retrieval_metrics(np.repeat(QUERY, 2, 0), ["A", "C"], gallery, ["A", "B"], ks=(1,))
    assert result["mAP@1"] == pytest.approx(50.0)
    assert result["queries_without_positives"] == 1
    assert result["num_queries"] == 2


def test_k_cut_to_gallery_size():
    gallery = scores_to_embeddings([2, 1])
    result = retrieval_metrics(QUERY, [0], gallery, [1, 0], ks=(10,))
    # k' = min(10, 1 positive, 2 items) = 1: top 1 is a miss.
    assert result["Prec@10"] == 0.0 and result["mAP@10"] == 0.0


def brute_force_metrics(query, query_labels, gallery, gallery_labels, ks, query_ids, gallery_ids):
    """Straight from the definition: full score matrix, one query at a time."""
    scores = query @ gallery.T
    results = {f"{name}@{k}": [] for k in ks for name in ("mAP", "Prec")}
    for q in range(len(query)):
        keep = np.array([gid != query_ids[q] for gid in gallery_ids])
        order = np.argsort(-scores[q][keep], kind="stable")
        ranked_labels = np.asarray(gallery_labels)[keep][order]
        positives = int((np.asarray(gallery_labels)[keep] == query_labels[q]).sum())
        for k in ks:
            cut = min(k, positives, keep.sum())
            hits = ranked_labels[:cut] == query_labels[q]
            precision = hits.sum() / cut if cut else 0.0
            precisions_at_hits = [hits[: i + 1].sum() / (i + 1) for i in range(cut) if hits[i]]
            average_precision = np.mean(precisions_at_hits) if precisions_at_hits else 0.0
            results[f"Prec@{k}"].append(precision)
            results[f"mAP@{k}"].append(average_precision)
    return {name: 100 * float(np.mean(values)) for name, values in results.items()}


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_chunked_search_equals_brute_force(backend):
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 16)).astype(np.float32)
    gallery_labels = rng.integers(0, 7, size=300)
    gallery_ids = [f"item{i}" for i in range(300)]
    # Half the queries are gallery items (own item must be removed), half are new items.
    query = np.concatenate([gallery[:40], rng.normal(size=(40, 16)).astype(np.float32)])
    query_labels = np.concatenate([gallery_labels[:40], rng.integers(0, 7, size=40)])
    query_ids = gallery_ids[:40] + [f"new{i}" for i in range(40)]
    ks = (1, 5, 10, 50)
    expected = brute_force_metrics(query, query_labels, gallery, gallery_labels, ks, query_ids, gallery_ids)
    result = retrieval_metrics(
        query,
        query_labels,
        gallery,
        gallery_labels,
        ks=ks,
        query_ids=query_ids,
        gallery_ids=gallery_ids,
        backend=backend,
    )
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name


def test_torch_blocks_equal_dense_top_k():
    rng = np.random.default_rng(1)
    query = rng.normal(size=(37, 8)).astype(np.float32)
    gallery = rng.normal(size=(301, 8)).astype(np.float32)
    dense = np.argsort(-(query @ gallery.T), axis=1)[:, :12]
    for query_chunk, gallery_chunk in [(5, 7), (37, 301), (1, 1000)]:
        _, indices = top_k_search(
            query,
            gallery,
            12,
            backend="torch",
            query_chunk_size=query_chunk,
            gallery_chunk_size=gallery_chunk,
        )
        np.testing.assert_array_equal(indices, dense)
    _, faiss_indices = top_k_search(query, gallery, 12, backend="faiss")
    np.testing.assert_array_equal(faiss_indices, dense)


def test_average_precision_matches_scikit_learn_and_map1_is_nearest_neighbour_accuracy():
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(200, 8)).astype(np.float32)
    gallery_labels = rng.integers(0, 4, size=200)
    query = rng.normal(size=(50, 8)).astype(np.float32)
    query_labels = rng.integers(0, 4, size=50)
    result = retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=(1, 10))

    # AP@10 is scikit-learn's average precision over each query's top k' list (k' = 10 here: >= 10 positives).
    order = np.argsort(-(query @ gallery.T), axis=1)[:, :10]
    expected = []
    for q in range(50):
        relevant = gallery_labels[order[q]] == query_labels[q]
        ranks_as_scores = -np.arange(10)
        expected.append(average_precision_score(relevant, ranks_as_scores) if relevant.any() else 0.0)
    assert result["mAP@10"] == pytest.approx(100 * np.mean(expected))

    # mAP@1 = Prec@1 = accuracy of the label of the nearest gallery item (inner product).
    neighbours = NearestNeighbors(n_neighbors=1, algorithm="brute", metric=lambda a, b: -a @ b)
    neighbours.fit(gallery)
    nearest = neighbours.kneighbors(query, return_distance=False)[:, 0]
    one_nn_accuracy = 100 * np.mean(gallery_labels[nearest] == query_labels)
    assert result["mAP@1"] == pytest.approx(one_nn_accuracy)
    assert result["Prec@1"] == pytest.approx(one_nn_accuracy)


def test_string_and_integer_labels_agree():
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(50, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=50)
    as_ints = retrieval_metrics(gallery[:10], labels[:10], gallery, labels)
    names = [f"c{x}" for x in labels]
    as_strings = retrieval_metrics(gallery[:10], names[:10], gallery, names)
    assert as_ints == as_strings


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        retrieval_metrics(QUERY, ["A", "B"], scores_to_embeddings([1]), ["A"])
    with pytest.raises(ValueError, match="both query_ids and gallery_ids"):
        retrieval_metrics(QUERY, ["A"], scores_to_embeddings([1]), ["A"], query_ids=["q"])


def test_purity_hand_worked_and_against_contingency_matrix():
    labels = [0, 0, 1, 1, 1, 2]
    clusters = [0, 0, 0, 1, 1, 1]
    # cluster 0 = {0, 0, 1}: majority 2; cluster 1 = {1, 1, 2}: majority 2 -> 4 / 6
    assert purity_score(labels, clusters) == pytest.approx(4 / 6)
    rng = np.random.default_rng(4)
    labels, clusters = rng.integers(0, 5, 100), rng.integers(0, 7, 100)
    table = contingency_matrix(labels, clusters)
    assert purity_score(labels, clusters) == pytest.approx(table.max(axis=0).sum() / 100)


def test_clustering_metrics_on_separated_and_random_features():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 25)
    centres = rng.normal(size=(4, 6)) * 20
    separated = centres[labels] + rng.normal(size=(100, 6))
    result = clustering_metrics(separated, labels)
    assert result == {"NMI": pytest.approx(100.0), "Purity": pytest.approx(100.0)}

    from sklearn.cluster import KMeans

    noise = rng.normal(size=(100, 6))
    clusters = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(noise)
    result = clustering_metrics(noise, labels)
    assert result["NMI"] == pytest.approx(100 * normalized_mutual_info_score(labels, clusters))
    assert result["NMI"] < 20


def test_linear_probe_accuracy():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(3), 40)
    features = np.eye(3)[labels] * 5 + rng.normal(size=(120, 3))
    assert linear_probe_accuracy(features[::2], labels[::2], features[1::2], labels[1::2]) > 95
    shuffled = rng.permutation(labels)
    assert linear_probe_accuracy(features[::2], shuffled[::2], features[1::2], shuffled[1::2]) < 70
    # tiny absolute differences (a nearly collapsed embedding) are still found
    nearly_collapsed = 1 + 1e-4 * features
    train, test = nearly_collapsed[::2], nearly_collapsed[1::2]
    assert linear_probe_accuracy(train, labels[::2], test, labels[1::2]) > 95


def test_ranked_gallery_drops_the_query_itself_and_pads_short_galleries():
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0]], dtype=np.float32)
    ranked = ranked_gallery(queries, gallery, depth=3, query_ids=["a", "z"], gallery_ids=["a", "b", "c"])
    # "a" is query 0 itself: removed, its place at the end left empty; "z" is not in the gallery
    np.testing.assert_array_equal(ranked, [[1, 2, -1], [2, 1, 0]])


def test_modality_set_share_hand_worked():
    # gallery: 2 text-only items (rows 0, 1), 2 with text+image (2, 3)
    gallery_sets = np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 0, 1, 0, 0]])
    query_sets = np.array([[1, 0, 0, 0, 0], [1, 0, 1, 0, 0]])
    ranked = np.array([[0, 1, 2, -1], [0, 2, 1, 3]])
    share = modality_set_share(ranked, query_sets, gallery_sets, k=3)
    # query 0: 2 of its 3 found items are text-only; query 1: 1 of 3 has text+image
    assert share["top_share"] == pytest.approx(100 * (2 / 3 + 1 / 3) / 2)
    assert share["gallery_share"] == pytest.approx(50.0)
    assert share["ratio"] == pytest.approx(1.0)
    favouring = modality_set_share(np.array([[0, 1, 2], [2, 3, 0]]), query_sets, gallery_sets, k=2)
    assert favouring["top_share"] == pytest.approx(100.0) and favouring["ratio"] == pytest.approx(2.0)
    image_only = modality_set_share(ranked, np.array([[0, 0, 1, 0, 0]] * 2), gallery_sets, k=3)
    assert image_only == {"top_share": 0.0, "gallery_share": 0.0, "ratio": None}


def test_modality_set_share_edges_default_k_and_float_masks():
    gallery_sets = np.array([[1.0, 0, 0, 0, 0]] * 11 + [[1.0, 0, 1, 0, 0]])  # 0./1. masks work like 0/1
    # query 0 holds all five modalities (no gallery item does); query 1 finds a single item, text-only
    query_sets = np.array([[1.0, 1, 1, 1, 1], [1.0, 0, 0, 0, 0]])
    ranked = np.array([list(range(12)), [3] + [-1] * 11])
    share = modality_set_share(ranked, query_sets, gallery_sets)  # k = 10 by default
    assert share["top_share"] == pytest.approx((0 + 100) / 2)
    assert share["gallery_share"] == pytest.approx((0 + 100 * 11 / 12) / 2)
    text_image = np.array([[1.0, 0, 1, 0, 0]])
    only_the_eleventh = modality_set_share(np.array([[0] * 10 + [11]]), text_image, gallery_sets)
    assert only_the_eleventh["top_share"] == 0.0  # item 11 is past the default top 10


def test_ranking_edges_no_positive_no_query_and_too_short_hit_lists():
    from train.metrics import ranking_metrics

    hits = np.array([[True, False, True], [False, False, False]])
    scores = ranking_metrics(hits, np.array([2, 0]), np.array([3, 3]), ks=(3,))
    # query 0: k' = min(3, 2 positives) = 2, one hit in the top 2 -> AP 1, Prec 1/2; query 1 has none: 0
    assert scores["mAP@3"] == pytest.approx(100 * (1 + 0) / 2)
    assert scores["Prec@3"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert ranking_metrics(np.zeros((0, 3), bool), np.zeros(0), np.zeros(0), ks=(1,)) == {
        "mAP@1": 0.0,
        "Prec@1": 0.0,
    }
    with pytest.raises(ValueError, match=r"^hit lists of length 3 are too short for k=5$"):
        ranking_metrics(hits, np.array([5, 5]), np.array([9, 9]), ks=(5,))


def test_retrieval_ids_must_come_in_pairs_of_the_right_lengths():
    embeds, labels = np.eye(3, dtype=np.float32), [0, 1, 0]
    with pytest.raises(ValueError, match=r"^pass both query_ids and gallery_ids \(to remove"):
        retrieval_metrics(embeds, labels, embeds, labels, query_ids=["a", "b", "c"])
    with pytest.raises(
        ValueError, match=r"^query_ids / gallery_ids must match the number of query / gallery"
    ):
        retrieval_metrics(embeds, labels, embeds, labels, query_ids=["a", "b"], gallery_ids=["a", "b", "c"])


def test_self_removal_when_the_querys_own_item_sorts_first():
    """The query's (id, label) pair sorts first in the gallery: its own item still leaves the positives."""
    query = np.array([[1.0, 0.0, 0.0]], np.float32)
    gallery = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], np.float32)
    scores = retrieval_metrics(
        query, [0], gallery, [0, 0, 1], ks=(1, 5), query_ids=["a"], gallery_ids=["a", "b", "c"]
    )
    # without "a": one positive (b), ranked first -> k' = 1 for every k
    assert scores["Prec@1"] == scores["Prec@5"] == scores["mAP@5"] == pytest.approx(100.0)
    assert scores["queries_without_positives"] == 0


def test_clustering_purity_of_an_impure_split_and_the_cluster_count_bounds():
    embeds = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
    labels = [0, 0, 0, 1]
    # clusters {0, 1} (labels 0, 0) and {2, 3} (labels 0, 1): 3 of 4 items share their cluster's majority
    assert clustering_metrics(embeds, labels)["Purity"] == pytest.approx(75.0)
    assert clustering_metrics(embeds, labels, n_clusters=1)["Purity"] == pytest.approx(75.0)
    assert clustering_metrics(embeds, labels, n_clusters=4)["Purity"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"^n_clusters must lie in \[1, 4\] \(number of items\), got 5$"):
        clustering_metrics(embeds, labels, n_clusters=5)
