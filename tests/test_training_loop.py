"""The Accelerate loop: deterministic shuffling, parameter groups, and kill-and-resume = uninterrupted run."""

import argparse
import subprocess
import sys
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.tracking import GeneralTracker
from safetensors.torch import load_file
from tiny_m5product import converted_tiny_sample, minilm_path
from transformers.utils import ModelOutput

from modeling_scale import ScaleConfig, ScaleForPreTraining
from train.components import load_split
from train.training_loop import (
    EpochShuffleSampler,
    TrainingState,
    add_training_arguments,
    checkpoint_dirs,
    make_accelerator,
    merge_input_failures,
    parameter_groups,
    train,
)

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


class _Recorder(GeneralTracker):
    """An accelerate tracker that keeps what it is given."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config: dict = {}
        self.logs: list[tuple[int, dict]] = []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = dict(values)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logs.append((step, dict(values)))


@dataclass
class _ToyOutput(ModelOutput):
    loss: torch.Tensor | None = None
    squared_error: torch.Tensor | None = None
    unused: torch.Tensor | None = None


class _ToyRegression(torch.nn.Module):
    """y = w·x + b + shift behind a dropout: a weight and a bias (two parameter groups) and an RNG that the
    resume must restore. `shift` is required, so it only runs when the loop adds the extra inputs."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.dropout = torch.nn.Dropout(0.5)

    @property
    def base_model(self) -> torch.nn.Module:
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, shift: torch.Tensor) -> _ToyOutput:
        prediction = self.linear(self.dropout(x)).squeeze(-1) + shift
        loss = ((prediction - y) ** 2).mean()
        return _ToyOutput(loss=loss, squared_error=loss.detach() * 2)


TOY_ROWS = 10
TOY_FAILING_ROWS = (3, 7)


def _toy_dataset() -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(TOY_ROWS, 4, generator=generator)
    return [{"index": i, "x": x[i], "y": x[i].sum()} for i in range(TOY_ROWS)]


def _toy_collate(rows: list[dict]) -> dict:
    return {
        "x": torch.stack([row["x"] for row in rows]),
        "y": torch.stack([row["y"] for row in rows]),
        "row_index": [row["index"] for row in rows],  # bookkeeping: not a tensor, so not a model input
        "input_failures": [
            {"item_id": f"row{row['index']}", "modality": "image", "reason": "unreadable"}
            for row in rows
            if row["index"] in TOY_FAILING_ROWS
        ],
    }


def _toy_args(output_dir: Path, **overrides) -> Namespace:
    """The training options as the scripts parse them, set for batches of 2 from 10 rows, 2 accumulated:
    5 batches and 3 updates an epoch (the last update has one batch); 2 epochs = 6 updates; linear schedule
    with 2 warm-up updates; a checkpoint and a log every 2 updates. `overrides` replace parsed values."""
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    args = parser.parse_args(
        ["--per_device_batch_size", "2", "--gradient_accumulation_steps", "2", "--learning_rate", "0.1"]
        + ["--warmup_ratio", "0.34", "--num_epochs", "2", "--seed", "5", "--checkpointing_steps", "2"]
        + ["--logging_steps", "2", "--report_to", "recorder"]
    )
    args.output_dir = str(output_dir)
    vars(args).update(overrides)
    return args


def _run_toy(args: Namespace, monkeypatch, tracker: GeneralTracker | None = None):
    """(model, state, clip calls, tracker projects started) of `train` on the toy regression, in this
    process."""
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(
        cpu=True, gradient_accumulation_steps=args.gradient_accumulation_steps, log_with=tracker and [tracker]
    )
    clips = []
    clip = accelerator.clip_grad_norm_

    def recording_clip(parameters, max_norm, *rest, **kwargs):
        clips.append(max_norm)
        return clip(parameters, max_norm, *rest, **kwargs)

    monkeypatch.setattr(accelerator, "clip_grad_norm_", recording_clip)
    projects = []
    init_trackers = accelerator.init_trackers

    def recording_init_trackers(project_name, *rest, **kwargs):
        projects.append(project_name)
        return init_trackers(project_name, *rest, **kwargs)

    monkeypatch.setattr(accelerator, "init_trackers", recording_init_trackers)
    torch.manual_seed(0)
    model = _ToyRegression()
    state = train(
        args,
        accelerator,
        model,
        _toy_dataset(),
        _toy_collate,
        loss_names=("loss", "squared_error", "unused"),
        extra_scalars=lambda outputs, batch: {
            "toy/mean_row": torch.tensor(batch["row_index"], dtype=torch.float).mean()
        },
        extra_inputs=lambda inputs: {"shift": torch.full_like(inputs["y"], 0.5)},
    )
    return model, state, clips, projects


