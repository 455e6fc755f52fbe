"""Reproduce the paper's evaluation (Tables 3-5) for a pretrained (and optionally a fine-tuned) SCALE.

    python train/evaluation.py --model_dir outputs/pretrain --finetuned_dir outputs/finetune \
        --data_dir outputs/m5product --output_dir outputs/eval

For every modality combination (default: the paper's Table 3 sequence text -> +image -> +table -> +video ->
+audio; `--combinations table4` adds Table 4's), product embeddings are extracted once per model (batched,
GPU when present) and give:

- coarse retrieval (`retrieval_coarse`, same category = match) and fine-grained retrieval (`retrieval_fine`,
  same product instance = match): mAP@1/5/10, Prec@1/5/10 (train/metrics.py; the authors' definitions);
- classification accuracy: a linear probe (scikit-learn LogisticRegression on frozen pretrained
  `product_embeds`, `classification` train -> test) and, with `--finetuned_dir`, the fine-tuned classifier;
- k-means clustering (k = number of classes) of the `classification` test embeddings: NMI and Purity;
- baselines scored by the same code (train/baselines.py): the frozen text encoder SCALE starts from
  (mean-pooled), SCALE's own per-modality contrastive features, random vectors;
- cross-subset retrieval, the way search is used: coarse queries embedded from T, I, T+I or T+I+Tab against
  the gallery embedded from every modality it has, beside the like-for-like score (gallery embedded from the
  same modalities), and how much the top 10 favour items holding exactly the query's modalities.

Writes OUTPUT_DIR/results.json, OUTPUT_DIR/results.md (tables in the paper's layout), the t-SNE of Fig. 6
(tsne.png) and a heat map of SIMCL's mean alignment matrix S (alignment_matrix.png), and adds the tables to
the model cards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from modeling_scale import MODALITIES
from train.baselines import random_embeddings, text_encoder_embeddings
from train.components import DEFAULT_DATA_DIR, default_text_encoder, load_split
from train.data import check_modalities
from train.embeddings import default_device, extract_embeddings
from train.metrics import (
    clustering_metrics,
    linear_probe_accuracy,
    modality_set_share,
    ranked_gallery,
    retrieval_metrics,
)
from train.modality_set_calibration import modality_weight_names
from train.model_card import write_model_card

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHORT_NAMES = {"text": "T", "table": "Tab", "image": "I", "video": "V", "audio": "A"}
TABLE3 = (
    ("text",),
    ("text", "image"),
    ("text", "image", "table"),
    ("text", "image", "table", "video"),
    ("text", "image", "table", "video", "audio"),
)
TABLE4 = (
    ("image", "table"),
    ("image", "video"),
    ("image", "audio"),
    ("image", "text"),
    ("image", "text", "video"),
    ("image", "text", "audio"),
    ("image", "table", "video"),
    ("image", "text", "table"),
    ("image", "text", "table", "video"),
    ("image", "table", "audio", "video"),
    ("image", "text", "audio", "video"),
    ("image", "text", "table", "audio"),
    ("image", "text", "table", "audio", "video"),
)
COMBINATION_SETS = {
    "table3": TABLE3,
    "table4": TABLE3 + tuple(c for c in TABLE4 if set(c) not in [set(t) for t in TABLE3]),
}
RETRIEVAL_COLUMNS = ("mAP@1", "mAP@5", "mAP@10", "Prec@1", "Prec@5", "Prec@10")
CROSS_SUBSET_QUERIES = (("text",), ("image",), ("text", "image"), ("text", "image", "table"))
"""Query modality sets of the cross-subset table (a caption, a photo, both, both with the table)."""
COARSE_SPLITS = (("retrieval_coarse", "query"), ("retrieval_coarse", "gallery"))


def combination_name(modalities: Sequence[str]) -> str:
    return "+".join(SHORT_NAMES[m] for m in modalities)


def parse_combinations(text: str) -> list[tuple[str, ...]]:
    """`table3`, `table4`, or `"text;text,image;..."`; each combination keeps the order given."""
    if text in COMBINATION_SETS:
        return list(COMBINATION_SETS[text])
    combinations = []
    for part in filter(None, text.split(";")):
        names = tuple(name.strip() for name in part.split(","))
        check_modalities(names)
        combinations.append(names)
    return combinations


class SplitEmbeddings:
    """Embeddings of every item the evaluation needs, extracted once per (model, combination): the splits
    share items (e.g. the classification test set is the coarse retrieval pool on the sample), so the union
    of their item ids is embedded and each split looks its rows up by item id."""

    def __init__(self, data_dir: str, splits: Sequence[tuple[str, str]]):
        from datasets import concatenate_datasets

        self.splits = {key: load_split(data_dir, *key) for key in splits}
        union, seen = [], set()
        for dataset in self.splits.values():
            keep = [i for i, item_id in enumerate(dataset["item_id"]) if item_id not in seen]
            seen.update(dataset["item_id"])
            union.append(dataset.select(keep))
        self.items = concatenate_datasets(union) if len(union) > 1 else union[0]
        self.labels = {key: np.asarray(dataset["label"]) for key, dataset in self.splits.items()}
        self.instances = {key: np.asarray(dataset["instance_id"]) for key, dataset in self.splits.items()}
        self.ids = {key: list(dataset["item_id"]) for key, dataset in self.splits.items()}
        self.item_ids = list(self.items["item_id"])
        self.input_failures: list[dict] = []
        """Inputs embedded as missing because they could not be read (item id, modality, reason)."""

    def embed(self, model, processor, modalities, args, splits=None) -> dict[str, dict[str, np.ndarray]]:
        """Embeddings of the items of `splits` (default: all) using `modalities`, per split."""
        splits = list(self.splits) if splits is None else list(splits)
        needed = {item_id for key in splits for item_id in self.ids[key]}
        items = self.items.select([row for row, item_id in enumerate(self.item_ids) if item_id in needed])
        result = extract_embeddings(
            model,
            processor,
            items,
            modalities=modalities,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.num_workers,
            normalize=False,
        )
        self.input_failures.extend(result.get("input_failures", []))
        rows = self.rows_by_split(result["item_ids"], splits)
        return {
            key: {
                name: result[name][rows[key]]
                for name in ("product_embeds", "modality_embeds", "alignment_scores", "modality_mask")
            }
            for key in splits
        }

    def rows_by_split(self, item_ids: Sequence[str], splits=None) -> dict[tuple[str, str], np.ndarray]:
        """For each split, the positions in `item_ids` of its items, in the split's order."""
        row_of = {item_id: row for row, item_id in enumerate(item_ids)}
        splits = list(self.splits) if splits is None else list(splits)
        return {key: np.array([row_of[i] for i in self.ids[key]], dtype=np.int64) for key in splits}


