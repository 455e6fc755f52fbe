"""The paper's ablations run the paper's way, each row pretrained from scratch with several seeds:

    .venv/bin/python -m train.ablation --tables 3,6,7,8,noisy --seeds 0,1,2

- Table 3 (`--protocol paper`, the default): one model pretrained per modality set (Text, +Image, +Table,
  +Video, +Audio), each evaluated on the modalities it was trained with. `--protocol leave_out` instead
  evaluates one five-modality model with the other modalities left out at inference (what `evaluation.py`'s
  Table 3 reports: robustness to missing inputs, a different question).
- Table 6: SIMCL's S on the contrastive pairs (IMCL), on the masked tasks (PRE), both, neither.
- Table 7: the table's masked task over whole entities (MEM) or single word pieces (MLM).
- Table 8: separate caption and table encoders (T/Tab) or the table appended to the caption and read by the
  text encoder alone (T+Tab).
- `--modalities text,table,image` pretrains and scores Tables 6, 7 and 8 on those modalities instead of all
  five (a third of the CPU time; every pair the table's rows change is kept).
- noisy: on a sample whose `--noisy_modality` (default: the table) shows another product's for
  `--noisy_fraction` (default: half) of the listings (`generate_sample --noisy_modality table
  --noisy_fraction 0.5`), pretraining without and with SIMCL's weights; besides retrieval it reports S's mean
  weight of each pair for the listings whose noisy modality is unrelated and for the others, and the ceilings
  of any weighting: at retrieval, the same models scored with the noisy modality left out for exactly the
  listings where it is unrelated (an oracle) and for every listing; in training, the unweighted recipe
  pretrained on the clean sample (it never sees an unrelated pair), and every model scored on the clean
  sample's listings too (what the encoders learned, apart from what the noisy listings cost at scoring).

`--objective paper` pretrains every run with the paper's losses alone (no subset-consistency term, no
distillation toward the text encoder: the objective the paper's ablations were run with); its runs live
apart from ours (`__paper_objective` in their folder names), and fuse the modalities' embeddings with the
plain mean, the paper's fusion (`--modality_weights mean`). Our fitted weights rate each modality by how
well it agrees with the others; under the paper's losses the photo agrees with neither caption nor table
although it retrieves better than the caption, and the weights cost Table 6's runs 4.8 mAP@10.

Every row is scored on the pretrained features like `evaluation.py` (coarse retrieval mAP@k / Prec@k, linear
probe accuracy for the classification column; the paper's accuracy is after fine-tuning, which the ablation
skips to fit a CPU) and printed as mean ± std over the seeds. The seeds are training seeds on one generated
sample. Runs shared by several tables (the all-modality default row) are trained once. Each run is skipped
when its output is complete, so the command can be stopped and rerun; a run's folder is named by its recipe
with `--config_overrides` and `--pretrain_args`, and records the rest of what its training depends on
(`RUN_SETTINGS`): a rerun that differs there stops before training anything instead of scoring the old runs.
`--jobs` runs several at once, each with its share of the cores. Results: OUTPUT_ROOT/ablation.{md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("text", "table", "image", "video", "audio")
TABLE3_ORDER = ("text", "image", "table", "video", "audio")
"""The paper's Table 3 adds modalities in this order."""
METRICS = ("mAP@1", "mAP@5", "mAP@10", "Prec@1", "Prec@5", "Prec@10")


OBJECTIVES = {"ours": "", "paper": "subset_loss_weight=0,distillation_loss_weight=0"}
"""The pretraining objectives (`--objective`) as model config overrides: ours, and the paper's losses alone
(no subset-consistency term, no distillation toward the text encoder)."""


@dataclass(frozen=True)
class Run:
    """One pretraining recipe: the data it reads, its modalities, its objective and its options (a seed makes
    it a run)."""

    data: str = "clean"
    modalities: tuple[str, ...] = MODALITIES
    overrides: str = ""
    pretrain_options: tuple[str, ...] = ()
    objective: str = "ours"

    @property
    def slug(self) -> str:
        parts = [self.data, "-".join(m[:2] for m in self.modalities)]
        parts += [] if self.objective == "ours" else [f"{self.objective}_objective"]
        overrides = ["_".join(map(path_name, item.split("=", 1))) for item in self.overrides.split(",")]
        parts += ["+".join(overrides)] if self.overrides else []
        parts += ["_".join(map(option_name, self.pretrain_options))] if self.pretrain_options else []
        return "__".join(parts)


