"""The paper's Table 8 T+Tab baseline: `ScaleProcessor(table_placement="in_caption")` appends the serialised
table to the caption in one sequence read by the text encoder; pretrain.py's `--table_in_caption` builds
it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_m5product import converted_tiny_sample, minilm_path
from transformers import AutoConfig, AutoProcessor, AutoTokenizer

from modeling_scale import MODALITIES, ScaleForPreTraining, ScaleProcessor
from modeling_scale.collator_scale import DataCollatorForScalePretraining
from train.components import build_config, build_processor, load_preset

REPO_ROOT = Path(__file__).resolve().parents[1]
TABLE_KEYS = {"table_input_ids", "table_attention_mask", "table_entity_ids"}
TEXT, TABLE = MODALITIES.index("text"), MODALITIES.index("table")

CAPTIONS = ["a red summer dress", None, "cotton shirt", "plain hat"]
TABLES = [[("colour", "red"), ("size", "large")], [("material", "cotton"), ("fit", "slim")], None, None]


def tiny_parts(table_placement: str):
    """(processor, config) from the `tiny` preset (captions 24, tables 32 tokens) with MiniLM's tokenizer, as
    pretrain.py builds them."""
    preset = load_preset("tiny")
    preset["processor"]["table_placement"] = table_placement
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = build_config(preset, len(tokenizer), {})
    return build_processor(tokenizer, config, preset["processor"]), config


@pytest.fixture(scope="module")
def parts():
    return {placement: tiny_parts(placement) for placement in ("separate", "in_caption")}


def tokens(row: torch.Tensor) -> list[int]:
    """A padded row's ids (pad id 0 in MiniLM's vocabulary)."""
    return [int(i) for i in row if i != 0]


def test_the_table_follows_the_caption_in_one_sequence_and_is_no_modality(parts):
    separate, _ = parts["separate"]
    in_caption, _ = parts["in_caption"]
    reference = separate(text=CAPTIONS, tables=TABLES, return_tensors="pt")
    out = in_caption(text=CAPTIONS, tables=TABLES, return_tensors="pt")

    assert not TABLE_KEYS & set(out) and "token_type_ids" not in out
    assert out["modality_mask"][:, TABLE].tolist() == [0, 0, 0, 0]
    assert out["modality_mask"][:, TEXT].tolist() == [1, 1, 1, 1]  # the table-only product has a text too
    caption_ids = [tokens(row) for row in reference["input_ids"]]
    table_ids = [tokens(row) for row in reference["table_input_ids"]]
    sep = separate.tokenizer.sep_token_id
    # caption + table: [CLS] caption [SEP] table [SEP], the table's tokens as the table encoder would get them
    assert tokens(out["input_ids"][0]) == caption_ids[0] + table_ids[0][1:]
    assert tokens(out["input_ids"][0])[len(caption_ids[0]) - 1] == sep
    # table only: [CLS] table [SEP]; caption only: unchanged
    assert tokens(out["input_ids"][1]) == table_ids[1]
    assert tokens(out["input_ids"][2]) == caption_ids[2]
    assert tokens(out["input_ids"][3]) == caption_ids[3]
    assert out["attention_mask"].sum(1).tolist() == [len(tokens(row)) for row in out["input_ids"]]
    words = separate.tokenizer.convert_ids_to_tokens(tokens(out["input_ids"][0]))
    assert words == ["[CLS]", "a", "red", "summer", "dress", "[SEP]"] + [
        "colour", ":", "red", ";", "size", ":", "large", "[SEP]",
    ]  # fmt: skip


def test_long_caption_and_table_fit_the_models_text_length(parts):
    processor, config = parts["in_caption"]
    separate, separate_config = parts["separate"]
    caption = " ".join(f"word{i}" for i in range(100))
    table = [(f"key{i}", f"value{i}") for i in range(100)]
    out = processor(text=[caption], tables=[table], return_tensors="pt")
    length = int(out["attention_mask"].sum())
    # the caption keeps its own budget, the table its own: the sequence is longer than either alone
    assert processor.max_text_length == separate_config.max_text_length == 24
    assert separate_config.max_table_length < length <= processor.text_sequence_length
    assert processor.text_sequence_length == config.max_text_length == 24 + 32
    reference = separate(text=[caption], tables=[table], return_tensors="pt")
    assert (
        tokens(out["input_ids"][0])
        == tokens(reference["input_ids"][0]) + tokens(reference["table_input_ids"][0])[1:]
    )
    full = processor(text=["hat"], tables=[None], padding="max_length", return_tensors="pt")
    assert full["input_ids"].shape == (1, config.max_text_length)
    stable = processor(text=["hat"], return_modalities=("text", "table"), padding="max_length")
    assert not TABLE_KEYS & set(stable) and stable["input_ids"].shape == (1, config.max_text_length)


def test_default_placement_keeps_the_table_modality_and_the_model_length(parts):
    processor, config = parts["separate"]
    assert processor.table_placement == "separate" and processor.text_sequence_length == 24
    assert config.max_text_length == 24
    out = processor(text=CAPTIONS, tables=TABLES, return_tensors="pt")
    assert TABLE_KEYS <= set(out)
    assert out["modality_mask"][:, TABLE].tolist() == [1, 1, 0, 0]
    assert out["modality_mask"][:, TEXT].tolist() == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="table_placement"):
        ScaleProcessor(processor.image_processor, processor.tokenizer, processor.feature_extractor,
                       table_placement="stacked")  # fmt: skip


def test_the_option_round_trips_through_save_and_auto_processor(parts, tmp_path):
    processor, _ = parts["in_caption"]
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["table_placement"] == "in_caption"
    expected = processor(text=CAPTIONS, tables=TABLES, return_tensors="pt")
    for reloaded in (ScaleProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(reloaded) is ScaleProcessor and reloaded.table_placement == "in_caption"
        assert (reloaded.max_text_length, reloaded.max_table_length) == (24, 32)
        got = reloaded(text=CAPTIONS, tables=TABLES, return_tensors="pt")
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


def test_one_pretraining_step_reads_the_table_through_the_text_encoder(parts):
    processor, config = parts["in_caption"]
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).train()
    collator = DataCollatorForScalePretraining(processor, config=config, mask_probability=0.5, seed=0)
    batch = collator(processor(text=CAPTIONS, tables=TABLES, return_tensors="pt"))
    assert "table_labels" not in batch
    caption_end = len(tokens(processor(text=CAPTIONS[:1], return_tensors="pt")["input_ids"][0]))
    assert (batch["labels"][0, caption_end:] != -100).any()  # MLM masks table tokens as ordinary tokens
    assert (batch["labels"][1] != -100).any()  # and those of the table-only product

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    outputs = model(**batch)
    assert torch.isfinite(outputs.loss) and outputs.mlm_loss > 0 and outputs.mem_loss == 0
    outputs.loss.backward()
    text_grad = model.scale.embeddings["text"].word_embeddings.weight.grad
    table_grad = model.scale.embeddings["table"].word_embeddings.weight.grad
    assert text_grad is not None and text_grad.abs().sum() > 0
    assert table_grad is None or table_grad.abs().sum() == 0  # the table encoder is never fed
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("scale.encoders.text.") for name in changed)


@pytest.mark.slow
def test_pretrain_finetune_evaluate_scripts_run_the_table_in_caption_baseline(tmp_path_factory):
    data_dir = converted_tiny_sample(tmp_path_factory)
    root = tmp_path_factory.mktemp("t_plus_tab")
    common = ["--per_device_batch_size", "4", "--max_steps", "1", "--checkpointing_steps", "0",
              "--report_to", "none"]  # fmt: skip
    subprocess.run(
        [sys.executable, "train/pretrain.py", "--data_dir", str(data_dir), "--output_dir",
         str(root / "pretrain"), "--model_config", "tiny", "--text_encoder", "none", "--tokenizer",
         minilm_path(), "--calibration_products", "0", "--table_in_caption", *common],
        check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "train/finetune.py", "--model_name_or_path", str(root / "pretrain"), "--data_dir",
         str(data_dir), "--output_dir", str(root / "finetune"), *common],
        check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "train/evaluation.py", "--model_dir", str(root / "pretrain"), "--finetuned_dir",
         str(root / "finetune"), "--data_dir", str(data_dir), "--output_dir", str(root / "eval"),
         "--combinations", "text;text,table", "--no_baselines", "--no_plots", "--no_model_card"],
        check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    results = json.loads((root / "eval" / "results.json").read_text())
    assert set(results["pretrained"]) == set(results["finetuned"]) == {"T", "T+Tab"}

    summary = json.loads((root / "pretrain" / "training_summary.json").read_text())
    assert summary["table_placement"] == "in_caption"
    for folder in ("pretrain", "finetune"):
        processor = AutoProcessor.from_pretrained(root / folder)
        config = AutoConfig.from_pretrained(root / folder)
        assert processor.table_placement == "in_caption", folder
        assert config.max_text_length == processor.text_sequence_length == 24 + 32, folder