def _normalised(embeds: np.ndarray) -> np.ndarray:
    return embeds / np.maximum(np.linalg.norm(embeds, axis=-1, keepdims=True), 1e-12)


def simcl_features(modality_embeds: np.ndarray, modality_mask: np.ndarray) -> np.ndarray:
    """Mean of the L2-normalised per-modality contrastive features over the modalities an item has: the
    space SIMCL aligns across modalities (pre-JCT), so a missing modality shifts it little."""
    present = modality_mask[..., None].astype(np.float32)
    summed = (_normalised(modality_embeds) * present).sum(axis=1)
    return summed / np.maximum(present.sum(axis=1), 1.0)


def features_of(split: dict, kind: str) -> np.ndarray:
    """`fused`: the JCT's `product_embeds` (the paper's features); `simcl`: `simcl_features`."""
    if kind == "fused":
        return split["product_embeds"]
    return simcl_features(split["modality_embeds"], split["modality_mask"])


def retrieval_scores(data: SplitEmbeddings, features: dict, config: str, label_of: str, backend: str) -> dict:
    """The paper's retrieval metrics of `config`'s queries against its gallery; `features` maps a split key to
    its (N, D) features."""
    query, gallery = (config, "query"), (config, "gallery")
    labels = {"label": data.labels, "instance": data.instances}[label_of]
    return retrieval_metrics(
        _normalised(features[query]),
        labels[query],
        _normalised(features[gallery]),
        labels[gallery],
        query_ids=data.ids[query],
        gallery_ids=data.ids[gallery],
        backend=backend,
    )