def test_train_updates_logs_checkpoints_and_counts_as_configured(tmp_path, monkeypatch, capsys):
    recorder = _Recorder()
    args = _toy_args(tmp_path, checkpointing_steps=1, checkpoints_total_limit=3, adam_beta2=0.75)
    model, state, clips, projects = _run_toy(args, monkeypatch, recorder)

    assert (state.global_step, state.epoch, state.batches_in_epoch) == (6, 1, 5)
    assert projects == ["scale"]
    assert "updates: 100%" in capsys.readouterr().err  # the progress bar, on the main process
    assert clips == [1.0] * 6  # once per update, not per accumulated batch
    # every row's failures, once per epoch, merged at the end
    failures = state.extra["input_failures"]
    assert failures["count"] == 4 and failures["by_modality"] == {"image": 4}
    assert sorted(f["item_id"] for f in failures["items"]) == ["row3", "row3", "row7", "row7"]

    # logs every 2 updates: window means over the batches of those updates, in the sampler's order
    orders = [list(EpochShuffleSampler(TOY_ROWS, seed=5)), []]
    second = EpochShuffleSampler(TOY_ROWS, seed=5)
    second.set_epoch(1)
    orders[1] = list(second)
    batches = [order[k : k + 2] for order in orders for k in range(0, TOY_ROWS, 2)]
    windows = {2: batches[0:4], 4: batches[4:7], 6: batches[7:10]}
    assert [step for step, _ in recorder.logs] == [2, 4, 6]
    for step, logs in recorder.logs:
        expected_row = np.mean([np.mean(batch) for batch in windows[step]])
        assert logs["toy/mean_row"] == pytest.approx(expected_row)
        assert logs["train/squared_error"] == pytest.approx(2 * logs["train/loss"])
        assert "train/unused" not in logs
    # linear schedule, 2 warm-up updates of 6: lr after 2, 4, 6 scheduler steps
    assert [logs["lr/rest"] for _, logs in recorder.logs] == pytest.approx([0.1, 0.05, 0.0])
    assert [logs["lr/rest_no_decay"] for _, logs in recorder.logs] == pytest.approx([0.1, 0.05, 0.0])
    assert recorder.config["learning_rate"] == 0.1 and recorder.config["report_to"] == "recorder"
    assert "max_steps" not in recorder.config  # None is not a tracker value

    # checkpoints every update, the newest 3 kept, each with where the run was and the failures so far
    checkpoints = checkpoint_dirs(str(tmp_path))
    assert [Path(c).name for c in checkpoints] == ["step_4", "step_5", "step_6"]
    middle = TrainingState.load(checkpoints[0])
    assert (middle.global_step, middle.epoch, middle.batches_in_epoch) == (4, 1, 2)
    seen = batches[:7]
    expected_failures = sum(index in TOY_FAILING_ROWS for batch in seen for index in batch)
    assert middle.extra["input_failures"]["count"] == expected_failures
    # the optimizer: AdamW with the configured beta2 and the groups' rates (after 4 of 6 scheduled updates)
    optimizer = torch.load(Path(checkpoints[0]) / "optimizer.bin", weights_only=True)
    groups = {group["name"]: group for group in optimizer["param_groups"]}
    assert set(groups) == {"rest", "rest_no_decay"}
    assert groups["rest"]["betas"] == (0.9, 0.75) and groups["rest"]["weight_decay"] == 0.01
    assert groups["rest_no_decay"]["weight_decay"] == 0.0
    assert groups["rest"]["initial_lr"] == 0.1 and groups["rest"]["lr"] == pytest.approx(0.05)

    # a resume from the middle checkpoint, in a new accelerator, ends on the very same weights
    resumed_args = _toy_args(
        tmp_path / "resumed", resume_from_checkpoint=checkpoints[0], report_to="none", adam_beta2=0.75
    )
    resumed_model, resumed_state, resumed_clips, resumed_projects = _run_toy(resumed_args, monkeypatch)
    assert (resumed_state.global_step, resumed_state.epoch, resumed_state.batches_in_epoch) == (6, 1, 5)
    assert len(resumed_clips) == 2 and resumed_projects == []  # no tracker for report_to none
    assert "4/6" in capsys.readouterr().err  # the bar starts where the run was
    for name, parameter in model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], parameter, rtol=0, atol=0)
    assert resumed_state.extra["input_failures"]["count"] == 4
    # "latest" finds the newest checkpoint of the output folder: nothing left to do
    latest_args = _toy_args(tmp_path, resume_from_checkpoint="latest")
    _, latest_state, latest_clips, _ = _run_toy(latest_args, monkeypatch)
    assert latest_state.global_step == 6 and latest_clips == []


