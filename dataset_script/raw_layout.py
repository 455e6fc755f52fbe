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

Nothing here trusts the data: a record is checked against that schema field by field (`validate_record`),
bytes that are not UTF-8 become U+FFFD and are reported, a media file counts as readable only when the
processor's own decoding functions read what training will read of it (`MediaReading`), and a damaged
annotation file is reported with its name, line and column.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
    # a BOM is accepted; a byte that is not UTF-8 becomes U+FFFD (that label then matches no record)
    with open(os.path.join(raw_dir, LABELS_FILE), encoding="utf-8-sig", errors="replace") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def read_split_ids(raw_dir: str, config: str, split: str) -> list[str]:
    # an id with bytes that are not UTF-8 becomes one that matches no record and is reported as unknown
    with open(
        os.path.join(raw_dir, SPLIT_FILES[config, split]), encoding="utf-8-sig", errors="replace"
    ) as handle:
        return [line.strip() for line in handle if line.strip()]


class AnnotationFileError(ValueError):
    """The annotation file is not one JSON object of records: the message names the file, line and column."""


def iter_annotations(path: str, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """Stream `(item_id, record)` pairs out of one JSON object without loading the whole file.

    The real annotation file holds 6.3 M records (several GB); `json.load` would need many times that in
    memory. This reads fixed-size chunks and decodes one key and one value at a time. A UTF-8 BOM is skipped;
    bytes that are not UTF-8 are kept as lone surrogates (`surrogateescape`) so that `validate_record` can
    replace and report them per item. Records are yielded as they are: check them with `validate_record`.

    Raises:
        AnnotationFileError: the file is cut short or malformed; the message gives the file's line and column.
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        buffer, position, eof, lines_before = "", 0, False, 0

        def fill(min_chars: int = 1) -> None:
            nonlocal buffer, position, eof, lines_before
            while not eof and len(buffer) - position < min_chars:
                chunk = handle.read(chunk_chars)
                eof = not chunk
                lines_before += buffer.count("\n", 0, position)
                buffer = buffer[position:] + chunk
                position = 0

        def error(message: str, at: int) -> AnnotationFileError:
            line = lines_before + buffer.count("\n", 0, at) + 1
            column = at - buffer.rfind("\n", 0, at)
            return AnnotationFileError(f"{path}: line {line} column {column}: {message}")

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
                except json.JSONDecodeError as problem:
                    if eof:
                        cut = (
                            " (the file ends inside this value: cut short?)"
                            if problem.pos >= len(buffer) - 1
                            else ""
                        )
                        raise error(problem.msg + cut, problem.pos) from problem
                    fill(len(buffer) - position + chunk_chars)
                    continue
                # a number at the very end of the buffer may continue in the next chunk
                if end == len(buffer) and not eof:
                    fill(len(buffer) - position + chunk_chars)
                    continue
                position = end
                return value

        if skip_whitespace() != "{":
            raise error("the annotation file must hold one JSON object keyed by item id", position)
        position += 1
        if skip_whitespace() == "}":
            return
        while True:
            if skip_whitespace() != '"':
                raise error("expected an item id (a JSON string)", position)
            key = decode_value()
            if skip_whitespace() != ":":
                raise error(f"expected ':' after key {key!r}", position)
            position += 1
            skip_whitespace()
            yield key, decode_value()
            token = skip_whitespace()
            if token == "}":
                return
            if token != ",":
                message = f"expected ',' or '}}' after the record of {key!r}"
                raise error(message + (" (the file ends here: cut short?)" if not token else ""), position)
            position += 1


def load_annotations(raw_dir: str, wanted_ids: set[str] | None = None) -> dict[str, Any]:
    """The annotation records of `wanted_ids` (all when None), as stored (checked later, per item, by
    `build_example`), streamed so that only those are kept in memory."""
    records = {}
    for item_id, record in iter_annotations(os.path.join(raw_dir, ANNOTATION_FILE)):
        if wanted_ids is None or item_id in wanted_ids:
            records[item_id] = record
    return records


RECORD_FIELDS = ("title", "pv", "label", "instance_id")
"""The annotation fields; each holds a string (or is absent / null)."""

_NOT_UTF8 = re.compile("[\ud800-\udfff]")
"""Lone surrogates: what `surrogateescape` makes of bytes that are not UTF-8 (or a JSON escape of one)."""


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def replace_non_utf8(text: str) -> tuple[str, bool]:
    """`text` with every byte that was not UTF-8 replaced by U+FFFD, and whether there was any."""
    cleaned, count = _NOT_UTF8.subn("\ufffd", text)
    return cleaned, count > 0


def validate_record(record: Any) -> tuple[dict[str, str] | None, list[str]]:
    """
    The fields of one annotation record that fit the schema, and a reason for each that did not.

    Each of `RECORD_FIELDS` must be a string: a number is kept as its text (and reported), anything else
    (a list, an object, a boolean) is left out; bytes that are not UTF-8 are replaced by U+FFFD. A record that
    is not a JSON object has nothing to keep: None.
    """
    if not isinstance(record, dict):
        return None, [f"the record is a JSON {_json_type(record)}, not an object: item skipped"]
    clean, problems = {}, []
    for name in RECORD_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        kind = _json_type(value)
        if kind not in ("string", "number"):
            problems.append(f"{name} is a JSON {kind}, not a string: left out")
            continue
        if kind == "number":
            value = str(value)
            problems.append(f"{name} is a JSON number, not a string: kept as {value!r}")
        value, replaced = replace_non_utf8(value)
        if replaced:
            problems.append(f"{name} holds bytes that are not UTF-8: replaced by U+FFFD")
        clean[name] = value
    return clean, problems


@dataclass
class ItemIssues:
    """What was wrong with one item; the item itself is kept with the affected field missing, unless
    `skipped` (its record held nothing usable)."""

    missing_media: list[str] = field(default_factory=list)
    corrupt_media: dict[str, str] = field(default_factory=dict)
    """modality -> why its file is unusable"""
    malformed_pv: list[str] = field(default_factory=list)
    unknown_label: str | None = None
    record_problems: list[str] = field(default_factory=list)
    skipped: bool = False


@dataclass(frozen=True)
class MediaReading:
    """What training reads of each media file; the conversion check decodes exactly that.

    The defaults are the processor's (`ScaleVideoProcessor`, `ScaleFeatureExtractor`), which are the paper's;
    pass a preset's settings when it reads more (e.g. the sample preset's 2 frames per second).
    """

    video_fps: float = 1.0
    max_video_frames: int = 12
    max_audio_seconds: float = 12.0

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The converters' command-line options for these settings (read back by `from_arguments`)."""
        defaults = MediaReading()
        parser.add_argument(
            "--video-fps",
            type=float,
            default=defaults.video_fps,
            help="video frames training samples per second",
        )
        parser.add_argument("--max-video-frames", type=int, default=defaults.max_video_frames)
        parser.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> MediaReading:
        return cls(args.video_fps, args.max_video_frames, args.max_audio_seconds)


