"""train/evaluation.py's wiring on a hand-made gallery with known answers: coarse retrieval matches on the
category and fine-grained on the product instance, a query's own item is removed from its ranking, each
split's rows are looked up by item id, and label -1 items stay out of the probe and the clustering.

Only the embedding extractor is replaced (by a table of chosen vectors); splits, metrics, probe and
clustering are the real ones."""

from argparse import Namespace

import numpy as np
import pytest
from datasets import Dataset

import train.evaluation as evaluation

DIM = 8


def e(*weights: tuple[int, float]) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    for axis, weight in weights:
        vector[axis] = weight
    return vector


# item id -> (category label, product instance, embedding)
ITEMS = {
    # coarse: each query's nearest other item has its category but another instance
    "c1": (0, 10, e((1, 1))),
    "c2": (1, 11, e((2, 1))),
    "d1": (0, 12, e((1, 1), (4, 0.2))),
    "d2": (1, 13, e((2, 1), (4, 0.2))),
    "d3": (0, 14, e((3, 1))),
    # fine: p1a's nearest other item is another category (y), p2a's the same category but another instance
    # (x); only p3a's nearest (p3b) is its own instance. p1a is in the gallery too.
    "p1a": (0, 1, e((1, 1))),
    "y": (1, 4, e((1, 1), (4, 0.1))),
    "p1b": (0, 1, e((1, 1), (4, 0.3))),
    "p2a": (0, 2, e((2, 1))),
    "x": (0, 3, e((2, 1), (4, 0.1))),
    "p2b": (0, 2, e((2, 1), (4, 0.3))),
    "p3a": (1, 5, e((3, 1))),
    "p3b": (1, 5, e((3, 1), (4, 0.1))),
    # classification: two clean classes; the unlabelled (-1) items sit where a wrong class would be learned
    **{f"t{k}": (0, 20 + k, e((5, 1), (6, 0.1 * k))) for k in range(4)},
    **{f"t{k}": (1, 20 + k, e((7, 1), (6, 0.1 * k))) for k in range(4, 8)},
    "u0": (-1, 30, e((5, 1), (6, 0.15))),
    "u1": (-1, 31, e((5, 1), (6, 0.25))),
    "s0": (0, 40, e((5, 1), (6, 0.05))),
    "s1": (0, 41, e((5, 1), (6, 0.35))),
    "s2": (1, 42, e((7, 1), (6, 0.05))),
    "s3": (1, 43, e((7, 1), (6, 0.35))),
    "v0": (-1, 44, e((7, 1), (6, 0.2))),
}
SPLITS = {
    ("retrieval_coarse", "query"): ["c1", "c2"],
    ("retrieval_coarse", "gallery"): ["c1", "d1", "d2", "d3"],
    ("retrieval_fine", "query"): ["p1a", "p2a", "p3a"],
    ("retrieval_fine", "gallery"): ["p3b", "x", "p1a", "y", "p2b", "p1b"],
    ("classification", "train"): ["t0", "t4", "u0", "t1", "t5", "t2", "t6", "u1", "t3", "t7"],
    ("classification", "test"): ["s2", "s0", "v0", "s3", "s1"],
}


def fake_split(data_dir: str, config: str, split: str) -> Dataset:
    ids = SPLITS[config, split]
    return Dataset.from_dict(
        {"item_id": ids, "label": [ITEMS[i][0] for i in ids], "instance_id": [ITEMS[i][1] for i in ids]}
    )


def table_embeddings(model, processor, items, modalities, **kwargs) -> dict:
    """The extractor's output for `items`, in their order (the union of the splits, not any one split)."""
    ids = list(items["item_id"])
    return {
        "item_ids": ids,
        "product_embeds": np.stack([ITEMS[i][2] for i in ids]),
        "modality_embeds": np.stack([np.stack([ITEMS[i][2]] * 5) for i in ids]),
        "alignment_scores": np.ones((len(ids), 5, 5), np.float32),
        "modality_mask": np.ones((len(ids), 5), np.int64),
    }


@pytest.fixture
def scores(monkeypatch) -> dict:
    monkeypatch.setattr(evaluation, "load_split", fake_split)
    monkeypatch.setattr(evaluation, "extract_embeddings", table_embeddings)
    data = evaluation.SplitEmbeddings("unused", list(SPLITS))
    args = Namespace(batch_size=4, device="cpu", num_workers=0, backend="faiss", features="fused", seed=0)
    return evaluation.evaluate_pretrained(None, None, data, ("text",), args)[0]


def test_coarse_retrieval_matches_on_the_category(scores):
    # c1 -> d1 and c2 -> d2: same category (hit), other instance (a miss if matched on the instance)
    assert scores["coarse"]["mAP@1"] == pytest.approx(100.0)
    assert scores["coarse"]["num_queries"] == 2


def test_fine_retrieval_matches_on_the_instance_without_the_query_itself(scores):
    """p1a -> y (other category), p2a -> x (same category, other instance), p3a -> p3b (its instance): one hit
    in three. Matching on the category, or leaving p1a in its own ranking, gives two."""
    assert scores["fine"]["mAP@1"] == pytest.approx(100 / 3)
    assert scores["fine"]["Prec@1"] == pytest.approx(100 / 3)
    assert scores["fine"]["queries_without_positives"] == 0


