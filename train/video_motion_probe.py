"""Linear probe of what SCALE's video features know about motion (and the sample's other factors).

    python train/video_motion_probe.py --data_dir outputs/m5product --model_dirs outputs/pretrain \
        [--model_dirs outputs/other ...] [--random_init] [--factors motion,group]

Every product of the converted dataset that has a video (all splits, each item once) is embedded from its
video alone (`train/embeddings.extract_embeddings` with `modalities=("video",)`, so no other input is
decoded). Two features per model: `video` is the video's contrastive feature (`video_embeds`, what
`ScaleModel.get_video_features` returns, the video row of `evaluation.py --features simcl`), `fused` is the
JCT's `product_embeds` from the video alone. A scikit-learn logistic regression on standardised features
(`train/metrics.linear_probe_accuracy`) is scored by stratified k-fold cross-validation, on the factor read
from the product's category name (the generated sample names categories `group/material/colour/motion/pitch`;
`motion` is `left_to_right` or `right_to_left`, and only the video shows it). `--random_init` adds, per model,
an untrained model of the same config (same processor), the floor that pretraining should beat.

Prints a markdown table (model, feature, factor, products, accuracy mean +- std over the folds, chance = the
majority class) and, with `--output_json`, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

if __package__ in (None, ""):  # `python train/video_motion_probe.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train.components import DEFAULT_DATA_DIR
from train.metrics import linear_probe_accuracy

FACTORS = ("group", "material", "colour", "motion", "pitch")
"""The fields of the generated sample's category names, in order."""
FEATURES = ("video", "fused")


def category_factor(label_name: str, factor: str) -> str:
    """`"toys/plush/red/left_to_right/high"`, `"motion"` -> `"left_to_right"`."""
    parts = label_name.split("/")
    if len(parts) != len(FACTORS):
        raise ValueError(
            f"category {label_name!r} is not a generated sample's group/material/colour/motion/pitch name"
        )
    return parts[FACTORS.index(factor)]


def products_with_video(data_dir: str):
    """Every item with a video, across all configs and splits of the converted folder, each item once (a
    `datasets.Dataset` whose media stay encoded), and the category names of its `label` column."""
    from datasets import Video, concatenate_datasets, get_dataset_config_names, get_dataset_split_names

    from train.components import load_split

    parts, seen = [], set()
    for config in get_dataset_config_names(data_dir):
        for split in get_dataset_split_names(data_dir, config):
            dataset = load_split(data_dir, config, split).select_columns(["item_id", "video", "label"])
            dataset = dataset.cast_column("video", Video(decode=False))
            keep = []
            for row, (item_id, video, label) in enumerate(
                zip(dataset["item_id"], dataset["video"], dataset["label"], strict=True)
            ):
                if video is not None and label >= 0 and item_id not in seen:
                    seen.add(item_id)
                    keep.append(row)
            parts.append(dataset.select(keep))
    items = concatenate_datasets(parts)
    return items, items.features["label"].names


def cross_validated_accuracy(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int
) -> tuple[float, float]:
    """Mean and standard deviation over stratified folds of the linear probe's test accuracy (x100)."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = [
        linear_probe_accuracy(features[train], labels[train], features[test], labels[test])
        for train, test in splitter.split(features, labels)
    ]
    return float(np.mean(scores)), float(np.std(scores))


def video_features(model, processor, items, batch_size: int, device) -> dict[str, np.ndarray]:
    """`video` (video_embeds) and `fused` (product_embeds) features of every item, from its video alone."""
    from modeling_scale import MODALITIES
    from train.embeddings import extract_embeddings

    result = extract_embeddings(
        model, processor, items, modalities=("video",), batch_size=batch_size, device=device, normalize=False
    )
    missing = int((result["modality_mask"][:, MODALITIES.index("video")] == 0).sum())
    if missing:
        print(f"  {missing} videos could not be read and were embedded as missing", file=sys.stderr)
    return {
        "video": result["modality_embeds"][:, MODALITIES.index("video")],
        "fused": result["product_embeds"],
    }


def load_models(model_dir: str, random_init: bool, device):
    """(name, model, processor) for the pretrained model in `model_dir` and, with `random_init`, an untrained
    model of the same config."""
    import torch
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    name = os.path.basename(os.path.normpath(model_dir))
    models = [(name, model)]
    if random_init:
        torch.manual_seed(0)
        models.append((f"{name} (untrained)", type(model)(model.config).to(device).eval()))
    return [(label, loaded, processor) for label, loaded in models]


def format_table(rows: list[dict]) -> str:
    lines = [
        "| model | encoder | feature | factor | products | accuracy (%) | chance (%) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['video_frame_encoder']} | {row['feature']} | {row['factor']} | "
            f"{row['products']} | {row['accuracy']:.1f} ± {row['accuracy_std']:.1f} | {row['chance']:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="converted generated-sample folder")
    parser.add_argument(
        "--model_dirs", nargs="+", required=True, help="pretrained SCALE folders (save_pretrained)"
    )
    parser.add_argument("--random_init", action="store_true", help="also probe an untrained model of each")
    parser.add_argument(
        "--factors", default="motion", help=f"comma-separated category factors to probe, of {FACTORS}"
    )
    parser.add_argument(
        "--features", default=",".join(FEATURES), help=f"comma-separated features, of {FEATURES}"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--output_json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    args.factors = [factor.strip() for factor in args.factors.split(",") if factor.strip()]
    args.features = [feature.strip() for feature in args.features.split(",") if feature.strip()]
    for value, allowed, option in (
        (args.factors, FACTORS, "--factors"),
        (args.features, FEATURES, "--features"),
    ):
        unknown = sorted(set(value) - set(allowed))
        if unknown or not value:
            parser.error(f"{option}: {unknown or 'none given'}; choose from {allowed}")
    if args.folds < 2:
        parser.error("--folds must be >= 2")
    return args


def probe(args: argparse.Namespace) -> list[dict]:
    from train.embeddings import default_device

    device = args.device or default_device()
    items, label_names = products_with_video(args.data_dir)
    names = [label_names[label] for label in items["label"]]
    factor_labels = {factor: np.array([category_factor(n, factor) for n in names]) for factor in args.factors}
    rows = []
    for model_dir in args.model_dirs:
        for name, model, processor in load_models(model_dir, args.random_init, device):
            features = video_features(model, processor, items, args.batch_size, device)
            for feature in args.features:
                for factor, labels in factor_labels.items():
                    mean, std = cross_validated_accuracy(features[feature], labels, args.folds, args.seed)
                    _, counts = np.unique(labels, return_counts=True)
                    rows.append(
                        {
                            "model": name,
                            "model_dir": model_dir,
                            "video_frame_encoder": model.config.video_frame_encoder,
                            "feature": feature,
                            "factor": factor,
                            "products": len(labels),
                            "accuracy": mean,
                            "accuracy_std": std,
                            "chance": 100.0 * counts.max() / counts.sum(),
                        }
                    )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = probe(args)
    print(format_table(rows))
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