def downstream_scores(data: SplitEmbeddings, features: dict, args) -> dict:
    """Coarse and fine retrieval, linear probe and k-means of one kind of frozen features (split key ->
    (N, D) array): the same code scores SCALE and every baseline."""
    train_key, test_key = ("classification", "train"), ("classification", "test")
    train_known, test_known = data.labels[train_key] >= 0, data.labels[test_key] >= 0
    train_x = _normalised(features[train_key])[train_known]
    test_x = _normalised(features[test_key])[test_known]
    train_y, test_y = data.labels[train_key][train_known], data.labels[test_key][test_known]
    return {
        "coarse": retrieval_scores(data, features, "retrieval_coarse", "label", args.backend),
        "fine": retrieval_scores(data, features, "retrieval_fine", "instance", args.backend),
        "linear_probe_accuracy": linear_probe_accuracy(train_x, train_y, test_x, test_y),
        "clustering": clustering_metrics(test_x, test_y, seed=args.seed),
    }


def evaluate_pretrained(model, processor, data: SplitEmbeddings, combination, args) -> tuple[dict, dict]:
    embeds = data.embed(model, processor, combination, args)
    features = {key: features_of(split, args.features) for key, split in embeds.items()}
    return downstream_scores(data, features, args), embeds


def baseline_scores(data: SplitEmbeddings, full_embeds: dict, max_text_length: int, args) -> dict[str, dict]:
    """`downstream_scores` of the frozen text encoder (`args.text_encoder`), of SCALE's per-modality
    contrastive features (from the all-modality extraction `full_embeds`) and of random vectors."""
    rows = {}
    if args.text_encoder not in (None, "none"):
        frozen = text_encoder_embeddings(
            args.text_encoder, data.items["caption"], max_text_length, args.batch_size, args.device
        )
        positions = data.rows_by_split(data.item_ids)
        rows["frozen text encoder (T)"] = downstream_scores(
            data, {key: frozen[rows_of] for key, rows_of in positions.items()}, args
        )
    for index, modality in enumerate(MODALITIES):
        features = {key: split["modality_embeds"][:, index] for key, split in full_embeds.items()}
        rows[f"SCALE {modality} feature"] = downstream_scores(data, features, args)
    dim = next(iter(full_embeds.values()))["product_embeds"].shape[1]
    rows["random"] = downstream_scores(
        data,
        {
            key: random_embeddings(len(ids), dim, args.seed + i)
            for i, (key, ids) in enumerate(data.ids.items())
        },
        args,
    )
    return rows


def cross_subset_scores(data: SplitEmbeddings, coarse: dict, kind: str, backend: str) -> dict[str, dict]:
    """Coarse queries embedded from each of `CROSS_SUBSET_QUERIES` against the gallery embedded from all its
    modalities (`cross`), against the gallery embedded from the query's modalities (`like_for_like`), and the
    share of the cross top 10 holding exactly the query's modalities (`modality_set`).

    `coarse` maps a frozenset of modalities to the per-split embeddings of the coarse query and gallery."""
    query_key, gallery_key = COARSE_SPLITS
    full = coarse[frozenset(MODALITIES)][gallery_key]
    gallery_x = _normalised(features_of(full, kind))
    rows = {}
    for combination in CROSS_SUBSET_QUERIES:
        embeds = coarse[frozenset(combination)]
        query_x = _normalised(features_of(embeds[query_key], kind))
        ids = (data.ids[query_key], data.ids[gallery_key])
        ranked = ranked_gallery(query_x, gallery_x, 10, *ids, backend=backend)
        features = {key: features_of(split, kind) for key, split in embeds.items()}
        cross = {query_key: features[query_key], gallery_key: features_of(full, kind)}
        rows[combination_name(combination)] = {
            "cross": retrieval_scores(data, cross, "retrieval_coarse", "label", backend),
            "like_for_like": retrieval_scores(data, features, "retrieval_coarse", "label", backend),
            "modality_set": modality_set_share(
                ranked, embeds[query_key]["modality_mask"], full["modality_mask"]
            ),
        }
    return rows