def option_name(option: str) -> str:
    """A pretrain option as part of a folder name: without its dashes, a path as `path_name` writes it."""
    return path_name(option.strip("-"))


def path_name(text: str) -> str:
    """`text` as part of a folder name: a path by its last part and a short hash of the whole (its slashes
    would nest folders, and two paths with the same last part must not share a folder); other text as is."""
    if "/" not in text and os.sep not in text:
        return text
    return f"{Path(text).name}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Row:
    table: str
    label: str
    run: Run
    evaluate_on: tuple[str, ...] = MODALITIES


DEFAULT = Run()


def noisy_data_kind(modality: str, fraction: float = 0.5) -> str:
    """The name of the sample with `modality` unrelated for `fraction` of its listings (and of its runs)."""
    return f"noisy_{modality}" if fraction == 0.5 else f"noisy_{modality}_{fraction:g}"


def table_rows(
    table: str,
    protocol: str,
    modalities: tuple[str, ...] = MODALITIES,
    noisy_modality: str = "table",
    noisy_fraction: float = 0.5,
) -> list[Row]:
    """The rows of one table, in the paper's order; Tables 6, 7 and 8 pretrain and score on `modalities`,
    the noisy rows on caption, table, image and `noisy_modality`."""
    base = Run(modalities=modalities)
    if table == "3":
        rows = []
        for count in range(1, len(TABLE3_ORDER) + 1):
            modalities = tuple(m for m in MODALITIES if m in TABLE3_ORDER[:count])
            label = "Text" if count == 1 else f"+{TABLE3_ORDER[count - 1].capitalize()}"
            run = Run(modalities=modalities) if protocol == "paper" else DEFAULT
            rows.append(Row("3", label, run, modalities))
        return rows
    if table == "6":
        labels = {"none": "neither", "contrastive": "IMCL", "masked": "PRE", "both": "IMCL + PRE"}
        return [
            Row(
                "6",
                label,
                base if weighting == "both" else replace(base, overrides=f"simcl_weighting={weighting}"),
                modalities,
            )
            for weighting, label in labels.items()
        ]
    if table == "7":
        return [
            Row("7", "MLM", replace(base, overrides="table_masking=token"), modalities),
            Row("7", "MEM", base, modalities),
        ]
    if table == "8":
        return [
            Row("8", "T+Tab", replace(base, pretrain_options=("--table_in_caption",)), modalities),
            Row("8", "T/Tab", base, modalities),
        ]
    if table == "noisy":  # caption, table and image: what most listings have, so most have every pair
        modalities = tuple(m for m in MODALITIES if m in ("text", "table", "image", noisy_modality))
        data = noisy_data_kind(noisy_modality, noisy_fraction)
        return [
            Row("noisy", "no SIMCL", Run(data, modalities, "simcl_weighting=none"), modalities),
            Row("noisy", "SIMCL", Run(data, modalities), modalities),
        ]
    raise ValueError(f"unknown table {table!r}; choose among 3, 6, 7, 8, noisy")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_root", default=str(REPO_ROOT / "outputs" / "ablation"))
    parser.add_argument("--tables", default="3,6,7,8,noisy", help="comma-separated: 3, 6, 7, 8, noisy")
    parser.add_argument(
        "--protocol", default="paper", choices=["paper", "leave_out"], help="Table 3's protocol"
    )
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (one generated sample)")
    parser.add_argument(
        "--size", default="default", choices=["tiny", "default"], help="generated sample size"
    )
    parser.add_argument("--pretrain_epochs", type=float, default=4)
    parser.add_argument("--max_steps", type=int, default=None, help="cap every pretraining (smoke tests)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--calibration_products", type=int, default=2048)
    parser.add_argument("--model_config", default="sample")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each with cores / jobs threads")
    parser.add_argument(
        "--config_overrides",
        default="",
        help="model config overrides for every run, joined with each row's own (e.g. alignment=relative)",
    )
    parser.add_argument(
        "--pretrain_args",
        default="",
        help="extra pretrain.py options for every run (config overrides go in --config_overrides)",
    )
    parser.add_argument(
        "--modalities",
        default=",".join(MODALITIES),
        help="Tables 6, 7 and 8's modalities (the paper's: all five; text,table,image takes a third of "
        "the CPU time and keeps every pair the table's rows change)",
    )
    parser.add_argument(
        "--noisy_modality",
        default="table",
        choices=MODALITIES,
        help="the modality made unrelated for --noisy_fraction of the listings that have it",
    )
    parser.add_argument(
        "--noisy_fraction",
        type=float,
        default=0.5,
        help="the share of the listings with --noisy_modality whose content is another product's",
    )
    parser.add_argument(
        "--objective",
        default="ours",
        choices=list(OBJECTIVES),
        help="pretraining losses of every run: ours, or the paper's alone (no subset-consistency and no "
        "distillation term: the objective the paper's ablations were run with)",
    )
    parser.add_argument(
        "--modality_weights",
        default=None,
        choices=["fitted", "mean"],
        help="how each run fuses its modalities' embeddings after pretraining: weights fitted to their "
        "agreement (train/modality_set_calibration.py) or the plain mean (default: fitted with --objective "
        "ours, mean with --objective paper, the paper's fusion)",
    )
    parser.add_argument(
        "--rows", default=None, help="only these rows, ';'-separated labels (e.g. 'neither;SIMCL')"
    )
    args = parser.parse_args(argv)
    args.tables = [table.strip() for table in args.tables.split(",") if table.strip()]
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    chosen = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if unknown := sorted(set(chosen) - set(MODALITIES)) or not chosen:
        parser.error(f"--modalities: unknown {unknown or 'empty'}; choose among {', '.join(MODALITIES)}")
    args.modalities = tuple(m for m in MODALITIES if m in chosen)
    if "--config_overrides" in args.pretrain_args.split():
        parser.error("--pretrain_args: pass config overrides as --config_overrides (joined with each row's)")
    args.rows = None if args.rows is None else {label.strip() for label in args.rows.split(";")}
    if args.modality_weights is None:
        args.modality_weights = "mean" if args.objective == "paper" else "fitted"
    return args


