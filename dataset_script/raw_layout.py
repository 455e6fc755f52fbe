"""The M5Product raw release layout: file names, the `pv` table format, split files, and per-item reading.

One place defines where things live so that the sample generator, the `datasets` builder and the Parquet
converter cannot drift apart::

    RAW_DIR/
      annotations.json            {item_id: {"title": str, "pv": str, "label": str, "instance_id": str}}
      labels.txt                  category names, one per line; line k (0-based) is class id k
      images/{item_id}.jpg
      videos/{item_id}.mp4
      audios/{item_id}.mp3
      splits/{config}_{split}.txt item ids, one per line (see `SPLIT_FILES`)

`label` holds the category *name* (an entry of labels.txt). `instance_id` names the product instance that
several listings share (fine-grained retrieval); an item without one is its own instance. Any annotation field
and any media file may be missing.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ANNOTATION_FILE = "annotations.json"
LABELS_FILE = "labels.txt"
SPLITS_DIR = "splits"
MEDIA = {"image": ("images", ".jpg"), "video": ("videos", ".mp4"), "audio": ("audios", ".mp3")}

PV_PAIR_SEPARATOR = "#;#"
PV_KEY_VALUE_SEPARATOR = "#:#"

# config name -> its splits; each (config, split) is the id list splits/{config}_{split}.txt
CONFIG_SPLITS: dict[str, tuple[str, ...]] = {
    "pretrain": ("train",),
    "retrieval_coarse": ("gallery", "query"),
    "retrieval_fine": ("gallery", "query"),
    "classification": ("train", "test"),
}
SPLIT_FILES: dict[tuple[str, str], str] = {
    (config, split): f"{SPLITS_DIR}/{config}_{split}.txt"
    for config, splits in CONFIG_SPLITS.items()
    for split in splits
}

UNKNOWN_LABEL = -1  # the `datasets` convention for "no label"


def media_path(raw_dir: str, modality: str, item_id: str) -> str:
    folder, extension = MEDIA[modality]
    return os.path.join(raw_dir, folder, f"{item_id}{extension}")


def format_pv(pairs: Iterable[tuple[str, str]]) -> str:
    return PV_PAIR_SEPARATOR.join(f"{key}{PV_KEY_VALUE_SEPARATOR}{value}" for key, value in pairs)


def parse_pv(pv: str | None) -> tuple[list[dict[str, str]], list[str]]:
    """Split a `pv` string into key/value pairs, keeping every well-formed pair.

    Returns the pairs and the malformed segments (a segment without exactly one `#:#`, or with an empty key),
    so that a bad segment costs that segment only.
    """
    if not pv:
        return [], []
    pairs, malformed = [], []
    for segment in pv.split(PV_PAIR_SEPARATOR):
        parts = segment.split(PV_KEY_VALUE_SEPARATOR)
        if len(parts) != 2 or not parts[0].strip():
            malformed.append(segment)
            continue
        pairs.append({"key": parts[0].strip(), "value": parts[1].strip()})
    return pairs, malformed


def read_labels(raw_dir: str) -> list[str]:
    with open(os.path.join(raw_dir, LABELS_FILE), encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def read_split_ids(raw_dir: str, config: str, split: str) -> list[str]:
    with open(os.path.join(raw_dir, SPLIT_FILES[config, split]), encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def iter_annotations(path: str, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, dict]]:
    """Stream `(item_id, record)` pairs out of one JSON object without loading the whole file.

    The real annotation file holds 6.3 M records (several GB); `json.load` would need many times that in
    memory. This reads fixed-size chunks and decodes one key and one value at a time.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        buffer, position, eof = "", 0, False

        def fill(min_chars: int = 1) -> None:
            nonlocal buffer, position, eof
            while not eof and len(buffer) - position < min_chars:
                chunk = handle.read(chunk_chars)
                eof = not chunk
                buffer = buffer[position:] + chunk
                position = 0

        def skip_whitespace() -> str:
            nonlocal position
            while True:
                fill()
                while position < len(buffer) and buffer[position] in " \t\r\n":
                    position += 1
                if position < len(buffer) or eof:
                    return buffer[position] if position < len(buffer) else ""

        def decode_value():
            nonlocal position
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError:
                    if eof:
                        raise
                    fill(len(buffer) - position + chunk_chars)
                    continue
                # a number at the very end of the buffer may continue in the next chunk
                if end == len(buffer) and not eof:
                    fill(len(buffer) - position + chunk_chars)
                    continue
                position = end
                return value

        if skip_whitespace() != "{":
            raise ValueError(f"{path}: the annotation file must hold one JSON object keyed by item id")
        position += 1
        if skip_whitespace() == "}":
            return
        while True:
            key = decode_value()
            if skip_whitespace() != ":":
                raise ValueError(f"{path}: expected ':' after key {key!r}")
            position += 1
            skip_whitespace()
            yield str(key), decode_value()
            token = skip_whitespace()
            position += 1
            if token == "}":
                return
            if token != ",":
                raise ValueError(f"{path}: expected ',' or '}}' after the record of {key!r}")
            skip_whitespace()