def coarse_embeddings(model, processor, data: SplitEmbeddings, known: dict, args) -> dict:
    """Coarse query / gallery embeddings of the cross-subset table's modality sets and of all modalities:
    those in `known` (frozenset -> per-split embeddings) are reused, the others extracted."""
    coarse = {}
    for combination in (*CROSS_SUBSET_QUERIES, MODALITIES):
        key = frozenset(combination)
        coarse[key] = known.get(key) or data.embed(model, processor, combination, args, splits=COARSE_SPLITS)
    return coarse


@torch.no_grad()
def accuracy_of_classifier(model, product_embeds: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy (x100) of a `ScaleForProductClassification`'s head on its (unnormalised) product embeddings,
    over the items with a known label."""
    known = labels >= 0
    weight = model.classifier.weight
    features = torch.from_numpy(product_embeds[known]).to(device=weight.device, dtype=weight.dtype)
    predictions = model.classifier(features).argmax(-1).cpu().numpy()
    return 100.0 * float((predictions == labels[known]).mean()) if known.any() else 0.0


def classifier_accuracy(model, processor, dataset, modalities, batch_size: int, device) -> float:
    """Accuracy (x100) of a fine-tuned `ScaleForProductClassification` on `dataset` using `modalities`."""
    result = extract_embeddings(
        model,
        processor,
        dataset,
        modalities=modalities,
        batch_size=batch_size,
        device=device,
        normalize=False,
    )
    return accuracy_of_classifier(model, result["product_embeds"], np.asarray(dataset["label"]))


def evaluate_finetuned(model, processor, data: SplitEmbeddings, combination, args) -> tuple[dict, dict]:
    splits = [key for key in data.splits if key != ("classification", "train")]  # no probe to fit
    embeds = data.embed(model, processor, combination, args, splits=splits)
    features = {key: split["product_embeds"] for key, split in embeds.items()}
    test_key = ("classification", "test")
    scores = {
        "accuracy": accuracy_of_classifier(model, features[test_key], data.labels[test_key]),
        "coarse": retrieval_scores(data, features, "retrieval_coarse", "label", args.backend),
        "fine": retrieval_scores(data, features, "retrieval_fine", "instance", args.backend),
    }
    return scores, embeds


def _cell(first: float | None, second: float | None = None) -> str:
    if second is None:
        return "–" if first is None else f"{first:.2f}"
    return f"{_cell(first)} / {_cell(second)}"


def format_tables(results: dict) -> str:
    """Markdown tables in the paper's layout (Table 3, Table 4, Table 5)."""
    pretrained, finetuned = results["pretrained"], results.get("finetuned", {})
    header = "| {} | Accuracy | " + " | ".join(RETRIEVAL_COLUMNS) + " |"
    rule = "|" + "---|" * (2 + len(RETRIEVAL_COLUMNS))
    lines = []

    sequence = [c for c in results["combinations"] if tuple(c) in TABLE3]
    if sequence:
        lines += [
            "**Table 3** (one model, modalities left out) — modalities added at inference to one "
            "five-modality model (the paper pretrains a model per modality set: `python -m train.ablation "
            "--tables 3`); coarse retrieval, pretrain / finetune features; accuracy: fine-tuned "
            "classifier, or the linear probe when no fine-tuned model is given",
            "",
            header.format("Modality"),
            rule,
        ]
        for index, combination in enumerate(sequence):
            name = combination_name(combination)
            label = SHORT_NAMES[combination[0]] if index == 0 else f"+{SHORT_NAMES[combination[-1]]}"
            row_p, row_f = pretrained[name], finetuned.get(name)
            accuracy = row_f["accuracy"] if row_f else row_p["linear_probe_accuracy"]
            cells = [
                _cell(row_p["coarse"][c], row_f["coarse"][c] if row_f else None) for c in RETRIEVAL_COLUMNS
            ]
            lines.append(f"| {label} | {_cell(accuracy)} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += [
        "**Table 4** — modality combinations (retrieval coarse / fine-grained, "
        f"{'fine-tuned' if finetuned else 'pretrained'} features; accuracy: "
        f"{'fine-tuned classifier' if finetuned else 'linear probe'})",
        "",
        header.format("Modality Combinations"),
        rule,
    ]
    for combination in results["combinations"]:
        name = combination_name(combination)
        row = finetuned.get(name) or pretrained[name]
        accuracy = row["accuracy"] if name in finetuned else row["linear_probe_accuracy"]
        cells = [_cell(row["coarse"][c], row["fine"][c]) for c in RETRIEVAL_COLUMNS]
        lines.append(f"| {name} | {_cell(accuracy)} | " + " | ".join(cells) + " |")
    lines.append("")

    lines += [
        f"**Table 5** — downstream tasks on pretrained features ({results['pretrained_features']}; mAP@1 "
        "coarse; accuracy: linear probe; k-means NMI / Purity)",
        "",
        "| Modalities | mAP@1 | Accuracy | NMI | Purity |",
        "|---|---|---|---|---|",
    ]
    for combination in results["combinations"]:
        row = pretrained[combination_name(combination)]
        lines.append(
            f"| {combination_name(combination)} | {_cell(row['coarse']['mAP@1'])} | "
            f"{_cell(row['linear_probe_accuracy'])} | {_cell(row['clustering']['NMI'])} | "
            f"{_cell(row['clustering']['Purity'])} |"
        )
    if results.get("modality_weights"):
        weights = ", ".join(f"{name} {value:.2f}" for name, value in results["modality_weights"].items())
        lines += ["", f"Modality weights in the pretrained `product_embeds` (fitted, no labels): {weights}"]
    if results.get("baselines"):
        lines += ["", *baseline_table(results)]
    if results.get("cross_subset"):
        lines += ["", *cross_subset_table(results["cross_subset"])]
    return "\n".join(lines) + "\n"


def baseline_table(results: dict) -> list[str]:
    """SCALE's all-modality rows beside the baselines, every row from `downstream_scores`."""
    lines = [
        "**Baselines** — frozen features scored like SCALE's (coarse and fine retrieval; accuracy: linear "
        "probe, or the fine-tuned classifier where marked; k-means NMI / Purity)",
        "",
        "| Features | coarse mAP@1 | coarse mAP@10 | coarse Prec@10 | fine mAP@1 | Accuracy | NMI | Purity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    full = combination_name(MODALITIES)
    rows = (
        [(f"SCALE pretrained ({full})", results["pretrained"][full])] if full in results["pretrained"] else []
    )
    rows += list(results["baselines"].items())
    for name, row in rows:
        cells = [
            row["coarse"]["mAP@1"],
            row["coarse"]["mAP@10"],
            row["coarse"]["Prec@10"],
            row["fine"]["mAP@1"],
        ]
        cells += [row["linear_probe_accuracy"], row["clustering"]["NMI"], row["clustering"]["Purity"]]
        lines.append(f"| {name} | " + " | ".join(_cell(value) for value in cells) + " |")
    tuned = results.get("finetuned", {}).get(full)
    if tuned:
        cells = [tuned["coarse"]["mAP@1"], tuned["coarse"]["mAP@10"], tuned["coarse"]["Prec@10"]]
        cells += [tuned["fine"]["mAP@1"], tuned["accuracy"]]
        lines.append(
            f"| SCALE fine-tuned ({full}, classifier accuracy) | "
            + " | ".join(_cell(value) for value in cells)
            + " | – | – |"
        )
    return lines


def cross_subset_table(cross_subset: dict) -> list[str]:
    """Queries from some modalities against the gallery embedded from all of theirs (how search is used)."""
    lines = [
        "**Cross-subset retrieval** — coarse queries embedded from the listed modalities against the gallery "
        "embedded from every modality it has; like-for-like: the gallery embedded from the query's "
        "modalities; own-set share: % of the top 10 holding exactly the query's modalities, against that "
        "set's % of the gallery",
        "",
        "| Features | Query | mAP@1 | mAP@10 | Prec@10 | Prec@10 like-for-like | own-set share top 10 | "
        "own-set share gallery | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for features, rows in cross_subset.items():
        for query, row in rows.items():
            cross, share = row["cross"], row["modality_set"]
            cells = [cross["mAP@1"], cross["mAP@10"], cross["Prec@10"], row["like_for_like"]["Prec@10"]]
            cells += [share["top_share"], share["gallery_share"], share["ratio"]]
            lines.append(f"| {features} | {query} | " + " | ".join(_cell(value) for value in cells) + " |")
    return lines


def mean_alignment(embeds: dict) -> np.ndarray:
    """Mean S[i, j] over the items that have both modalities i and j (NaN where no item has both)."""
    scores = np.concatenate([split["alignment_scores"] for split in embeds.values()])
    present = np.concatenate([split["modality_mask"] for split in embeds.values()]).astype(bool)
    both = present[:, :, None] & present[:, None, :]
    counts = both.sum(0)
    return np.where(counts > 0, (scores * both).sum(0) / np.maximum(counts, 1), np.nan)


def plot_alignment(matrix: np.ndarray, path: str) -> Figure:
    """Heat map of `matrix` with each known value written in its cell, saved to `path`; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.6, 4))
    image = axis.imshow(matrix, cmap="viridis")
    axis.set_xticks(range(len(MODALITIES)), MODALITIES, rotation=45)
    axis.set_yticks(range(len(MODALITIES)), MODALITIES)
    for i in range(len(MODALITIES)):
        for j in range(len(MODALITIES)):
            if not np.isnan(matrix[i, j]):
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    axis.set_title("SIMCL alignment matrix S (mean)")
    figure.colorbar(image, ax=axis)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure


def plot_tsne(embeds: np.ndarray, labels: np.ndarray, path: str, seed: int) -> Figure:
    """Fig. 6: t-SNE of product embeddings coloured by category, saved to `path`; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(embeds) - 1) // 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeds)
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab20", s=8)
    axis.set_title(f"t-SNE of product embeddings ({len(np.unique(labels))} categories)")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure


def load_model(path: str, head: str, device):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoProcessor

    auto = AutoModelForSequenceClassification if head == "classification" else AutoModel
    model = auto.from_pretrained(path).to(device).eval()
    return model, AutoProcessor.from_pretrained(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", default="outputs/pretrain", help="pretrained SCALE (save_pretrained)")
    parser.add_argument("--finetuned_dir", default=None, help="fine-tuned ScaleForProductClassification")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="the converted dataset's folder")
    parser.add_argument(
        "--output_dir", default="outputs/eval", help="where results.json, results.md and the plots go"
    )
    parser.add_argument(
        "--combinations", default="table3", help="table3, table4, or e.g. 'text;text,image;text,image,table'"
    )
    parser.add_argument("--batch_size", type=int, default=64, help="products per embedding forward pass")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers running the processor")
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "faiss"],
        help="retrieval search: chunked exact torch (GPU) or FAISS (CPU)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the clustering's, the random baseline's and t-SNE's seed"
    )
    parser.add_argument(
        "--features",
        default="fused",
        choices=["fused", "simcl"],
        help="pretrained features: the JCT's product_embeds (paper) or the mean of the "
        "per-modality SIMCL features (see simcl_features)",
    )
    parser.add_argument(
        "--text_encoder",
        default=default_text_encoder(),
        help="the BERT folder SCALE's text encoder started from: its frozen, mean-pooled features are a "
        "baseline row ('none' to skip)",
    )
    parser.add_argument("--no_baselines", action="store_true", help="skip the baseline rows")
    parser.add_argument(
        "--no_plots", action="store_true", help="skip S's mean matrix and the t-SNE (plots and results)"
    )
    parser.add_argument("--no_model_card", action="store_true", help="leave the models' README.md untouched")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device) if args.device else default_device()
    return args