def sample_folders(root: Path, kind: str, size: str) -> tuple[Path, Path]:
    """The raw sample and its conversion for a data `kind` (`noisy_data_kind`'s name or "clean") and size;
    a size other than the default has folders of its own, so a smoke test's sample never feeds a real run."""
    name = kind if size == "default" else f"{kind}_{size}"
    return root / f"sample_{name}_raw", root / f"m5product_{name}"


def prepare_data(root: Path, kind: str, size: str) -> Path:
    """Generate and convert the sample (`kind` from `noisy_data_kind`: that modality unrelated for a share of
    the listings that have it)."""
    raw, data = sample_folders(root, kind, size)
    python = sys.executable
    if not (raw / "sample_info.json").exists():
        command = [python, "-m", "dataset_script.generate_sample", str(raw), "--size", size, "--seed", "0"]
        if kind.startswith("noisy_"):  # noisy_data_kind's name: noisy_<modality>[_<fraction>]
            _, modality, *fraction = kind.split("_")
            command += ["--noisy_modality", modality, "--noisy_fraction", fraction[0] if fraction else "0.5"]
        subprocess.run(command, check=True, cwd=REPO_ROOT)
    if not (data / "_conversion" / "summary.json").exists():
        command = [python, "-m", "dataset_script.convert_datatrove", str(raw), str(data), "--workers", "1"]
        subprocess.run(command, check=True, cwd=REPO_ROOT)
    return data


def run_folder(root: Path, run: Run, seed: int, args: argparse.Namespace) -> Path:
    """A run's folder, named by its recipe with the command's `--config_overrides` and `--pretrain_args`
    (recipes that differ never share a folder) and its seed."""
    overrides = ",".join(o for o in (args.config_overrides, run.overrides) if o)
    recipe = replace(
        run, overrides=overrides, pretrain_options=(*run.pretrain_options, *args.pretrain_args.split())
    )
    return root / "runs" / f"{recipe.slug}__seed{seed}"


