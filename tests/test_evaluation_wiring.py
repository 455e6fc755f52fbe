"""train/evaluation.py's wiring on a hand-made gallery with known answers: coarse retrieval matches on the
category and fine-grained on the product instance, a query's own item is removed from its ranking, each
split's rows are looked up by item id, and label -1 items stay out of the probe and the clustering.

Only the embedding extractor is replaced (by a table of chosen vectors); splits, metrics, probe and
clustering are the real ones."""

import contextlib
import io
import json
from argparse import Namespace

import numpy as np
import pytest
import torch
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
    assert data_dir == "unused"  # the folder the caller was given
    ids = SPLITS[config, split]
    return Dataset.from_dict(
        {
            "item_id": ids,
            "caption": [f"caption of {i}" for i in ids],
            "label": [ITEMS[i][0] for i in ids],
            "instance_id": [ITEMS[i][1] for i in ids],
        }
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
        "combinations": [["text"], ["text", "image"], ["text", "image", "table"]],
        "pretrained": {"T": row(10, 20, 30), "T+I": row(40, 50, 60), "T+I+Tab": row(1, 2, 3)},
        "finetuned": {"T+I": {**row(70, 80, 0), "accuracy": 90}},
        "pretrained_features": "fused",
        "baselines": {"random": row(5, 6, 7)},
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
    # each table's header; Table 3 names each row by the modality it adds; the baselines come after Table 5
    header = "| Accuracy | mAP@1 | mAP@5 | mAP@10 | Prec@1 | Prec@5 | Prec@10 |"
    assert lines[2:4] == [f"| Modality {header}", "|---|---|---|---|---|---|---|---|"]
    assert f"| +Tab | 3.00 | {cells(1)} |" in lines
    assert f"| Modality Combinations {header}" in lines
    random_row = "| random | 5.00 | 7.00 | 10.00 | 6.00 | 7.00 | 55.50 | 66.25 |"
    assert lines.index("| Modalities | mAP@1 | Accuracy | NMI | Purity |") < lines.index(random_row)
    assert lines[0].startswith("**Table 3**") and evaluation._cell(None) == "–"
    assert evaluation._cell(None, 2.0) == "– / 2.00"
    # the captions say where the paper's protocol lives and which accuracy each table shows
    assert "`python -m train.ablation --tables 3`); coarse retrieval" in lines[0]
    assert lines[0].endswith(
        "accuracy: fine-tuned classifier, or the linear probe when no fine-tuned model is given"
    )
    table4 = "**Table 4** — modality combinations (retrieval coarse / fine-grained, "
    assert f"{table4}fine-tuned features; accuracy: fine-tuned classifier)" in lines
    del results["finetuned"]
    assert (
        f"{table4}pretrained features; accuracy: linear probe)"
        in evaluation.format_tables(results).splitlines()
    )


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


def test_simcl_features_average_the_normalised_features_of_present_modalities():
    modality_embeds = np.zeros((2, 5, DIM), np.float32)
    modality_embeds[:, 0], modality_embeds[:, 2], modality_embeds[:, 4] = e((0, 2)), e((1, 5)), e((3, 9))
    mask = np.array([[1, 0, 1, 0, 0], [0, 0, 1, 0, 0]])  # the audio feature belongs to no present modality
    expected = [e((0, 0.5), (1, 0.5)), e((1, 1))]
    np.testing.assert_allclose(evaluation.simcl_features(modality_embeds, mask), expected)
    nothing = evaluation.simcl_features(modality_embeds, np.zeros((2, 5)))
    np.testing.assert_allclose(nothing, np.zeros((2, DIM)))


# the whole evaluation, from the command line to results.json, results.md, plots and model cards, with the
# extractor and the models replaced by tables: "d1" and "d2" trade embeddings where the pretrained model lacks
# the caption and where the fine-tuned one has it, so each row's coarse mAP@1 says which embeddings it used
SWAPPED = {**{i: item[2] for i, item in ITEMS.items()}, "d1": ITEMS["d2"][2], "d2": ITEMS["d1"][2]}
MAX_TEXT_LENGTH = 17


class FakeModel:
    """What evaluate() reads of a model: its config's text length, its modality weights and, fine-tuned, its
    classifier."""

    def __init__(self, fine_tuned: bool):
        self.fine_tuned = fine_tuned
        self.config = Namespace(max_text_length=MAX_TEXT_LENGTH)
        weights = torch.tensor([1.5, 1.0, 0.5, 1.0, 1.0])
        self.base_model = Namespace(modality_weights=Namespace(weights=weights))
        self.classifier = torch.nn.Linear(DIM, 2, bias=False)
        with torch.no_grad():  # class 0 along axis 5, class 1 along axis 7
            self.classifier.weight.copy_(torch.from_numpy(np.stack([e((5, 1)), e((7, 1))])))


def modality_embeddings(model, processor, items, modalities, **kwargs) -> dict:
    ids = list(items["item_id"])
    vectors = SWAPPED if ("text" in modalities) == model.fine_tuned else {i: ITEMS[i][2] for i in ids}
    labels = np.array([ITEMS[i][0] for i in ids])
    mask = np.array([[int(m in modalities) for m in evaluation.MODALITIES] for _ in ids])
    mask[labels == 1, 4] = 0  # category-1 items have no audio,
    mask[labels != 1, 3] = 0  # and the others no video: no item holds both
    modality_embeds = np.stack([[ITEMS[i][2]] + [SWAPPED[i]] * 4 for i in ids])  # text right, others swapped
    return {
        "item_ids": ids,
        "product_embeds": np.stack([vectors[i] for i in ids]),
        "modality_embeds": modality_embeds,
        "alignment_scores": np.ones((len(ids), 5, 5), np.float32) * (1 + (labels == 1))[:, None, None],
        "modality_mask": mask,
        "input_failures": [{"item_id": "d3", "modality": "image", "reason": "cut"}]
        if "d3" in ids and "image" in modalities
        else [],
    }


@pytest.fixture
def evaluation_run(tmp_path, monkeypatch):
    """evaluate() through main(): (results.json, output folder, model folders, load calls, encoder calls,
    stdout). Per test, not per module: mutation testing runs for a function only the tests during which it
    ran, so a module fixture's work would count for its first test alone."""
    loaded, encoded, extracted = [], [], []

    def recording_extractor(model, processor, items, modalities, **kwargs) -> dict:
        assert processor == f"processor of {model.fine_tuned}"  # the model's own
        assert kwargs["normalize"] is False  # the probe and the classifier read raw embeddings
        extracted.append((model.fine_tuned, "+".join(modalities), set(items["item_id"])))
        return modality_embeddings(model, processor, items, modalities, **kwargs)

    def load_model(path, head, device):
        loaded.append((path, head, str(device)))
        model = FakeModel(fine_tuned=head == "classification")
        return model, f"processor of {model.fine_tuned}"

    def frozen_text_encoder(encoder_dir, captions, max_length, batch_size, device):
        encoded.append((encoder_dir, max_length, batch_size, str(device)))
        return np.stack([ITEMS[caption.removeprefix("caption of ")][2] for caption in captions])

    monkeypatch.setattr(evaluation, "load_split", fake_split)
    monkeypatch.setattr(evaluation, "extract_embeddings", recording_extractor)
    monkeypatch.setattr(evaluation, "load_model", load_model)
    monkeypatch.setattr(evaluation, "text_encoder_embeddings", frozen_text_encoder)
    pretrained, finetuned, output = tmp_path / "pretrained", tmp_path / "finetuned", tmp_path / "eval"
    pretrained.mkdir(), finetuned.mkdir()
    argv = ["--model_dir", str(pretrained), "--finetuned_dir", str(finetuned), "--data_dir", "unused"]
    argv += ["--output_dir", str(output), "--combinations", "text;image", "--device", "cpu"]
    argv += ["--backend", "faiss", "--text_encoder", "frozen-bert", "--batch_size", "4"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluation.main(argv)
    results = json.loads((output / "results.json").read_text())
    return results, output, pretrained, finetuned, loaded, encoded, printed.getvalue(), extracted


def test_evaluate_scores_each_model_and_combination_from_its_own_embeddings(evaluation_run):
    results, _, pretrained, finetuned, loaded, encoded, _, extracted = evaluation_run
    # each model embeds each modality set once, reusing them for the cross-subset rows; the fine-tuned
    # model skips the probe's training items (classification/train holds t0, t1, ...)
    every = {i for ids in SPLITS.values() for i in ids}
    no_probe = {i for key, ids in SPLITS.items() if key != ("classification", "train") for i in ids}
    coarse = set(SPLITS["retrieval_coarse", "query"] + SPLITS["retrieval_coarse", "gallery"])
    everything = "text+table+image+video+audio"
    assert extracted == [
        (False, "text", every),
        (False, "image", every),
        (False, everything, every),
        (False, "text+image", coarse),
        (False, "text+image+table", coarse),
        (True, "text", no_probe),
        (True, "image", no_probe),
        (True, "text+image", coarse),
        (True, "text+image+table", coarse),
        (True, everything, coarse),
    ]
    assert loaded == [(str(pretrained), "base", "cpu"), (str(finetuned), "classification", "cpu")]
    assert results["combinations"] == [["text"], ["image"]]
    weights = {"text": 1.5, "table": 1.0, "image": 0.5, "video": 1.0, "audio": 1.0}
    assert results["modality_weights"] == weights
    assert results["split_sizes"] == {f"{c}/{s}": len(ids) for (c, s), ids in SPLITS.items()}
    coarse = {
        (features, name): row["coarse"]["mAP@1"]
        for features in ("pretrained", "finetuned")
        for name, row in results[features].items()
    }
    # d1 and d2 in place: both coarse queries find their category (not their instance); traded: both miss
    assert coarse == {
        ("pretrained", "T"): 100.0,
        ("pretrained", "I"): 0.0,
        ("finetuned", "T"): 0.0,
        ("finetuned", "I"): 100.0,
    }
    for features in ("pretrained", "finetuned"):
        for row in results[features].values():
            assert row["fine"]["mAP@1"] == pytest.approx(100 / 3)
    assert results["pretrained"]["T"]["linear_probe_accuracy"] == 100.0
    assert results["pretrained"]["T"]["clustering"] == {"NMI": pytest.approx(100.0), "Purity": 100.0}
    # the fine-tuned classifier on the test items with a label (v0, label -1, would be a miss)
    assert results["finetuned"]["T"]["accuracy"] == 100.0
    assert "linear_probe_accuracy" not in results["finetuned"]["T"]
    # d3's image fails in each extraction with images that reaches the coarse gallery: pretrained I, all
    # five, T+I, T+I+Tab; fine-tuned the same four (all five extracted again: its embeddings differ)
    assert results["input_failures"]["count"] == 8
    assert {f["item_id"] for f in results["input_failures"]["items"]} == {"d3"}
    assert results["pretrained_features"] == "fused" and results["finetuned_dir"] == str(finetuned)
    assert results["model_dir"] == str(pretrained) and results["data_dir"] == "unused"
    assert isinstance(results["seconds"], float) and results["seconds"] >= 0


def test_evaluate_adds_baselines_cross_subset_rows_and_the_mean_s(evaluation_run):
    results, output, pretrained, finetuned, _, encoded, printed, _ = evaluation_run
    assert encoded == [("frozen-bert", MAX_TEXT_LENGTH, 4, "cpu")]
    baselines = results["baselines"]
    assert list(baselines) == [
        "frozen text encoder (T)",
        *(f"SCALE {m} feature" for m in evaluation.MODALITIES),
        "random",
    ]
    assert baselines["frozen text encoder (T)"]["coarse"]["mAP@1"] == 100.0
    assert baselines["SCALE text feature"]["coarse"]["mAP@1"] == 100.0
    assert baselines["SCALE image feature"]["coarse"]["mAP@1"] == 0.0
    assert baselines["frozen text encoder (T)"]["fine"]["mAP@1"] == pytest.approx(100 / 3)
    # cross-subset: queries c1, c2 are not swapped, so only the gallery decides
    pretrained_rows = results["cross_subset"]["pretrained"]
    finetuned_rows = results["cross_subset"]["finetuned"]
    assert list(pretrained_rows) == ["T", "I", "T+I", "T+I+Tab"]
    assert pretrained_rows["I"]["cross"]["mAP@1"] == 100.0  # full gallery: embedded with its caption
    assert pretrained_rows["I"]["like_for_like"]["mAP@1"] == 0.0  # gallery from the image only
    assert pretrained_rows["T+I"]["like_for_like"]["mAP@1"] == 100.0
    assert finetuned_rows["T"]["cross"]["mAP@1"] == 0.0
    # the fine-tuned rows use its fused embeddings (without the caption: right), not SIMCL's features
    assert finetuned_rows["T"]["like_for_like"]["mAP@1"] == 0.0
    assert finetuned_rows["I"]["like_for_like"]["mAP@1"] == 100.0
    # the gallery's own-set share: only d2 (category 1, no audio) holds text, table, image and video
    assert pretrained_rows["T+I+Tab"]["modality_set"]["gallery_share"] == 0.0
    # mean S over every split row that holds both modalities (category-1 items: S = 2 and no audio)
    labels = np.array([ITEMS[i][0] for ids in SPLITS.values() for i in ids])
    matrix = np.array(results["alignment_matrix"]["mean_S"], dtype=float)
    assert matrix[0, 0] == pytest.approx(1 + (labels == 1).mean())
    assert matrix[4, 4] == pytest.approx(1.0) and matrix[0, 4] == pytest.approx(1.0)
    assert results["alignment_matrix"]["mean_S"][3][4] is None  # JSON null, not NaN: no item holds both
    assert results["alignment_matrix"]["combination"] == "T+Tab+I+V+A"
    for name in ("alignment_matrix.png", "tsne.png"):
        assert (output / name).stat().st_size > 1000
    # the tables: on disk, printed, and in both model cards
    markdown = (output / "results.md").read_text()
    assert markdown == evaluation.format_tables(results) and markdown in printed
    assert f"results in {output}/results.{{json,md}} ({results['seconds']} s)" in printed
    assert "| frozen text encoder (T) | 100.00 |" in markdown
    assert "| pretrained | I | 100.00 |" in markdown
    assert "`product_embeds` (fitted, no labels): text 1.50, table 1.00, image 0.50, video 1.00" in markdown
    assert markdown in (pretrained / "README.md").read_text()
    assert markdown in (finetuned / "README.md").read_text()


def test_evaluate_leaves_out_what_it_is_told_to(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "load_split", fake_split)
    monkeypatch.setattr(evaluation, "extract_embeddings", modality_embeddings)
    monkeypatch.setattr(
        evaluation, "load_model", lambda path, head, device: (FakeModel(False), "processor of False")
    )
    model_dir = tmp_path / "pretrained"
    model_dir.mkdir()
    (tmp_path / "eval").mkdir()  # a second evaluation writes into the folder of the first
    args = evaluation.parse_args(
        ["--model_dir", str(model_dir), "--output_dir", str(tmp_path / "eval"), "--data_dir", "unused"]
        + ["--combinations", "text", "--no_baselines", "--no_plots", "--no_model_card", "--features", "simcl"]
        + ["--backend", "faiss"]
    )
    results = evaluation.evaluate(args)
    assert "baselines" not in results and "alignment_matrix" not in results
    assert results["finetuned"] == {} and list(results["cross_subset"]) == ["pretrained"]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["results.json", "results.md"]
    assert not (model_dir / "README.md").exists()
    # simcl features: the mean of the per-modality features, of which only the caption's is in place
    assert results["pretrained"]["T"]["coarse"]["mAP@1"] == 100.0
    assert results["pretrained_features"] == "simcl"


def test_parse_args_defaults_are_the_documented_ones():
    args = evaluation.parse_args([])
    assert (args.model_dir, args.finetuned_dir, args.output_dir) == ("outputs/pretrain", None, "outputs/eval")
    assert (args.combinations, args.batch_size, args.num_workers, args.seed) == ("table3", 64, 0, 0)
    assert (args.backend, args.features, args.device) == ("auto", "fused", evaluation.default_device())
    assert args.text_encoder == evaluation.default_text_encoder()
    assert not (args.no_baselines or args.no_plots or args.no_model_card)
    assert evaluation.parse_args(["--device", "cpu"]).device == torch.device("cpu")
    assert args.data_dir == evaluation.DEFAULT_DATA_DIR
    assert evaluation.parse_args(["--num_workers", "3"]).num_workers == 3
    assert evaluation.parse_args(["--features", "fused"]).features == "fused"
    with pytest.raises(SystemExit):
        evaluation.parse_args(["--features", "pooled"])


def test_classifier_accuracy_counts_only_labelled_items(monkeypatch):
    def unnormalised_embeddings(model, processor, items, modalities, **kwargs) -> dict:
        assert processor == "processor of False" and modalities == ("text",)
        assert kwargs == {
            "batch_size": 4,
            "device": "cpu",
            "normalize": False,
        }  # the head reads raw embeddings
        return modality_embeddings(model, processor, items, modalities)

    monkeypatch.setattr(evaluation, "extract_embeddings", unnormalised_embeddings)
    test = fake_split("unused", "classification", "test")
    assert (
        evaluation.classifier_accuracy(FakeModel(False), "processor of False", test, ("text",), 4, "cpu")
        == 100.0
    )
    unlabelled = test.filter(lambda row: row["label"] < 0)
    assert (
        evaluation.classifier_accuracy(
            FakeModel(False), "processor of False", unlabelled, ("text",), 4, "cpu"
        )
        == 0.0
    )


def test_alignment_plot_writes_each_known_value_in_its_cell(tmp_path):
    matrix = np.arange(25, dtype=float).reshape(5, 5) / 8
    matrix[1, 3] = np.nan  # no item has both modalities
    path = tmp_path / "alignment.png"
    axis = evaluation.plot_alignment(matrix, str(path)).axes[0]
    cells = {
        (round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axis.texts
    }
    assert cells == {(i, j): f"{matrix[i, j]:.2f}" for i in range(5) for j in range(5) if (i, j) != (1, 3)}
    np.testing.assert_array_equal(axis.images[0].get_array().filled(np.nan), matrix)
    assert [label.get_text() for label in axis.get_xticklabels()] == list(evaluation.MODALITIES)
    assert [label.get_text() for label in axis.get_yticklabels()] == list(evaluation.MODALITIES)
    assert axis.get_title() == "SIMCL alignment matrix S (mean)"
    assert path.stat().st_size > 1000


def test_tsne_plot_colours_every_product_by_its_category(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 3, 5], 6)
    embeds = rng.standard_normal((18, DIM)) + 4 * labels[:, None]
    path = tmp_path / "tsne.png"
    axis = evaluation.plot_tsne(embeds, labels, str(path), seed=0).axes[0]
    points = axis.collections[0]
    assert points.get_offsets().shape == (18, 2)
    np.testing.assert_array_equal(points.get_array(), labels)
    assert axis.get_title() == "t-SNE of product embeddings (3 categories)"
    again = evaluation.plot_tsne(embeds, labels, str(path), seed=0).axes[0].collections[0]
    np.testing.assert_array_equal(again.get_offsets(), points.get_offsets())  # the seed fixes the layout
    # the categories stay apart: each point's nearest other point is of its own category
    offsets = np.asarray(points.get_offsets())
    distances = np.linalg.norm(offsets[:, None] - offsets[None], axis=-1) + np.eye(18) * 1e9
    assert (labels[distances.argmin(1)] == labels).all()
    assert path.stat().st_size > 1000


def test_mean_alignment_averages_each_pair_over_the_items_holding_both():
    first, second = np.zeros(5, np.int64), np.zeros(5, np.int64)
    first[[0, 1]], second[[0, 2]] = 1, 1  # text + table, text + image
    embeds = {
        "a": {"alignment_scores": np.full((1, 5, 5), 1.0), "modality_mask": first[None]},
        "b": {"alignment_scores": np.full((1, 5, 5), 3.0), "modality_mask": second[None]},
    }
    matrix = evaluation.mean_alignment(embeds)
    assert (matrix[0, 0], matrix[0, 1], matrix[0, 2], matrix[2, 2]) == (2.0, 1.0, 3.0, 3.0)
    assert np.isnan(matrix[1, 2]) and np.isnan(matrix[3, 3]) and np.isnan(matrix[0, 4])


def test_baselines_skip_a_text_encoder_named_none_and_draw_the_same_random_vectors_for_a_seed(monkeypatch):
    monkeypatch.setattr(evaluation, "load_split", fake_split)
    data = evaluation.SplitEmbeddings("unused", list(SPLITS))
    full = modality_embeddings(FakeModel(False), None, data.items, evaluation.MODALITIES)
    rows = data.rows_by_split(full["item_ids"])
    full_embeds = {
        key: {
            name: value[rows[key]]
            for name, value in full.items()
            if name != "item_ids" and name != "input_failures"
        }
        for key in SPLITS
    }
    args = Namespace(text_encoder="none", batch_size=4, device="cpu", backend="faiss", seed=3)
    first = evaluation.baseline_scores(data, full_embeds, MAX_TEXT_LENGTH, args)
    assert "frozen text encoder (T)" not in first and "random" in first
    assert evaluation.baseline_scores(data, full_embeds, MAX_TEXT_LENGTH, args)["random"] == first["random"]
    args.seed = 4
    assert evaluation.baseline_scores(data, full_embeds, MAX_TEXT_LENGTH, args)["random"] != first["random"]


def test_baseline_and_cross_subset_tables_put_each_number_in_its_cell():
    def row(first: float, accuracy_name: str = "linear_probe_accuracy") -> dict:
        columns = evaluation.RETRIEVAL_COLUMNS
        return {
            "coarse": {c: first + i for i, c in enumerate(columns)},
            "fine": {c: first + 10 + i for i, c in enumerate(columns)},
            accuracy_name: first + 20,
            "clustering": {"NMI": first + 21, "Purity": first + 22},
        }

    full = "T+Tab+I+V+A"
    results = {
        "pretrained": {full: row(1)},
        "finetuned": {full: row(30, "accuracy")},
        "baselines": {"frozen text encoder (T)": row(60), "random": row(90)},
    }
    assert evaluation.baseline_table(results) == [
        "**Baselines** — frozen features scored like SCALE's (coarse and fine retrieval; accuracy: linear "
        "probe, or the fine-tuned classifier where marked; k-means NMI / Purity)",
        "",
        "| Features | coarse mAP@1 | coarse mAP@10 | coarse Prec@10 | fine mAP@1 | Accuracy | NMI | Purity |",
        "|---|---|---|---|---|---|---|---|",
        f"| SCALE pretrained ({full}) | 1.00 | 3.00 | 6.00 | 11.00 | 21.00 | 22.00 | 23.00 |",
        "| frozen text encoder (T) | 60.00 | 62.00 | 65.00 | 70.00 | 80.00 | 81.00 | 82.00 |",
        "| random | 90.00 | 92.00 | 95.00 | 100.00 | 110.00 | 111.00 | 112.00 |",
        f"| SCALE fine-tuned ({full}, classifier accuracy) | 30.00 | 32.00 | 35.00 | 40.00 | 50.00 | – | – |",
    ]
    # without an all-modality model, only the baselines
    only_baselines = evaluation.baseline_table(
        {"pretrained": {"T": row(1)}, "baselines": results["baselines"]}
    )
    assert only_baselines[4:] == [
        "| frozen text encoder (T) | 60.00 | 62.00 | 65.00 | 70.00 | 80.00 | 81.00 | 82.00 |",
        "| random | 90.00 | 92.00 | 95.00 | 100.00 | 110.00 | 111.00 | 112.00 |",
    ]

    def cross_row(first: float) -> dict:
        return {
            "cross": row(first)["coarse"],
            "like_for_like": row(first + 40)["coarse"],
            "modality_set": {"top_share": first + 50, "gallery_share": first + 51, "ratio": first + 52},
        }

    lines = evaluation.cross_subset_table(
        {"pretrained": {"T": cross_row(1)}, "finetuned": {"I": cross_row(2)}}
    )
    assert lines[2:] == [
        "| Features | Query | mAP@1 | mAP@10 | Prec@10 | Prec@10 like-for-like | own-set share top 10 | "
        "own-set share gallery | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
        "| pretrained | T | 1.00 | 3.00 | 6.00 | 46.00 | 51.00 | 52.00 | 53.00 |",
        "| finetuned | I | 2.00 | 4.00 | 7.00 | 47.00 | 52.00 | 53.00 | 54.00 |",
    ]
    assert lines[:2] == [
        "**Cross-subset retrieval** — coarse queries embedded from the listed modalities against the gallery "
        "embedded from every modality it has; like-for-like: the gallery embedded from the query's "
        "modalities; own-set share: % of the top 10 holding exactly the query's modalities, against that "
        "set's % of the gallery",
        "",
    ]