def test_unlabelled_items_stay_out_of_the_probe_and_the_clustering(scores):
    assert scores["linear_probe_accuracy"] == pytest.approx(100.0)
    assert scores["clustering"]["NMI"] == pytest.approx(100.0)
    assert scores["clustering"]["Purity"] == pytest.approx(100.0)


def test_format_tables_puts_each_number_in_its_cell():
    def row(coarse: float, fine: float, probe: float) -> dict:
        columns = evaluation.RETRIEVAL_COLUMNS
        return {
            "coarse": {c: coarse + i for i, c in enumerate(columns)},
            "fine": {c: fine + i for i, c in enumerate(columns)},
            "linear_probe_accuracy": probe,
            "clustering": {"NMI": 55.5, "Purity": 66.25},
        }

    results = {
        "combinations": [["text"], ["text", "image"]],
        "pretrained": {"T": row(10, 20, 30), "T+I": row(40, 50, 60)},
        "finetuned": {"T+I": {**row(70, 80, 0), "accuracy": 90}},
        "pretrained_features": "fused",
    }
    lines = evaluation.format_tables(results).splitlines()

    def cells(first: int, second: int | None = None) -> str:
        if second is None:
            return " | ".join(f"{first + i}.00" for i in range(6))
        return " | ".join(f"{first + i}.00 / {second + i}.00" for i in range(6))

    # Table 3: pretrained / fine-tuned coarse retrieval; accuracy of the fine-tuned model when there is one
    assert f"| T | 30.00 | {cells(10)} |" in lines
    assert f"| +I | 90.00 | {cells(40, 70)} |" in lines
    # Table 4: coarse / fine of the fine-tuned model where there is one, else of the pretrained one
    assert f"| T | 30.00 | {cells(10, 20)} |" in lines
    assert f"| T+I | 90.00 | {cells(70, 80)} |" in lines
    # Table 5: pretrained mAP@1 coarse, probe, NMI, Purity
    assert "| T+I | 40.00 | 60.00 | 55.50 | 66.25 |" in lines


def test_cross_subset_scores_rank_subset_queries_against_the_full_gallery(monkeypatch):
    """Coarse queries c1 (category 0) and c2 (1) against the gallery c1, d1, d2, d3 embedded from all their
    modalities: d1 holds only a caption, d2 a caption and an image, c1 and d3 all five."""
    monkeypatch.setattr(evaluation, "load_split", fake_split)
    data = evaluation.SplitEmbeddings("unused", list(SPLITS))
    query_key, gallery_key = evaluation.COARSE_SPLITS

    def split(ids: list[str], sets: list[list[int]]) -> dict:
        return {"product_embeds": np.stack([ITEMS[i][2] for i in ids]), "modality_mask": np.array(sets)}

    everything, caption = [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]
    gallery_sets = [everything, caption, [1, 0, 1, 0, 0], everything]
    coarse = {frozenset(evaluation.MODALITIES): {gallery_key: split(SPLITS[gallery_key], gallery_sets)}}
    for combination in evaluation.CROSS_SUBSET_QUERIES:
        sets = [[int(m in combination) for m in evaluation.MODALITIES]] * 2
        coarse[frozenset(combination)] = {
            query_key: split(SPLITS[query_key], sets),
            # like-for-like: the gallery embedded from the subset; here d1 and d2 swap places, so that every
            # query's nearest item is of the other category
            gallery_key: split(["c1", "d2", "d1", "d3"], sets * 2),
        }
    rows = evaluation.cross_subset_scores(data, coarse, "fused", "faiss")
    assert set(rows) == {"T", "I", "T+I", "T+I+Tab"}
    text = rows["T"]
    assert text["cross"]["mAP@1"] == pytest.approx(100.0)  # c1 -> d1, c2 -> d2 (c1 itself removed)
    # c1's top 10 is d1, d2, d3 (one caption-only item of three), c2's all four items (one of four)
    assert text["modality_set"]["top_share"] == pytest.approx(100 * (1 / 3 + 1 / 4) / 2)
    assert text["modality_set"]["gallery_share"] == pytest.approx(25.0)
    assert text["like_for_like"]["mAP@1"] == pytest.approx(0.0)
    assert rows["T+I"]["modality_set"]["gallery_share"] == pytest.approx(25.0)
    assert rows["I"]["modality_set"]["top_share"] == 0.0  # no gallery item holds only an image


def test_unreadable_inputs_are_collected_over_every_extraction(monkeypatch):
    def with_a_failure(model, processor, items, modalities, **kwargs) -> dict:
        result = table_embeddings(model, processor, items, modalities)
        result["input_failures"] = [{"item_id": "d3", "modality": "image", "reason": "cut JPEG"}]
        return result

    monkeypatch.setattr(evaluation, "load_split", fake_split)
    monkeypatch.setattr(evaluation, "extract_embeddings", with_a_failure)
    data = evaluation.SplitEmbeddings("unused", list(SPLITS))
    data.embed(None, None, ("image",), Namespace(batch_size=4, device="cpu", num_workers=0))
    data.embed(None, None, ("text", "image"), Namespace(batch_size=4, device="cpu", num_workers=0))
    assert [failure["item_id"] for failure in data.input_failures] == ["d3", "d3"]
