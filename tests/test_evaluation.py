"""evaluation.py on the tiny sample: the paper's tables, JSON, plots and model cards from real checkpoints;
and embedding extraction (modality subsets, batch-size invariance)."""

import json
from argparse import Namespace

import numpy as np
import pytest
import torch
from datasets import load_dataset
from tiny_m5product import minilm_path, tiny_demo_model_parts, trained_tiny_models
from transformers import AutoModel, AutoProcessor

from train.embeddings import extract_embeddings
from train.evaluation import (
    TABLE3,
    combination_name,
    evaluate,
    format_tables,
    load_model,
    parse_combinations,
)


def test_parse_combinations():
    assert parse_combinations("table3") == list(TABLE3)
    table4 = parse_combinations("table4")
    assert len(table4) == 5 + 9  # Table 3's five + the nine other combinations of Table 4
    assert len({frozenset(c) for c in table4}) == len(table4)
    assert parse_combinations("text;image,text") == [("text",), ("image", "text")]
    with pytest.raises(ValueError, match="subset"):
        parse_combinations("text,smell")
    assert combination_name(("image", "text", "table")) == "I+T+Tab"


@pytest.mark.slow
def test_evaluate_writes_the_papers_tables_plots_and_cards(tmp_path_factory, tmp_path):
    data_dir, pretrained, finetuned = trained_tiny_models(tmp_path_factory)
    args = Namespace(
        model_dir=str(pretrained),
        finetuned_dir=str(finetuned),
        data_dir=str(data_dir),
        output_dir=str(tmp_path),
        combinations="text;text,image",
        batch_size=8,
        num_workers=0,
        device=torch.device("cpu"),
        backend="faiss",
        seed=0,
        no_plots=False,
        no_model_card=False,
        features="fused",
        text_encoder=minilm_path(),
        no_baselines=False,
    )
    results = evaluate(args)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["combinations"] == [["text"], ["text", "image"]]
    assert saved["input_failures"] == {"count": 0, "items": []}
    for name in ("T", "T+I"):
        pretrained_row, finetuned_row = saved["pretrained"][name], saved["finetuned"][name]
        for task in ("coarse", "fine"):
            assert set(pretrained_row[task]) >= {"mAP@1", "mAP@5", "mAP@10", "Prec@1", "Prec@5", "Prec@10"}
            assert pretrained_row[task]["mAP@1"] == pytest.approx(pretrained_row[task]["Prec@1"])
            assert 0 <= pretrained_row[task]["mAP@10"] <= 100
        assert 0 <= pretrained_row["linear_probe_accuracy"] <= 100
        assert set(pretrained_row["clustering"]) == {"NMI", "Purity"}
        assert 0 <= finetuned_row["accuracy"] <= 100
    assert set(saved["baselines"]) == {
        "frozen text encoder (T)",
        *(f"SCALE {modality} feature" for modality in ("text", "table", "image", "video", "audio")),
        "random",
    }
    for row in saved["baselines"].values():
        assert set(row) == {"coarse", "fine", "linear_probe_accuracy", "clustering"}
    for features in ("pretrained", "finetuned"):
        assert set(saved["cross_subset"][features]) == {"T", "I", "T+I", "T+I+Tab"}
        text_only = saved["cross_subset"][features]["T"]
        assert text_only["cross"]["num_queries"] == saved["split_sizes"]["retrieval_coarse/query"]
        assert 0 <= text_only["modality_set"]["top_share"] <= 100
    queries = load_dataset(str(data_dir), "retrieval_coarse", split="query")
    assert saved["split_sizes"]["retrieval_coarse/query"] == len(queries)
    markdown = (tmp_path / "results.md").read_text()
    assert markdown == format_tables(results)
    assert "**Baselines**" in markdown and "**Cross-subset retrieval**" in markdown
    assert "| frozen text encoder (T) |" in markdown
    assert "**Table 3** (one model, modalities left out)" in markdown and "| +I |" in markdown
    assert "**Table 5**" in markdown
    assert (tmp_path / "tsne.png").stat().st_size > 1000
    assert (tmp_path / "alignment_matrix.png").stat().st_size > 1000
    matrix = np.array(saved["alignment_matrix"]["mean_S"], dtype=float)
    assert matrix.shape == (5, 5)
    assert "## Evaluation" in (pretrained / "README.md").read_text()
    assert "**Table 4**" in (finetuned / "README.md").read_text()


@pytest.mark.slow
def test_extract_embeddings_uses_only_the_chosen_modalities_and_does_not_depend_on_batching(tmp_path_factory):
    data_dir, pretrained, _ = trained_tiny_models(tmp_path_factory)
    model = AutoModel.from_pretrained(pretrained)
    processor = AutoProcessor.from_pretrained(pretrained)
    gallery = load_dataset(str(data_dir), "retrieval_fine", split="gallery")
    small_batches = extract_embeddings(model, processor, gallery, batch_size=3, show_progress=False)
    one_batch = extract_embeddings(model, processor, gallery, batch_size=64, show_progress=False)
    assert small_batches["item_ids"] == list(gallery["item_id"])
    embeds = small_batches["product_embeds"]
    assert embeds.shape == (len(gallery), model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embeds, one_batch["product_embeds"], atol=1e-4)

    text_image = extract_embeddings(
        model, processor, gallery, modalities=("image", "text"), batch_size=8, show_progress=False
    )
    assert text_image["modality_mask"][:, [1, 3, 4]].sum() == 0  # table, video, audio left out
    has_both = (text_image["modality_mask"][:, [0, 2]] == 1).all(axis=1)
    assert has_both.any()
    assert not np.allclose(text_image["product_embeds"][has_both], embeds[has_both], atol=1e-4)
    assert text_image["alignment_scores"].shape == (len(gallery), 5, 5)


def test_load_model_gives_the_head_asked_for_in_eval_mode_with_its_processor(tmp_path):
    from modeling_scale import ScaleForProductClassification, ScaleModel

    processor, config = tiny_demo_model_parts(num_labels=3)
    for name, model_class in (("base", ScaleModel), ("classifier", ScaleForProductClassification)):
        model_class(config).save_pretrained(tmp_path / name)
        processor.save_pretrained(tmp_path / name)
    model, loaded_processor = load_model(str(tmp_path / "base"), "base", torch.device("cpu"))
    assert type(model) is ScaleModel and not model.training
    assert loaded_processor.tokenizer.vocab == processor.tokenizer.vocab
    classifier, _ = load_model(str(tmp_path / "classifier"), "classification", torch.device("cpu"))
    assert type(classifier) is ScaleForProductClassification and not classifier.training
    assert classifier.classifier.out_features == 3
    assert next(classifier.parameters()).device == torch.device("cpu")