def load_annotations(raw_dir: str, wanted_ids: set[str] | None = None) -> dict[str, dict]:
    """The annotation records of `wanted_ids` (all when None), streamed so only those are kept in memory."""
    records = {}
    for item_id, record in iter_annotations(os.path.join(raw_dir, ANNOTATION_FILE)):
        if wanted_ids is None or item_id in wanted_ids:
            records[item_id] = record if isinstance(record, dict) else {}
    return records


@dataclass
class ItemIssues:
    """What was wrong with one item; the item itself is kept with the affected field missing."""

    missing_media: list[str] = field(default_factory=list)
    corrupt_media: list[str] = field(default_factory=list)
    malformed_pv: list[str] = field(default_factory=list)
    unknown_label: str | None = None


def _check_image(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()


def _check_video(data: bytes) -> None:
    from torchcodec.decoders import VideoDecoder

    # exact seek mode scans every packet: a file cut short has fewer frames than its index (moov) promises
    # when the index is at the front, and does not open at all when the index was at the end
    decoder = VideoDecoder(data, seek_mode="exact")
    metadata = decoder.metadata
    if not metadata.num_frames:
        raise ValueError("no video frames")
    promised, present = metadata.num_frames_from_header, metadata.num_frames_from_content
    if promised and present < promised:
        raise ValueError(f"truncated: {present} of {promised} frames present")
    decoder[0]


def _check_audio(data: bytes) -> None:
    from torchcodec.decoders import AudioDecoder

    samples = AudioDecoder(data).get_all_samples()
    if samples.data.numel() == 0:
        raise ValueError("no audio samples")


MEDIA_CHECKS = {"image": _check_image, "video": _check_video, "audio": _check_audio}


def read_media(raw_dir: str, modality: str, item_id: str, issues: ItemIssues) -> dict | None:
    """The media file as `{"bytes", "path"}` (what the Image/Video/Audio features embed), or None.

    The file is decoded once here so that a corrupt file becomes a missing modality at conversion time,
    not an exception in somebody's training loop.
    """
    path = media_path(raw_dir, modality, item_id)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError:
        issues.corrupt_media.append(modality)
        return None
    try:
        MEDIA_CHECKS[modality](data)
    except Exception:  # noqa: BLE001 - any decoder failure means the same thing: unusable file
        issues.corrupt_media.append(modality)
        return None
    return {"bytes": data, "path": os.path.basename(path)}


def build_example(
    raw_dir: str,
    item_id: str,
    record: dict,
    label_ids: dict[str, int],
) -> tuple[dict, ItemIssues]:
    """One example in the converted schema plus what was wrong with it (nothing valid is dropped).

    An absent media file is a missing modality, which is normal in M5Product (most items have no video), so
    it is only counted; a file that exists but does not decode is reported with the item id.
    """
    issues = ItemIssues()
    table, issues.malformed_pv = parse_pv(record.get("pv"))
    label_name = record.get("label")
    label = label_ids.get(label_name, UNKNOWN_LABEL) if label_name is not None else UNKNOWN_LABEL
    if label_name is not None and label == UNKNOWN_LABEL:
        issues.unknown_label = str(label_name)
    example = {
        "item_id": item_id,
        "caption": record.get("title") or None,
        "table": table,
        "label": label,
        "instance_id": str(record.get("instance_id") or item_id),
    }
    for modality in MEDIA:
        example[modality] = read_media(raw_dir, modality, item_id, issues)
        if example[modality] is None and modality not in issues.corrupt_media:
            issues.missing_media.append(modality)
    return example, issues
