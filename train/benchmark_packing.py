"""The old padded computation vs packed encoders with sparse vocabulary heads (`ScaleConfig.pack_tokens`,
`ScaleConfig.sparse_prediction`): FLOPs and wall time per product, in one run.

Batches are `train/model_stats.py`'s synthetic pretraining batches at a preset's sizes, with each product's
modalities drawn from a coverage (the share of products holding each modality) and its caption and table
cut to a random 50-100 % of their length. Two coverages: the bundled sample's (caption 97 %, table 82 %,
image 95 %, video 43 %, audio 39 %) and one where half the products lack video and audio. FLOPs are counted
by `FlopCounterMode` (matmuls and attention) on a pretraining step (forward + backward, subset views
included) and on an embedding forward; wall time alternates the two settings of one model over the same
batches.

    python -m train.benchmark_packing                      # sample preset, one CPU thread
    python -m train.benchmark_packing --preset paper --batch_size 4 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_scale import MODALITIES, ScaleConfig, ScaleForPreTraining
from modeling_scale.collator_scale import draw_modality_subset
from modeling_scale.modeling_scale import MODEL_INPUT_NAMES
from train.benchmark_training import PRESETS
from train.components import load_preset
from train.model_stats import paper_sized_batch

COVERAGES = {
    "sample": {"text": 0.97, "table": 0.82, "image": 0.95, "video": 0.43, "audio": 0.39},
    "half without video and audio": {"text": 1.0, "table": 1.0, "image": 1.0, "video": 0.5, "audio": 0.5},
}
"""Share of products holding each modality; the sample's was measured on the converted default sample."""
MODALITY_MASKS = {
    "text": "attention_mask",
    "table": "table_attention_mask",
    "image": "image_mask",
    "video": "video_mask",
    "audio": "audio_mask",
}


PATHS = {
    "padded": {"pack_tokens": False, "sparse_prediction": False},
    "packed": {"pack_tokens": True, "sparse_prediction": True},
}
"""The old computation and the new one."""


def set_path(model: ScaleForPreTraining, label: str) -> None:
    for key, value in PATHS[label].items():
        setattr(model.config, key, value)


def preset(name: str) -> tuple[ScaleConfig, dict[str, int]]:
    """(config, input sizes) of `sample` (the main job's model), or of `benchmark_training`'s presets."""
    if name == "sample":
        overrides = load_preset("sample")["model"]
        sizes = {"text": 36, "table": 64, "regions": 16, "frames": 8, "audio_frames": 256}
    else:
        overrides, sizes = PRESETS[name]
    return ScaleConfig(vocab_size=30522, hidden_dropout_prob=0.0, **overrides), sizes


def covered_batch(
    config: ScaleConfig, sizes: dict[str, int], batch_size: int, coverage: dict[str, float], seed: int
) -> dict[str, torch.Tensor]:
    """A pretraining batch whose products hold each modality with `coverage`'s probability (at least one)
    and captions / tables of 50-100 % of their length; subset views drawn from what each product holds."""
    generator = torch.Generator().manual_seed(seed)
    batch = paper_sized_batch(config, batch_size, seed, sizes)
    rates = torch.tensor([coverage[name] for name in MODALITIES])
    present = torch.rand(batch_size, len(MODALITIES), generator=generator) < rates
    present[~present.any(-1), 0] = True
    for key, length in (("attention_mask", sizes["text"]), ("table_attention_mask", sizes["table"])):
        kept = torch.randint(length // 2, length + 1, (batch_size, 1), generator=generator)
        batch[key] = (torch.arange(length) < kept).long()
    for index, name in enumerate(MODALITIES):
        batch[MODALITY_MASKS[name]] = batch[MODALITY_MASKS[name]] * present[:, index, None]
    views = present[:, None].expand(-1, config.num_subset_views, -1)
    batch["subset_modality_mask"] = draw_modality_subset(
        views, config.subset_keep_probability, generator
    ).long()
    return batch


def counted_flops(model: ScaleForPreTraining, batch: dict) -> tuple[float, float]:
    """(pretraining step, embedding forward) FLOPs of one batch."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).loss.backward()
    model.zero_grad()
    inference = FlopCounterMode(display=False)
    with torch.no_grad(), inference:
        model.scale(**{key: value for key, value in batch.items() if key in MODEL_INPUT_NAMES})
    return counter.get_total_flops(), inference.get_total_flops()


def timed_step(model: ScaleForPreTraining, batch: dict) -> float:
    start = time.perf_counter()
    model(**batch).loss.backward()
    model.zero_grad()
    return time.perf_counter() - start


def run(name: str, batch_size: int, num_batches: int, repeats: int, seed: int = 0) -> dict[str, dict]:
    """Per coverage: FLOPs per product and seconds per product, padded and packed."""
    config, sizes = preset(name)
    torch.manual_seed(seed)
    model = ScaleForPreTraining(config).train()
    results = {}
    for coverage_name, coverage in COVERAGES.items():
        batches = [covered_batch(config, sizes, batch_size, coverage, seed + i) for i in range(num_batches)]
        products = batch_size * num_batches
        row = {}
        for label in PATHS:
            set_path(model, label)
            train, embed = zip(*(counted_flops(model, batch) for batch in batches), strict=True)
            row[f"{label} train GFLOP/product"] = sum(train) / products / 1e9
            row[f"{label} embed GFLOP/product"] = sum(embed) / products / 1e9
            row[f"{label} train s/product"] = 0.0
        for _ in range(repeats):  # alternate, so both see the same machine load
            for label in PATHS:
                set_path(model, label)
                seconds = sum(timed_step(model, batch) for batch in batches)
                row[f"{label} train s/product"] += seconds / products / repeats
        for quantity in ("train GFLOP/product", "embed GFLOP/product", "train s/product"):
            row[f"packed / padded {quantity.split('/')[0].strip()}"] = (
                row[f"packed {quantity}"] / row[f"padded {quantity}"]
            )
        results[coverage_name] = row
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="sample", choices=["sample", *PRESETS])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_batches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.preset, args.batch_size, args.num_batches, args.repeats)
    if args.json:
        print(json.dumps(results))
        return
    print(f"preset {args.preset}, batch {args.batch_size} x {args.num_batches}, {args.threads} thread(s)")
    print("| coverage | path | train GFLOP / product | embed GFLOP / product | train ms / product |")
    print("|---|---|---|---|---|")
    for coverage, row in results.items():
        for label in PATHS:
            print(
                f"| {coverage} | {label} | {row[f'{label} train GFLOP/product']:.2f} | "
                f"{row[f'{label} embed GFLOP/product']:.2f} | {1e3 * row[f'{label} train s/product']:.1f} |"
            )
        print(
            f"| {coverage} | packed / padded | {row['packed / padded train GFLOP']:.2f}x | "
            f"{row['packed / padded embed GFLOP']:.2f}x | {row['packed / padded train s']:.2f}x |"
        )


if __name__ == "__main__":
    main()
