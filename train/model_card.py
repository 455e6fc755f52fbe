"""The model card (README.md with Hub metadata) written next to every checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

TASK_TEXT = {
    "pretraining": "pretrained with SCALE's five masked tasks (MLM, MEM, MRP, MFP, MAM) and SIMCL",
    "classification": "fine-tuned for product category classification (`ScaleForProductClassification`)",
}


def portable_reference(value: str) -> str:
    """How a summary or card may name a local path without recording the machine's layout: a folder inside an
    installed package by its path within site-packages, a folder inside the working directory relative to it,
    any other absolute path by its name. Relative paths, Hub ids and other strings stay as they are."""
    if not os.path.isabs(value):
        return value
    path = Path(value)
    if "site-packages" in path.parts:
        return Path(*path.parts[path.parts.index("site-packages") + 1 :]).as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def write_model_card(
    output_dir: str,
    task: str,
    training: dict | None = None,
    evaluation_markdown: str | None = None,
    dataset: str = "M5Product (bundled sample unless stated otherwise)",
) -> str:
    """Write OUTPUT_DIR/README.md; `training` is the run's summary, `evaluation_markdown` the results tables.
    Re-writing keeps the training summary of `training_summary.json` when `training` is not given."""
    summary_path = os.path.join(output_dir, "training_summary.json")
    if training is None and os.path.isfile(summary_path):
        with open(summary_path) as handle:
            training = json.load(handle)
    data = ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="feature-extraction" if task == "pretraining" else "text-classification",
        tags=["scale", "m5product", "multimodal", "e-commerce", "retrieval", "custom_code"],
    )
    auto_class = "AutoModel" if task == "pretraining" else "AutoModelForSequenceClassification"
    name = portable_reference(output_dir)
    sections = [
        f"# SCALE ({task})",
        f"SCALE (Self-harmonized ContrAstive LEarning, CVPR 2022, arXiv 2109.04275) {TASK_TEXT[task]} on "
        f"{dataset}. Five modalities per product (text, table, image, video, audio), any of which may be "
        "missing.",
        "## Usage",
        "```python\n"
        f"from transformers import AutoProcessor, {auto_class}\n\n"
        f'model = {auto_class}.from_pretrained("{name}", trust_remote_code=True)\n'
        f'processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)\n'
        'inputs = processor(text=["red cotton dress"], tables=[[("材质", "纯棉")]], images=[image],\n'
        '                   return_tensors="pt")\n'
        "embeds = model(**inputs).product_embeds  # with AutoModel\n"
        "```",
    ]
    if training:
        summary = json.dumps(training, indent=1, ensure_ascii=False)
        sections += ["## Training", f"```json\n{summary}\n```"]
    if evaluation_markdown:
        sections += [
            "## Evaluation",
            "Protocol of the authors' evaluation code (see `train/metrics.py`): scores x100; mAP@k and "
            "Prec@k with k cut to min(k, #positives); fused `product_embeds`, L2-normalised, ranked by "
            "inner product.",
            evaluation_markdown,
        ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path
