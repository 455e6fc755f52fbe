"""pretrain.py: a tiny run saves a loadable model + processor with tracking; BERT initialisation through an
extended / trimmed vocabulary; two CPU processes (gloo) with the contrastive all-gather."""

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from tiny_m5product import converted_tiny_sample, minilm_path, trained_tiny_models

from modeling_scale import MODALITIES, ScaleConfig
from train.baselines import text_encoder_embeddings
from train.pretrain import alignment_scalars, build_model
from train.vocabulary import extend_vocabulary, trim_vocabulary

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_pretraining_saves_a_loadable_model_processor_card_and_logs(tmp_path_factory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModel, AutoProcessor

    data_dir, pretrained, _ = trained_tiny_models(tmp_path_factory)
    model = AutoModel.from_pretrained(pretrained)
    processor = AutoProcessor.from_pretrained(pretrained)
    inputs = processor(text=["cotton dress"], tables=[[("材质", "纯棉")]], return_tensors="pt")
    assert model(**inputs).product_embeds.shape == (1, model.config.hidden_size)
    summary = json.loads((pretrained / "training_summary.json").read_text())
    assert summary["updates"] == 3 and summary["num_processes"] == 1
    assert summary["added_characters"] > 0  # MiniLM lacks the sample's Chinese characters
    fitted = dict(zip(MODALITIES, model.modality_weights.weights.tolist(), strict=True))
    assert summary["modality_weights"] == {name: round(weight, 4) for name, weight in fitted.items()}
    assert "# SCALE (pretraining)" in (pretrained / "README.md").read_text()

    events = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(pretrained / "logs")
        for name in names
        if name.startswith("events.out.tfevents")
    ]
    tags = set()
    for path in events:
        accumulator = EventAccumulator(path)
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    expected = {f"train/{name}" for name in ("loss", "mlm_loss", "mem_loss", "contrastive_loss")}
    assert expected <= tags
    assert "S/text-table" in tags and any(tag.startswith("lr/") for tag in tags)


def test_alignment_scalars_average_only_over_items_with_both_modalities():
    scores = torch.zeros(2, 5, 5)
    scores[0, 0, 1], scores[1, 0, 1] = 0.2, 0.8
    present = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    scalars = alignment_scalars(Namespace(alignment_scores=scores, modality_mask=present), batch={})
    assert scalars["S/text-table"].item() == pytest.approx(0.2)
    assert "S/text-image" not in scalars and set(scalars) == {"S/text-text", "S/text-table", "S/table-table"}
    assert len(MODALITIES) == 5


def test_text_encoder_starts_from_minilm_through_an_extended_and_trimmed_vocabulary():
    from transformers import AutoTokenizer, BertModel

    bert = BertModel.from_pretrained(minilm_path())
    texts = ["cotton dress official", "材质", "纯棉"]
    tokenizer, added = extend_vocabulary(AutoTokenizer.from_pretrained(minilm_path()), texts)
    tokenizer, original_ids = trim_vocabulary(tokenizer, texts)
    assert added == 4 and len(tokenizer) < 3000
    assert tokenizer.tokenize("cotton dress 纯棉") == ["cotton", "dress", "纯", "棉"]
    config = ScaleConfig(
        vocab_size=len(tokenizer),
        hidden_size=384,
        num_attention_heads=12,
        intermediate_size=1536,
        num_encoder_layers=1,
        num_fusion_layers=1,
        image_size=32,
        patch_size=16,
        projection_dim=16,
        distillation_loss_weight=0.0,
    )
    model, teacher = build_model(Namespace(text_encoder=minilm_path()), config, original_ids)
    assert teacher is None  # distillation is off in this config: no frozen copy is kept
    ours = model.scale.embeddings["text"].word_embeddings.weight
    theirs = bert.get_input_embeddings().weight
    dress = tokenizer.convert_tokens_to_ids("dress")
    assert torch.equal(ours[dress], theirs[original_ids[dress]])
    new_character = tokenizer.convert_tokens_to_ids("纯")
    assert original_ids[new_character] >= theirs.shape[0]  # appended: a fresh row
    query = model.scale.encoders["text"].layer[0].attention
    assert any(torch.equal(p, bert.encoder.layer[0].attention.self.query.weight) for p in query.parameters())

    # with distillation on, the teacher is that MiniLM, frozen, read through our vocabulary: its embedding
    # of a caption is the frozen baseline's (MiniLM's own tokenizer and ids)
    config.distillation_loss_weight = 1.0
    model, teacher = build_model(Namespace(text_encoder=minilm_path()), config, original_ids)
    assert not any(p.requires_grad for p in teacher.parameters())
    ours = tokenizer(["cotton dress official"], return_tensors="pt")
    baseline = text_encoder_embeddings(minilm_path(), ["cotton dress official"], max_length=32)
    torch.testing.assert_close(
        teacher(ours["input_ids"], ours["attention_mask"]), torch.from_numpy(baseline), atol=1e-5, rtol=1e-4
    )


@pytest.mark.slow
def test_two_cpu_processes_train_together(tmp_path_factory, tmp_path):
    """DDP on the CPU with gloo (what `accelerate launch` does on GPUs): both ranks all-gather the contrastive
    features. Accelerate launches multi-CPU jobs only through mpirun, so torchrun starts the two ranks."""
    data_dir = converted_tiny_sample(tmp_path_factory)
    environment = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "train/pretrain.py",
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(tmp_path),
        "--model_config",
        "tiny",
        "--text_encoder",
        "none",
        "--tokenizer",
        minilm_path(),
        "--per_device_batch_size",
        "4",
        "--max_steps",
        "2",
        "--checkpointing_steps",
        "2",
        "--report_to",
        "none",
    ]
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=environment)
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["updates"] == 2
    checkpoint = tmp_path / "checkpoints" / "step_2"
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