RUN_SETTINGS = (
    "size",
    "model_config",
    "pretrain_epochs",
    "batch_size",
    "max_steps",
    "calibration_products",
    "modality_weights",
)
"""What a run's training depends on besides its folder's name: recorded in the folder, checked on a rerun."""

UNRECORDED_SETTINGS = {"modality_weights": "fitted"}
"""What a run recorded before a setting existed was trained with (runs before `--modality_weights` fitted)."""


def check_run_settings(folder: Path, args: argparse.Namespace) -> None:
    """Record the command's `RUN_SETTINGS` in a new run folder; refuse to resume or reuse one trained with
    others (it would score a different training under this command's table)."""
    record = folder / "run_settings.json"
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    if record.exists():
        recorded = json.loads(record.read_text())
        if differing := [
            f"{k}={recorded.get(k, UNRECORDED_SETTINGS.get(k))!r} (now {v!r})"
            for k, v in settings.items()
            if recorded.get(k, UNRECORDED_SETTINGS.get(k)) != v
        ]:
            raise SystemExit(
                f"{folder} was trained with {', '.join(differing)}: "
                "choose another --output_root or move it away"
            )
    elif (folder / "pretrain").exists():
        raise SystemExit(
            f"{folder} holds a pretraining without a record of its settings ({', '.join(RUN_SETTINGS)}): "
            "choose another --output_root or move it away"
        )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(settings, indent=1))


def run_one(
    run: Run, seed: int, data: Path, root: Path, args: argparse.Namespace, threads: int
) -> Path | None:
    """Pretrain one (recipe, seed) and evaluate it on what the tables' rows score; returns its results.json
    (None when no row scores it)."""
    folder = run_folder(root, run, seed, args)
    check_run_settings(folder, args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    python = sys.executable
    log = folder / "log.txt"
    model = folder / "pretrain"
    if not (model / "training_summary.json").exists():
        command = [
            python, "train/pretrain.py", "--data_dir", str(data), "--output_dir", str(model),
            "--model_config", args.model_config, "--trim_vocabulary",
            "--modalities", ",".join(run.modalities),
            "--num_epochs", str(args.pretrain_epochs), "--per_device_batch_size", str(args.batch_size),
            "--seed", str(seed), "--calibration_products", str(args.calibration_products),
            *(["--agreement_products", "0"] if args.modality_weights == "mean" else []),
            "--num_workers", "0", "--resume_from_checkpoint", "latest", "--checkpointing_steps", "100",
            "--checkpoints_total_limit", "1", *run.pretrain_options, *args.pretrain_args.split(),
        ]  # fmt: skip
        every = (args.config_overrides, OBJECTIVES[run.objective], run.overrides)
        if overrides := ",".join(o for o in every if o):
            command += ["--config_overrides", overrides]  # the row's own last: it wins on a shared key
        if args.max_steps:
            command += ["--max_steps", str(args.max_steps)]
        with open(log, "a") as handle:
            subprocess.run(
                command, check=True, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
    evaluations = sorted({row.evaluate_on for row in rows_of(args) if row.run == run}, key=len)
    if not evaluations:  # a run no table row scores (the noisy table's clean reference): its own diagnostics
        return None
    results = folder / "eval" / "results.json"
    if not results.exists():
        command = [
            python, "train/evaluation.py", "--model_dir", str(model), "--data_dir", str(data),
            "--output_dir", str(folder / "eval"), "--seed", str(seed), "--no_baselines", "--no_plots",
            "--no_model_card", "--combinations", ";".join(",".join(c) for c in evaluations),
        ]  # fmt: skip
        with open(log, "a") as handle:
            subprocess.run(
                command, check=True, cwd=REPO_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
    return results


def rows_of(args: argparse.Namespace, tables: Sequence[str] | None = None) -> list[Row]:
    """The rows to run, of `tables` (default: all chosen), filtered by `--rows`."""
    rows = [
        with_objective(row, args.objective)
        for table in tables or args.tables
        for row in table_rows(table, args.protocol, args.modalities, args.noisy_modality, args.noisy_fraction)
    ]
    return [row for row in rows if args.rows is None or row.label in args.rows]


def with_objective(row: Row, objective: str) -> Row:
    """`row` pretrained with `objective` (a key of `OBJECTIVES`)."""
    return replace(row, run=replace(row.run, objective=objective))


def clean_reference(args: argparse.Namespace) -> list[Row]:
    """With the noisy table: its unweighted recipe pretrained on the clean sample, a model that never saw an
    unrelated pair (the ceiling of any weighting in training); scored by `noisy_diagnostics` like the rows."""
    if "noisy" not in args.tables:
        return []
    rows = table_rows("noisy", args.protocol, args.modalities, args.noisy_modality, args.noisy_fraction)
    unweighted = next(row for row in rows if row.label == "no SIMCL")
    reference = replace(unweighted, label="no SIMCL, clean sample", run=replace(unweighted.run, data="clean"))
    return [with_objective(reference, args.objective)]


def row_scores(results: dict, modalities: Sequence[str]) -> dict[str, float]:
    """The paper's columns of one evaluated combination: probe accuracy, coarse mAP@k and Prec@k."""
    from train.evaluation import combination_name

    entry = results["pretrained"][combination_name(modalities)]
    return {"Accuracy": entry["linear_probe_accuracy"], **{m: entry["coarse"][m] for m in METRICS}}


RETRIEVAL_COLUMNS = ("mAP@1", "mAP@10", "Prec@10")
"""The columns of the noisy setting's retrieval ceilings."""


def retrieval_ceilings(
    embeds: np.ndarray,
    embeds_without: np.ndarray,
    unrelated: np.ndarray,
    item_ids: Sequence[str],
    labels: Sequence,
    num_queries: int,
) -> dict[str, dict[str, float]]:
    """Coarse retrieval (the first `num_queries` rows against the rest) as embedded (`all`), when the listings
    flagged `unrelated` are embedded without the noisy modality (`oracle`) and when every listing is (`left
    out`)."""
    oracle = np.where(np.asarray(unrelated)[:, None], embeds_without, embeds)
    return {
        name: coarse_retrieval(chosen, item_ids, labels, num_queries)
        for name, chosen in (("all", embeds), ("oracle", oracle), ("left out", embeds_without))
    }


def coarse_retrieval(
    embeds: np.ndarray, item_ids: Sequence[str], labels: Sequence, num_queries: int
) -> dict[str, float]:
    """`RETRIEVAL_COLUMNS` of the first `num_queries` rows searching the rest."""
    from train.metrics import retrieval_metrics

    metrics = retrieval_metrics(
        embeds[:num_queries], labels[:num_queries], embeds[num_queries:], labels[num_queries:],
        query_ids=item_ids[:num_queries], gallery_ids=item_ids[num_queries:],
    )  # fmt: skip
    return {column: metrics[column] for column in RETRIEVAL_COLUMNS}


def noisy_diagnostics(
    model_dir: Path,
    data_dir: Path,
    raw_dir: Path,
    modalities: Sequence[str],
    noisy_modality: str,
    clean_data_dir: Path,
) -> dict[str, dict[str, float]]:
    """What the weights do and what any weighting could gain, over the coarse pool embedded from `modalities`.

    `unrelated` / `own`: S's mean weight of every pair holding `noisy_modality`, and of every other pair, over
    the listings that have both of the pair's, for the listings whose noisy modality is unrelated and for the
    others. `all` / `oracle` / `left out`: coarse retrieval as is, with the noisy modality left out of
    exactly the listings where it is unrelated (what a perfect weighting of the fused embedding would reach)
    and of every listing. `clean listings`: coarse retrieval over the same listings with their own content
    (`clean_data_dir`, the sample generated without the noise), which tells what the encoders learned from
    what the noisy listings cost at scoring."""
    import torch
    from datasets import concatenate_datasets

    from modeling_scale import ScaleModel, ScaleProcessor
    from train.components import load_split
    from train.embeddings import extract_embeddings

    noisy_ids = set(json.loads((raw_dir / "sample_info.json").read_text())["noisy_items"])
    model = ScaleModel.from_pretrained(model_dir).eval()
    processor = ScaleProcessor.from_pretrained(model_dir)

    def coarse_pool(data: Path) -> tuple:
        query, gallery = (load_split(str(data), "retrieval_coarse", s) for s in ("query", "gallery"))
        return concatenate_datasets([query, gallery]), [*query["label"], *gallery["label"]], len(query)

    def embed(items, chosen: Sequence[str]) -> dict:
        return extract_embeddings(model, processor, items, chosen, batch_size=64, device=torch.device("cpu"))

    items, labels, num_queries = coarse_pool(data_dir)
    embedded = {
        name: embed(items, chosen)
        for name, chosen in (("all", modalities), ("without", [m for m in modalities if m != noisy_modality]))
    }
    result = embedded["all"]
    scores, present = result["alignment_scores"], result["modality_mask"].astype(bool)
    unrelated = np.array([item_id in noisy_ids for item_id in result["item_ids"]])
    noisy = MODALITIES.index(noisy_modality)
    summary: dict[str, dict[str, float]] = {}
    for group, rows in (("unrelated", unrelated), ("own", ~unrelated & present[:, noisy])):
        with_noisy, without = [], []
        for i in range(len(MODALITIES)):
            for j in range(i + 1, len(MODALITIES)):
                both = rows & present[:, i] & present[:, j]
                if both.any():
                    (with_noisy if noisy in (i, j) else without).append(scores[both, i, j])
        summary[group] = {
            "pairs with noisy": float(np.concatenate(with_noisy).mean()) if with_noisy else np.nan,
            "other pairs": float(np.concatenate(without).mean()) if without else np.nan,
            "listings": int(rows.sum()),
        }
    summary.update(
        retrieval_ceilings(
            result["product_embeds"],
            embedded["without"]["product_embeds"],
            unrelated,
            result["item_ids"],
            labels,
            num_queries,
        )
    )
    clean_items, clean_labels, clean_queries = coarse_pool(clean_data_dir)
    clean = embed(clean_items, modalities)
    summary["clean listings"] = coarse_retrieval(
        clean["product_embeds"], clean["item_ids"], clean_labels, clean_queries
    )
    return summary


def mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.2f}"


TITLES = {
    "3": "Table 3 — modalities added one by one",
    "6": "Table 6 — SIMCL's S on the contrastive pairs (IMCL) and on the masked tasks (PRE)",
    "7": "Table 7 — the table's masked task: single word pieces (MLM) or whole entities (MEM)",
    "8": "Table 8 — caption and table stacked in one encoder (T+Tab) or in their own (T/Tab)",
    "noisy": "Noisy {modality} ({share} of the listings show another product's) — retrieval",
}


def format_tables(scores: dict, args: argparse.Namespace, noisy: dict) -> str:
    seeds = ", ".join(map(str, args.seeds))
    protocol = {
        "paper": "one model pretrained per modality set",
        "leave_out": "one model, modalities left out",
    }
    objective = "the paper's losses alone" if args.objective == "paper" else "our pretraining objective"
    lines = [
        f"Pretrained features, {args.pretrain_epochs:g} pretraining epochs of {objective}, seeds {seeds}: "
        "mean ± std. "
        "Accuracy = linear probe; mAP / Prec = coarse retrieval.",
    ]
    options = {"--config_overrides": args.config_overrides, "--pretrain_args": args.pretrain_args}
    if given := [f"`{flag} {value}`" for flag, value in options.items() if value]:
        lines[0] += f" Every run pretrained with {' and '.join(given)}."
    for table in args.tables:
        share = "half" if args.noisy_fraction == 0.5 else f"{args.noisy_fraction:.0%}"
        title = TITLES[table].format(modality=args.noisy_modality, share=share)
        title += f" ({protocol[args.protocol]})" if table == "3" else ""
        if table in ("6", "7", "8") and args.modalities != MODALITIES:
            title += f" (pretrained and scored on {', '.join(args.modalities)})"
        lines += ["", f"**{title}**", "", "| row | Accuracy | " + " | ".join(METRICS) + " |"]
        lines.append("|---" * (len(METRICS) + 2) + "|")
        for row in rows_of(args, [table]):
            cells = scores[table][row.label]
            lines.append(
                f"| {row.label} | " + " | ".join(mean_std(cells[c]) for c in ("Accuracy", *METRICS)) + " |"
            )
    if noisy:
        modality = args.noisy_modality
        lines += ["", f"**Noisy {modality} — S's mean pair weight** (coarse pool, mean ± std over seeds)", ""]
        lines += [f"| row | listings | pairs with {modality} | other pairs |", "|---|---|---|---|"]
        for label, groups in noisy.items():
            for group in ("unrelated", "own"):
                values = groups[group]
                cells = [mean_std(values["pairs with noisy"]), mean_std(values["other pairs"])]
                lines.append(
                    f"| {label}, {group} {modality} | {values['listings'][0]} | " + " | ".join(cells) + " |"
                )
        lines += [
            "",
            f"**Noisy {modality} — the ceiling of any weighting**: every model scored on the noisy listings "
            f"as they are (all), with the {modality} left out of exactly the listings where it is unrelated "
            "(oracle: the ceiling of any weighting at retrieval) and of every listing (left out), and on the "
            "same listings with their own content (clean listings: what the encoders learned). The model "
            "pretrained on the clean sample never saw an unrelated pair: the ceiling of any weighting in "
            "training.",
            "",
            "| row | scored on | " + " | ".join(RETRIEVAL_COLUMNS) + " |",
            "|---|---" + "|---" * len(RETRIEVAL_COLUMNS) + "|",
        ]
        for label, groups in noisy.items():
            for name in ("all", "oracle", "left out", "clean listings"):
                cells = " | ".join(mean_std(groups[name][column]) for column in RETRIEVAL_COLUMNS)
                lines.append(f"| {label} | {name} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    root = Path(args.output_root)
    rows = rows_of(args)
    noisy_rows = [row for row in rows if row.table == "noisy"] + clean_reference(args)
    runs = list(dict.fromkeys(row.run for row in [*rows, *noisy_rows]))
    jobs = [(run, seed) for seed in args.seeds for run in runs]
    for run, seed in jobs:  # before any work: a mismatch must not wait for the data or the runs queued first
        check_run_settings(run_folder(root, run, seed, args), args)
    data = {kind: prepare_data(root, kind, args.size) for kind in sorted({run.data for run in runs})}
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(
        f"{len(jobs)} pretraining runs ({len(runs)} recipes x {len(args.seeds)} seeds), {args.jobs} at once"
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run_one, *job, data[job[0].data], root, args, threads) for job in jobs}
        results = {
            job: json.loads(path.read_text()) for job, future in futures.items() if (path := future.result())
        }

    scores: dict = {}
    for row in rows:
        per_seed = [row_scores(results[row.run, seed], row.evaluate_on) for seed in args.seeds]
        scores.setdefault(row.table, {})[row.label] = {k: [s[k] for s in per_seed] for k in per_seed[0]}
    noisy: dict = {}
    noisy_data = noisy_data_kind(args.noisy_modality, args.noisy_fraction)
    for row in noisy_rows:
        per_seed = [
            noisy_diagnostics(
                run_folder(root, row.run, seed, args) / "pretrain",
                data[noisy_data],
                sample_folders(root, noisy_data, args.size)[0],
                row.evaluate_on,
                args.noisy_modality,
                data["clean"],
            )
            for seed in args.seeds
        ]
        noisy[row.label] = {
            group: {key: [s[group][key] for s in per_seed] for key in per_seed[0][group]}
            for group in per_seed[0]
        }
    markdown = format_tables(scores, args, noisy)
    (root / "ablation.md").write_text(markdown)
    settings = {**vars(args), "rows": None if args.rows is None else sorted(args.rows)}
    payload = {"args": settings, "scores": scores, "noisy": noisy}
    (root / "ablation.json").write_text(json.dumps(payload, indent=1))
    print(markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
