"""The Accelerate loop: deterministic shuffling, parameter groups, and kill-and-resume = uninterrupted run."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_m5product import converted_tiny_sample, minilm_path

from modeling_scale import ScaleConfig, ScaleForPreTraining
from train.components import load_split
from train.training_loop import EpochShuffleSampler, TrainingState, checkpoint_dirs, parameter_groups

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(EpochShuffleSampler(50, seed=3)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    other = EpochShuffleSampler(50, seed=3)
    other.set_epoch(1)
    assert list(other) == second
    assert list(EpochShuffleSampler(5, seed=3, shuffle=False)) == [0, 1, 2, 3, 4]


def test_parameter_groups_give_text_encoder_and_s_their_own_rates_and_skip_decay_for_norms_and_biases():
    config = ScaleConfig(
        vocab_size=100,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        num_encoder_layers=1,
        num_fusion_layers=1,
        image_size=32,
        patch_size=16,
        projection_dim=8,
        alignment="learned",
    )
    model = ScaleForPreTraining(config)
    groups = {group["name"]: group for group in parameter_groups(model, 1e-3, 0.1, 0.01, 30.0)}
    assert set(groups) == {"text_encoder", "text_encoder_no_decay", "rest", "rest_no_decay", "alignment"}
    assert groups["text_encoder"]["lr"] == pytest.approx(1e-4)
    assert groups["alignment"]["params"] == [model.scale.alignment_parameter]
    assert groups["alignment"]["lr"] == pytest.approx(3e-2) and groups["alignment"]["weight_decay"] == 0.0
    assert groups["rest"]["lr"] == pytest.approx(1e-3)
    assert groups["rest_no_decay"]["weight_decay"] == 0.0 and groups["rest"]["weight_decay"] == 0.01
    text_ids = {id(p) for p in model.scale.encoders["text"].parameters()}
    text_ids |= {id(p) for p in model.scale.embeddings["text"].parameters()}
    text_groups = ("text_encoder", "text_encoder_no_decay")
    grouped_text = {id(p) for name in text_groups for p in groups[name]["params"]}
    assert grouped_text == text_ids
    assert all(p.ndim == 1 for p in groups["rest_no_decay"]["params"])
    total = sum(len(group["params"]) for group in groups.values())
    assert total == len([p for p in model.parameters() if p.requires_grad])
    # the default S is read from the modality embeddings: nothing to train, no alignment group
    config.alignment = type(config)().alignment
    default_groups = parameter_groups(ScaleForPreTraining(config), 1e-3, 0.1, 0.01)
    assert {group["name"] for group in default_groups} == set(groups) - {"alignment"}


def pretrain_command(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train/pretrain.py",
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(output_dir),
        "--model_config",
        "tiny",
        "--text_encoder",
        "none",
        "--tokenizer",
        minilm_path(),
        "--per_device_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--max_steps",
        "6",
        "--checkpointing_steps",
        "2",
        "--checkpoints_total_limit",
        "3",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--seed",
        "7",
        *extra,
    ]


@pytest.mark.slow
def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path_factory, tmp_path):
    """6 updates of 2 accumulated batches of 4, dropout on, a checkpoint every 2 updates. The sample holds
    5-7 full batches an epoch (the loader drops the last partial one), so the run crosses an epoch boundary,
    epoch 0 ends on a single-batch update, and the checkpoint after update 2 sits mid-epoch. A new process
    resuming from it must end bit-identical to the full run."""
    data_dir = converted_tiny_sample(tmp_path_factory)
    batches_per_epoch = len(load_split(str(data_dir), "pretrain", "train")) // 4
    assert 5 <= batches_per_epoch <= 7 and batches_per_epoch % 2, "the tiny sample no longer fits this test"
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    subprocess.run(pretrain_command(data_dir, full), check=True, cwd=REPO_ROOT)
    checkpoints = checkpoint_dirs(str(full))
    assert [Path(c).name for c in checkpoints] == ["step_2", "step_4", "step_6"]
    state = TrainingState.load(checkpoints[0])
    assert (state.global_step, state.epoch, state.batches_in_epoch) == (2, 0, 4)

    subprocess.run(
        pretrain_command(data_dir, resumed, "--resume_from_checkpoint", checkpoints[0]),
        check=True,
        cwd=REPO_ROOT,
    )
    full_weights = load_file(full / "model.safetensors")
    resumed_weights = load_file(resumed / "model.safetensors")
    assert full_weights.keys() == resumed_weights.keys()
    different = [name for name in full_weights if not torch.equal(full_weights[name], resumed_weights[name])]
    assert not different, f"resumed run differs in {different[:5]}"
    # and training did change the weights: the checkpoint at update 3 differs from the end
    middle = load_file(Path(checkpoints[0]) / "model.safetensors")
    assert any(not torch.equal(middle[name], full_weights[name]) for name in middle)


def test_logged_scalars_are_window_means_per_name():
    from accelerate import Accelerator

    from train.training_loop import _Window

    window = _Window()
    for value in (1.0, 2.0, 6.0):
        window.add("train/loss", torch.tensor(value))
    window.add("alignment/text-image", torch.tensor(0.5))  # seen in one batch of the window only
    assert window.pop(Accelerator(cpu=True)) == {"train/loss": 3.0, "alignment/text-image": 0.5}
    window.add("train/loss", torch.tensor(4.0))
    assert window.pop(Accelerator(cpu=True)) == {"train/loss": 4.0}  # a new window starts empty


def test_save_checkpoint_keeps_only_the_newest_limit(tmp_path):
    from argparse import Namespace

    from accelerate import Accelerator

    from train.training_loop import save_checkpoint

    args = Namespace(output_dir=str(tmp_path), checkpoints_total_limit=2)
    accelerator = Accelerator(cpu=True)
    for step in (1, 2, 3, 4):
        save_checkpoint(accelerator, args, TrainingState(global_step=step))
    assert [Path(c).name for c in checkpoint_dirs(str(tmp_path))] == ["step_3", "step_4"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_3", "step_4"]
    assert TrainingState.load(checkpoint_dirs(str(tmp_path))[-1]).global_step == 4