def test_train_stops_at_max_steps_and_skips_clipping_and_logging_when_off(tmp_path, monkeypatch):
    recorder = _Recorder()
    args = _toy_args(tmp_path, max_steps=4, max_grad_norm=0.0, checkpointing_steps=0, logging_steps=3)
    args.resume_from_checkpoint = "latest"  # with no checkpoint yet: a fresh start
    _, state, clips, _ = _run_toy(args, monkeypatch, recorder)
    assert (state.global_step, state.epoch, state.batches_in_epoch) == (4, 1, 2)
    assert clips == [] and checkpoint_dirs(str(tmp_path)) == []
    assert [step for step, _ in recorder.logs] == [3, 4]  # every 3 updates, and the last one
    with pytest.raises(ValueError, match="fewer than one batch of 20"):
        _run_toy(_toy_args(tmp_path, per_device_batch_size=20), monkeypatch)


def test_training_options_default_to_the_documented_recipe_and_parse_their_types(tmp_path):
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    assert vars(parser.parse_args([])) == {
        "per_device_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-4,
        "text_encoder_lr_scale": 0.1,
        "alignment_lr_scale": 1.0,
        "weight_decay": 0.01,
        "adam_beta2": 0.999,
        "max_grad_norm": 1.0,
        "lr_scheduler_type": "linear",
        "warmup_ratio": 0.1,
        "num_epochs": 5,
        "max_steps": None,
        "num_workers": 0,
        "seed": 42,
        "mixed_precision": None,
        "checkpointing_steps": 500,
        "checkpoints_total_limit": 2,
        "resume_from_checkpoint": None,
        "logging_steps": 10,
        "report_to": "tensorboard",
    }
    given = {
        "per_device_batch_size": 3,
        "gradient_accumulation_steps": 4,
        "learning_rate": 0.5,
        "text_encoder_lr_scale": 0.25,
        "alignment_lr_scale": 2.5,
        "weight_decay": 0.125,
        "adam_beta2": 0.75,
        "max_grad_norm": 3.5,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.375,
        "num_epochs": 1.5,
        "max_steps": 7,
        "num_workers": 2,
        "seed": 9,
        "mixed_precision": "bf16",
        "checkpointing_steps": 11,
        "checkpoints_total_limit": 3,
        "resume_from_checkpoint": "latest",
        "logging_steps": 5,
        "report_to": "none",
    }
    argv = [text for name, value in given.items() for text in (f"--{name}", str(value))]
    assert vars(parser.parse_args(argv)) == given
    for precision in ("no", "fp16", "bf16"):
        assert parser.parse_args(["--mixed_precision", precision]).mixed_precision == precision
    with pytest.raises(SystemExit):
        parser.parse_args(["--mixed_precision", "fp8"])

    AcceleratorState._reset_state(
        reset_partial_state=True
    )  # a process keeps its first accelerator's precision
    try:
        accelerator = make_accelerator(Namespace(**given, output_dir=str(tmp_path)))
        assert accelerator.mixed_precision == "bf16"
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    given["mixed_precision"] = "no"
    accelerator = make_accelerator(Namespace(**given, output_dir=str(tmp_path)))
    assert accelerator.gradient_accumulation_steps == 4 and accelerator.log_with == []
    assert accelerator.project_dir == str(tmp_path)
    assert accelerator.logging_dir == str(tmp_path / "logs")
    assert accelerator.ddp_handler.find_unused_parameters  # a batch may lack a modality's encoder
    tracked = make_accelerator(Namespace(**{**given, "report_to": "tensorboard"}, output_dir=str(tmp_path)))
    assert [str(tracker) for tracker in tracked.log_with] == ["tensorboard"]


def test_input_failures_are_all_counted_and_the_first_hundred_listed():
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    state = TrainingState()
    pending = [
        {"item_id": f"i{k}", "modality": "audio" if k % 3 else "video", "reason": "cut"} for k in range(98)
    ]
    merge_input_failures(accelerator, state, pending)
    assert pending == []  # handed over
    pending += [{"item_id": f"j{k}", "modality": "image", "reason": "cut"} for k in range(5)]
    merge_input_failures(accelerator, state, pending)
    failures = state.extra["input_failures"]
    assert failures["count"] == 103 and failures["by_modality"] == {"video": 33, "audio": 65, "image": 5}
    assert [f["item_id"] for f in failures["items"]][-3:] == ["i97", "j0", "j1"] and len(
        failures["items"]
    ) == 100


def test_loading_a_folder_without_a_training_state_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a checkpoint of this script"):
        TrainingState.load(str(tmp_path))