def _check_image(data: bytes, reading: MediaReading = MediaReading()) -> None:
    from modeling_scale.media_decoding_scale import load_image

    load_image(data)


def _check_video(data: bytes, reading: MediaReading = MediaReading()) -> None:
    from torchcodec.decoders import VideoDecoder

    from modeling_scale.media_decoding_scale import load_video_frames

    # exact seek mode scans every packet: a file cut short has fewer frames than its index (moov) promises
    # when the index is at the front, and does not open at all when the index was at the end
    metadata = VideoDecoder(data, seek_mode="exact").metadata
    if not metadata.num_frames:
        raise ValueError("no video frames")
    promised, present = metadata.num_frames_from_header, metadata.num_frames_from_content
    if promised and present < promised:
        raise ValueError(f"truncated: {present} of {promised} frames present")
    # what training decodes: the processor's function on the same bytes (train.data hands it the encoded file)
    load_video_frames(data, fps=reading.video_fps, max_frames=reading.max_video_frames)


def _check_audio(data: bytes, reading: MediaReading = MediaReading()) -> None:
    from torchcodec.decoders import AudioDecoder

    from modeling_scale.media_decoding_scale import load_audio

    # the processor's function over the window training reads, at the file's own rate: the same packets are
    # decoded, and resampling cannot make a readable clip unreadable (it would double the cost)
    decoder = AudioDecoder(data)
    load_audio(decoder, decoder.metadata.sample_rate, reading.max_audio_seconds)


MEDIA_CHECKS = {"image": _check_image, "video": _check_video, "audio": _check_audio}


def read_media(
    raw_dir: str, modality: str, item_id: str, issues: ItemIssues, reading: MediaReading = MediaReading()
) -> dict | None:
    """The media file as `{"bytes", "path"}` (what the Image/Video/Audio features embed), or None.

    The file is decoded here with the processor's own functions, as far as training reads it (the sampled
    frames, the audio window), so that a file that passes conversion does not fail in training: a corrupt
    file becomes a missing modality now, with its reason, not an exception in somebody's training loop.
    """
    from modeling_scale.media_decoding_scale import first_line

    path = media_path(raw_dir, modality, item_id)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        issues.corrupt_media[modality] = f"cannot read the file: {first_line(error)}"
        return None
    if not data:
        issues.corrupt_media[modality] = "the file is empty (0 bytes)"
        return None
    try:
        MEDIA_CHECKS[modality](data, reading)
    except Exception as error:  # noqa: BLE001 - any decoder failure means the same thing: unusable file
        issues.corrupt_media[modality] = first_line(error)
        return None
    return {"bytes": data, "path": os.path.basename(path)}


def build_example(
    raw_dir: str,
    item_id: str,
    record: Any,
    label_ids: dict[str, int],
    reading: MediaReading = MediaReading(),
) -> tuple[dict | None, ItemIssues]:
    """One example in the converted schema plus what was wrong with it (nothing valid is dropped).

    The record is checked field by field (`validate_record`); the example is None when the record is not a
    JSON object or the item id is not UTF-8 (`issues.skipped`, with the reason in `record_problems`).
    An absent media file is a missing modality, which is normal in M5Product (most items have no video), so
    it is only counted; a file that exists but does not decode is reported with the item id and the reason.
    """
    issues = ItemIssues()
    record, issues.record_problems = validate_record(record)
    if _NOT_UTF8.search(item_id):
        issues.record_problems.append("the item id holds bytes that are not UTF-8: item skipped")
        record = None
    if record is None:
        issues.skipped = True
        return None, issues
    table, issues.malformed_pv = parse_pv(record.get("pv"))
    label_name = record.get("label")
    label = label_ids.get(label_name, UNKNOWN_LABEL) if label_name is not None else UNKNOWN_LABEL
    if label_name is not None and label == UNKNOWN_LABEL:
        issues.unknown_label = label_name
    example = {
        "item_id": item_id,
        "caption": record.get("title") or None,
        "table": table,
        "label": label,
        "instance_id": record.get("instance_id") or item_id,
    }
    for modality in MEDIA:
        example[modality] = read_media(raw_dir, modality, item_id, issues, reading)
        if example[modality] is None and modality not in issues.corrupt_media:
            issues.missing_media.append(modality)
    return example, issues
