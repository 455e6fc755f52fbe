"""The `evaluate` module of the paper's retrieval metric: loads offline from its folder and gives exactly the
numbers of `train.metrics.retrieval_metrics` (the project's reference implementation)."""

import shutil
from pathlib import Path

import evaluate
import numpy as np
import pytest

from train.metrics import retrieval_metrics

MODULE = Path(__file__).resolve().parents[1] / "train" / "m5product_retrieval"


@pytest.fixture(scope="module")
def metric(tmp_path_factory):
    """Loaded from a copy of the folder, as a user who downloaded it would (no network, no project)."""
    folder = tmp_path_factory.mktemp("published") / "m5product_retrieval"
    shutil.copytree(MODULE, folder)
    return evaluate.load(str(folder))


def random_case(seed: int, queries: int = 40, gallery: int = 120, labels: int = 7, dim: int = 16):
    rng = np.random.default_rng(seed)
    gallery_embeds = rng.normal(size=(gallery, dim)).astype(np.float32)
    gallery_labels = rng.integers(0, labels, gallery)
    picked = rng.choice(gallery, queries, replace=False)  # queries are gallery items (as in the sample)
    query_embeds = gallery_embeds[picked] + 0.3 * rng.normal(size=(queries, dim)).astype(np.float32)
    query_labels = gallery_labels[picked]
    query_labels[:3] = labels + 1  # queries without any positive
    return query_embeds, query_labels, gallery_embeds, gallery_labels, picked


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_ids", [False, True])
def test_module_agrees_with_train_metrics(metric, seed, with_ids):
    queries, query_labels, gallery, gallery_labels, picked = random_case(seed)
    ids = {}
    if with_ids:
        ids = {
            "query_ids": [f"item{i}" for i in picked],
            "gallery_ids": [f"item{i}" for i in range(len(gallery))],
        }
    expected = retrieval_metrics(
        queries, query_labels, gallery, gallery_labels, ks=(1, 5, 10), backend="torch", **ids
    )
    got = metric.compute(
        predictions=queries,
        references=[str(label) for label in query_labels],
        gallery_embeddings=gallery,
        gallery_labels=[str(label) for label in gallery_labels],
        ks=[1, 5, 10],
        **ids,
    )
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["queries_without_positives"] == 3


def test_hand_computed_ranking(metric):
    # query q (label a) against a, b, a, a (scores 4, 3, 2, 1), its own item "q" (score 5) in the gallery
    gallery = np.array([[4.0], [3.0], [2.0], [1.0], [5.0]], np.float32)
    result = metric.compute(
        predictions=[[1.0]],
        references=["a"],
        gallery_embeddings=gallery,
        gallery_labels=["a", "b", "a", "a", "a"],
        query_ids=["q"],
        gallery_ids=["x1", "x2", "x3", "x4", "q"],
        ks=[1, 5],
    )
    # k' = min(5, 3 positives) = 3: hits at ranks 1, 3 -> Prec 2/3, AP (1/1 + 2/3) / 2
    assert result["mAP@1"] == pytest.approx(100.0) and result["Prec@1"] == pytest.approx(100.0)
    assert result["Prec@5"] == pytest.approx(100 * 2 / 3)
    assert result["mAP@5"] == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_module_folder_is_self_contained():
    source = (MODULE / "m5product_retrieval.py").read_text()
    assert "import train" not in source and "from train" not in source and "modeling_scale" not in source
