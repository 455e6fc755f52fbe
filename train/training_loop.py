"""The Accelerate training loop shared by pretraining and fine-tuning.

What it guarantees:

- **Exact resume.** A run stopped after any checkpoint and resumed from it in a new process ends with the same
  weights as an uninterrupted run (tested). The pieces: the shuffling order is a pure function of
  (seed, epoch) (`EpochShuffleSampler`); masking is a pure function of (seed, batch indices)
  (`train.data.ScaleBatchCollator`); the DataLoader draws worker seeds from its own generator, so iterating
  it never touches the global RNG that dropout uses; `accelerator.save_state` stores model, optimizer,
  scheduler and every RNG state, and `training_state.json` where in the epoch we were, so that
  `accelerator.skip_first_batches` restarts on the very next batch without loading the skipped ones.
- **Param groups.** The BERT-initialised text encoder gets `learning_rate * text_encoder_lr_scale` (the
  paper initialises it from BERT and trains the rest from scratch); biases and LayerNorm weights get no
  weight decay.
- **Nothing silent.** Inputs the collator had to treat as missing (an undecodable file, NaN values; see
  `train.data.ScaleBatchCollator`) are counted over every process, by modality, with the first item ids and
  reasons, in `state.extra["input_failures"]` (saved with checkpoints; pretrain.py and finetune.py put it in
  training_summary.json).
- **Tracking.** Every loss term the model returns, the learning rates and any extra scalars (e.g. the SIMCL
  matrix S) are averaged over the logging window and over processes and sent to `accelerator.log`
  (TensorBoard by default). A tqdm bar runs on the main process only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from train.data import model_inputs

CHECKPOINT_PREFIX = "step_"
TRAINING_STATE_FILE = "training_state.json"
MAX_LISTED_INPUT_FAILURES = 100
"""Input failures listed by item id in the training state (all are counted)."""


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Optimisation, checkpointing and tracking options common to pretrain.py and finetune.py."""
    group = parser.add_argument_group("training")
    group.add_argument(
        "--per_device_batch_size", type=int, default=32, help="products per process per forward pass"
    )
    group.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="forward passes per update (the contrastive negatives stay those of one pass)",
    )
    group.add_argument("--learning_rate", type=float, default=1e-4, help="paper: 1e-4 with warm-up")
    group.add_argument(
        "--text_encoder_lr_scale",
        type=float,
        default=0.1,
        help="learning-rate multiplier of the BERT-initialised text encoder",
    )
    group.add_argument(
        "--alignment_lr_scale",
        type=float,
        default=1.0,
        help="learning-rate multiplier of SIMCL's learned alignment matrix S (never weight-decayed)",
    )
    group.add_argument(
        "--weight_decay", type=float, default=0.01, help="AdamW's, on weights (not biases or norms)"
    )
    group.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW's second-moment decay")
    group.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="gradients clipped to this global norm"
    )
    group.add_argument("--lr_scheduler_type", default="linear", help="any transformers.get_scheduler name")
    group.add_argument("--warmup_ratio", type=float, default=0.1, help="warm-up share of updates")
    group.add_argument("--num_epochs", type=float, default=5, help="paper: 5 epochs")
    group.add_argument("--max_steps", type=int, default=None, help="updates; overrides --num_epochs")
    group.add_argument("--num_workers", type=int, default=0, help="DataLoader workers running the processor")
    group.add_argument(
        "--seed", type=int, default=42, help="initialisation, shuffling, masking and subset draws"
    )
    group.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="default: the accelerate config's value",
    )
    group.add_argument("--checkpointing_steps", type=int, default=500, help="save_state every N updates")
    group.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep only the newest N")
    group.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="a checkpoint folder, or 'latest' for the newest one in OUTPUT_DIR/checkpoints",
    )
    group.add_argument("--logging_steps", type=int, default=10, help="log the losses every this many updates")
    group.add_argument("--report_to", default="tensorboard", help="accelerate tracker(s), or 'none'")


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of the dataset that depends only on (seed, epoch): identical in every process
    and after a resume, which is what lets `skip_first_batches` land exactly where the run stopped."""

    def __init__(self, num_items: int, seed: int, shuffle: bool = True):
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_items))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    report_to = None if args.report_to in (None, "none") else args.report_to.split(",")
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        # a batch may lack a modality (its encoder and head get no gradient) and only one of each pixel /
        # feature head is used: DDP must not wait for those parameters
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def parameter_groups(
    model: torch.nn.Module,
    learning_rate: float,
    text_encoder_lr_scale: float,
    weight_decay: float,
    alignment_lr_scale: float = 1.0,
) -> list[dict]:
    """AdamW groups: (text embeddings + encoder | rest) x (decayed | not decayed), plus SIMCL's learned S on
    its own (no weight decay, which would pull every loss weight towards 0); empty groups are dropped."""
    base = model.base_model
    text_parts = [getattr(base, name)["text"] for name in ("embeddings", "encoders") if hasattr(base, name)]
    text_ids = {id(p) for part in text_parts for p in part.parameters()}
    alignment = getattr(base, "alignment_parameter", None)
    groups = {
        (is_text, decay): {
            "params": [],
            "weight_decay": weight_decay if decay else 0.0,
            "lr": learning_rate * (text_encoder_lr_scale if is_text else 1.0),
            "name": f"{'text_encoder' if is_text else 'rest'}{'' if decay else '_no_decay'}",
        }
        for is_text in (True, False)
        for decay in (True, False)
    }
    alignment_group = {
        "params": [],
        "weight_decay": 0.0,
        "lr": learning_rate * alignment_lr_scale,
        "name": "alignment",
    }
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter is alignment:
            alignment_group["params"].append(parameter)
            continue
        decay = parameter.ndim >= 2 and "norm" not in name.lower()
        groups[(id(parameter) in text_ids, decay)]["params"].append(parameter)
    return [group for group in (*groups.values(), alignment_group) if group["params"]]


def checkpoint_dirs(output_dir: str) -> list[str]:
    """Checkpoint folders in OUTPUT_DIR/checkpoints, oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [
        (int(match.group(1)), os.path.join(root, name))
        for name in os.listdir(root)
        if (match := re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name))
        and os.path.isfile(os.path.join(root, name, TRAINING_STATE_FILE))
    ]
    return [path for _, path in sorted(found)]


