"""The SCALE names the Space's helpers use (the modality order, the media decoders, the caption check).

On a Space this project's packages are not installed, and the Space carries no copy of them: the names come
from the flat code files of the checkpoint it serves, the very files `AutoModel.from_pretrained(checkpoint,
trust_remote_code=True)` runs. In a checkout where the package is installed, the package answers.

The checkpoint is the one the app serves: `SCALE_CHECKPOINT` (the Space's setting), else `--checkpoint` on the
command line, else the main job's `outputs/pretrain` in a checkout, else the published model.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HUB_MODEL_ID = "scale-m5product/scale"
"""Where the model is published (README.md's `models:`); used when no local run exists."""


def local_or_hub(local: Path, hub_id: str) -> str:
    """The main job's output in a checkout where it ran, else the published copy (e.g. on a Space)."""
    return str(local) if local.exists() else hub_id


def default_checkpoint() -> str:
    return local_or_hub(REPO_ROOT / "outputs/pretrain", HUB_MODEL_ID)


def served_checkpoint(argv: list[str] | None = None) -> str:
    """SCALE_CHECKPOINT, else the value of `--checkpoint` in `argv` (default: this process's), else the
    default."""
    argv = sys.argv[1:] if argv is None else argv
    for index, argument in enumerate(argv):
        if argument.startswith("--checkpoint="):
            return argument.split("=", 1)[1]
        if argument == "--checkpoint" and index + 1 < len(argv):
            return argv[index + 1]
    return os.environ.get("SCALE_CHECKPOINT") or default_checkpoint()


def _from_checkpoint(checkpoint: str) -> dict:
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    def code(reference: str):
        return get_class_from_dynamic_module(reference, checkpoint)

    return {
        "MODALITIES": code("configuration_scale.MODALITIES"),
        "MediaDecodingError": code("media_decoding_scale.MediaDecodingError"),
        "first_line": code("media_decoding_scale.first_line"),
        "load_audio": code("media_decoding_scale.load_audio"),
        "load_image": code("media_decoding_scale.load_image"),
        "load_video_frames": code("media_decoding_scale.load_video_frames"),
        "has_printable_character": code("processing_scale.has_printable_character"),
    }


def _from_package() -> dict:
    from modeling_scale import MODALITIES
    from modeling_scale.media_decoding_scale import (
        MediaDecodingError,
        first_line,
        load_audio,
        load_image,
        load_video_frames,
    )
    from modeling_scale.processing_scale import has_printable_character

    return {
        "MODALITIES": MODALITIES,
        "MediaDecodingError": MediaDecodingError,
        "first_line": first_line,
        "load_audio": load_audio,
        "load_image": load_image,
        "load_video_frames": load_video_frames,
        "has_printable_character": has_printable_character,
    }


def _package_installed() -> bool:
    try:
        return importlib.util.find_spec("modeling_scale") is not None
    except ImportError:  # an import hook that refuses it
        return False


SOURCE = "package" if _package_installed() else "checkpoint"
"""Where the names below come from: the installed `modeling_scale` package, or the served checkpoint."""
_names = _from_package() if SOURCE == "package" else _from_checkpoint(served_checkpoint())
MODALITIES: tuple[str, ...] = _names["MODALITIES"]
MediaDecodingError: type[Exception] = _names["MediaDecodingError"]
first_line = _names["first_line"]
has_printable_character = _names["has_printable_character"]
load_audio = _names["load_audio"]
load_image = _names["load_image"]
load_video_frames = _names["load_video_frames"]

__all__ = [
    "HUB_MODEL_ID",
    "MODALITIES",
    "MediaDecodingError",
    "SOURCE",
    "default_checkpoint",
    "first_line",
    "has_printable_character",
    "load_audio",
    "load_image",
    "load_video_frames",
    "local_or_hub",
    "served_checkpoint",
]