def evaluate(args: argparse.Namespace) -> dict:
    os.makedirs(args.output_dir, exist_ok=True)
    start = time.perf_counter()
    combinations = parse_combinations(args.combinations)
    splits = [
        ("retrieval_coarse", "query"),
        ("retrieval_coarse", "gallery"),
        ("retrieval_fine", "query"),
        ("retrieval_fine", "gallery"),
        ("classification", "train"),
        ("classification", "test"),
    ]
    data = SplitEmbeddings(args.data_dir, splits)
    results: dict = {
        "combinations": [list(c) for c in combinations],
        "pretrained": {},
        "finetuned": {},
        "model_dir": args.model_dir,
        "finetuned_dir": args.finetuned_dir,
        "data_dir": args.data_dir,
        "pretrained_features": args.features,
        "split_sizes": {f"{c}/{s}": len(d) for (c, s), d in data.splits.items()},
    }

    model, processor = load_model(args.model_dir, "base", args.device)
    results["modality_weights"] = modality_weight_names(model)
    by_modalities = {}
    for combination in combinations:
        name = combination_name(combination)
        results["pretrained"][name], by_modalities[frozenset(combination)] = evaluate_pretrained(
            model, processor, data, combination, args
        )
    if frozenset(MODALITIES) not in by_modalities:
        by_modalities[frozenset(MODALITIES)] = data.embed(model, processor, MODALITIES, args)
    full_embeds, full_name = by_modalities[frozenset(MODALITIES)], combination_name(MODALITIES)
    coarse = coarse_embeddings(model, processor, data, by_modalities, args)
    results["cross_subset"] = {"pretrained": cross_subset_scores(data, coarse, args.features, args.backend)}
    if not args.no_baselines:
        results["baselines"] = baseline_scores(data, full_embeds, model.config.max_text_length, args)
    del model, by_modalities, coarse

    if args.finetuned_dir:
        model, processor = load_model(args.finetuned_dir, "classification", args.device)
        by_modalities = {}
        for combination in combinations:
            results["finetuned"][combination_name(combination)], by_modalities[frozenset(combination)] = (
                evaluate_finetuned(model, processor, data, combination, args)
            )
        coarse = coarse_embeddings(model, processor, data, by_modalities, args)
        results["cross_subset"]["finetuned"] = cross_subset_scores(data, coarse, "fused", args.backend)
        del model, by_modalities, coarse

    if not args.no_plots:
        matrix = mean_alignment(full_embeds)
        results["alignment_matrix"] = {
            "modalities": list(MODALITIES),
            "combination": full_name,
            "mean_S": np.where(np.isnan(matrix), None, matrix).tolist(),
        }
        plot_alignment(matrix, os.path.join(args.output_dir, "alignment_matrix.png"))
        test_key = ("classification", "test")
        known = data.labels[test_key] >= 0
        plot_tsne(
            _normalised(full_embeds[test_key]["product_embeds"])[known],
            data.labels[test_key][known],
            os.path.join(args.output_dir, "tsne.png"),
            args.seed,
        )

    results["input_failures"] = {"count": len(data.input_failures), "items": data.input_failures[:100]}
    results["seconds"] = round(time.perf_counter() - start, 1)
    markdown = format_tables(results)
    with open(os.path.join(args.output_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(args.output_dir, "results.md"), "w") as handle:
        handle.write(markdown)
    if not args.no_model_card:
        write_model_card(args.model_dir, task="pretraining", evaluation_markdown=markdown)
        if args.finetuned_dir:
            write_model_card(args.finetuned_dir, task="classification", evaluation_markdown=markdown)
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = evaluate(args)
    print(format_tables(results))
    print(f"results in {args.output_dir}/results.{{json,md}} ({results['seconds']} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