@dataclass
class TrainingState:
    """Where the run is: optimizer updates done, epoch, and batches of that epoch already consumed."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    extra: dict = field(default_factory=dict)

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, TRAINING_STATE_FILE), "w") as handle:
            json.dump(self.__dict__, handle, indent=1)

    @classmethod
    def load(cls, folder: str) -> TrainingState:
        path = os.path.join(folder, TRAINING_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} is not a checkpoint of this script: no {TRAINING_STATE_FILE}")
        with open(path) as handle:
            return cls(**json.load(handle))


def merge_input_failures(accelerator: Accelerator, state: TrainingState, pending: list[dict]) -> None:
    """Add every process' `pending` input failures (`{"item_id", "modality", "reason"}`) to
    `state.extra["input_failures"]`, identical on all processes afterwards, and empty `pending`.
    Every process must call it (a collective when there are several)."""
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        everything = gather_object(pending)
    else:
        everything = list(pending)
    pending.clear()
    total = state.extra.setdefault("input_failures", {"count": 0, "by_modality": {}, "items": []})
    for failure in everything:
        total["count"] += 1
        total["by_modality"][failure["modality"]] = total["by_modality"].get(failure["modality"], 0) + 1
        if len(total["items"]) < MAX_LISTED_INPUT_FAILURES:
            total["items"].append(failure)


class _Window:
    """Running sums of logged scalars between two logging steps."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self.sums[name] = self.sums.get(name, 0) + value
        self.counts[name] = self.counts.get(name, 0) + 1

    def pop(self, accelerator: Accelerator) -> dict[str, float]:
        """Means over the window and over processes. Processes may have seen different scalars (an S entry
        needs both modalities in the local batch), so the names are agreed on first and every process then
        joins one all-reduce of (sum, count) pairs."""
        names = sorted(self.sums)
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            names = sorted(set().union(*gather_object([names])))
        totals = torch.tensor(
            [[float(self.sums.get(name, 0.0)), float(self.counts.get(name, 0))] for name in names],
            device=accelerator.device,
        ).reshape(-1, 2)
        totals = accelerator.reduce(totals, reduction="sum")
        self.sums, self.counts = {}, {}
        pairs = zip(names, totals.tolist(), strict=True)
        return {name: total / count for name, (total, count) in pairs if count > 0}


def train(
    args: argparse.Namespace,
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataset,
    collate_fn: Callable,
    loss_names: tuple[str, ...] = ("loss",),
    extra_scalars: Callable[[object, dict], dict[str, torch.Tensor]] | None = None,
    tracker_project: str = "scale",
    extra_inputs: Callable[[dict], dict[str, torch.Tensor]] | None = None,
) -> TrainingState:
    """
    Trains `model` on the map-style `dataset` (batches built by `collate_fn`), with checkpoints in
    OUTPUT_DIR/checkpoints/step_N. Returns the final state. `loss_names` are output fields logged when
    present (not None); `extra_scalars(outputs, batch)` may add more (e.g. entries of S);
    `extra_inputs(inputs)` adds model inputs computed on the device from the batch's (e.g. a frozen
    teacher's targets), under the accelerator's autocast.
    """
    sampler = EpochShuffleSampler(len(dataset), seed=args.seed)
    loader = DataLoader(
        dataset,
        batch_size=args.per_device_batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=args.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
        persistent_workers=args.num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(
            f"the dataset has {len(dataset)} rows, fewer than one batch of {args.per_device_batch_size}"
        )
    optimizer = torch.optim.AdamW(
        parameter_groups(
            model,
            args.learning_rate,
            args.text_encoder_lr_scale,
            args.weight_decay,
            args.alignment_lr_scale,
        ),
        lr=args.learning_rate,
        betas=(0.9, args.adam_beta2),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    updates_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_updates = args.max_steps or math.ceil(args.num_epochs * updates_per_epoch)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_updates),
        num_training_steps=total_updates,
    )
    accelerator.register_for_checkpointing(scheduler)

    state = TrainingState()
    resume = args.resume_from_checkpoint
    if resume == "latest":
        existing = checkpoint_dirs(args.output_dir)
        resume = existing[-1] if existing else None
    if resume:
        accelerator.load_state(resume)
        state = TrainingState.load(resume)
        accelerator.print(
            f"resumed from {resume}: update {state.global_step}, epoch {state.epoch}, "
            f"{state.batches_in_epoch} batches into it"
        )

    if accelerator.is_main_process and args.report_to not in (None, "none"):
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(tracker_project, config=config)
    progress = tqdm(
        total=total_updates,
        initial=state.global_step,
        desc="updates",
        disable=not accelerator.is_local_main_process,
    )
    window = _Window()
    pending_failures: list[dict] = []
    model.train()
    while state.global_step < total_updates:
        # the prepared loader re-sets the sampler's epoch from its own counter when iterated: set both
        loader.set_epoch(state.epoch)
        epoch_loader = loader
        if state.batches_in_epoch:
            epoch_loader = accelerator.skip_first_batches(loader, state.batches_in_epoch)
        for batch in epoch_loader:
            pending_failures.extend(batch.get("input_failures", ()))
            with accelerator.accumulate(model):
                inputs = model_inputs(batch)
                if extra_inputs is not None:
                    with accelerator.autocast():  # in the model's precision (bf16 on a GPU)
                        inputs.update(extra_inputs(inputs))
                outputs = model(**inputs)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            for name in loss_names:
                value = getattr(outputs, name, None)
                if value is not None:
                    window.add(f"train/{name}", value)
            if extra_scalars is not None:
                for name, value in extra_scalars(outputs, batch).items():
                    window.add(name, value)
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            if state.global_step % args.logging_steps == 0 or state.global_step == total_updates:
                logs = window.pop(accelerator)
                for group in optimizer.param_groups:
                    logs[f"lr/{group.get('name', 'group')}"] = group["lr"]
                if args.report_to not in (None, "none"):
                    accelerator.log(logs, step=state.global_step)
                progress.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in logs.items() if "loss" in k})
            if args.checkpointing_steps and state.global_step % args.checkpointing_steps == 0:
                merge_input_failures(accelerator, state, pending_failures)
                save_checkpoint(accelerator, args, state)
            if state.global_step >= total_updates:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    progress.close()
    merge_input_failures(accelerator, state, pending_failures)
    failures = state.extra["input_failures"]
    if failures["count"]:
        accelerator.print(
            f"{failures['count']} inputs could not be read and were treated as missing "
            f"{failures['by_modality']} (item ids in training_summary.json)"
        )
    return state


def save_checkpoint(accelerator: Accelerator, args: argparse.Namespace, state: TrainingState) -> str:
    """`accelerator.save_state` + training_state.json; prunes to `checkpoints_total_limit`."""
    folder = os.path.join(args.output_dir, "checkpoints", f"{CHECKPOINT_PREFIX}{state.global_step}")
    accelerator.save_state(folder)
    if accelerator.is_main_process:
        state.save(folder)
        existing = checkpoint_dirs(args.output_dir)
        if args.checkpoints_total_limit:
            for old in existing[: -args.checkpoints_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder
