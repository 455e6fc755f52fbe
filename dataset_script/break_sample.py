"""Break a raw M5Product folder (or a converted one) on purpose, in the ways real releases break.

    python -m dataset_script.break_sample RAW_DIR [--record-share 0.01] [--media-share 0.01] [--seed 0]
    python -m dataset_script.break_sample RAW_DIR --check CONVERTED_DIR
    python -m dataset_script.break_sample CONVERTED_DIR --converted [--media-share 0.01] [--seed 0]

Raw folder: a share of the annotation records gets one record fault each (`RECORD_FAULTS`: a title with
bytes that are not UTF-8, a `pv` that is a number, a label that is a list, a record that is a string, ...) and
a share of the media files one media fault each (`MEDIA_FAULTS`: garbage, empty, another format's bytes, cut
short, corrupted in the middle, NaN samples, a decompression bomb). What was broken is written to
RAW_DIR/_broken.json (`{item_id: [fault, ...]}`), so that a check can compare it with the conversion summary.

`--check` compares a conversion of the broken folder with RAW_DIR/_broken.json: every broken item must be
listed in the conversion summary, and every valid item kept (rows per split = split ids in the annotation,
less the records that are not JSON objects).

Converted folder (`--converted`): media bytes inside the Parquet shards are replaced by broken ones, as a
converter that checked less (such as ours before it decoded what training reads) would have let them through;
training must then count them as missing instead of stopping.

The fault builders are shared with tests/test_fault_injection.py, so the drill and the tests break data the
same way.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .raw_layout import ANNOTATION_FILE, CONFIG_SPLITS, MEDIA, iter_annotations, media_path, read_split_ids

BROKEN_FILE = "_broken.json"
NOT_UTF8_MARKER = "@@not-utf8@@"
"""Replaced by bytes that are not UTF-8 when the annotation file is written (JSON cannot hold them)."""
NOT_UTF8_BYTES = b"\xff\xc3\x28"


def _title_not_utf8(record: dict) -> dict:
    return {**record, "title": (record.get("title") or "") + NOT_UTF8_MARKER}


RECORD_FAULTS: dict[str, Callable[[dict], Any]] = {
    "title_not_utf8": _title_not_utf8,
    "title_list": lambda record: {**record, "title": [record.get("title"), "second title"]},
    "title_number": lambda record: {**record, "title": 4006},
    "pv_number": lambda record: {**record, "pv": 12345},
    "pv_half_filled": lambda record: {
        **record,
        "pv": (record.get("pv") or "a#:#b") + "#;#颜色 without value",
    },
    "label_list": lambda record: {**record, "label": [record.get("label")]},
    "label_unknown": lambda record: {**record, "label": "no/such/category"},
    "instance_id_object": lambda record: {**record, "instance_id": {"id": record.get("instance_id")}},
    "record_string": lambda record: "a record that is a string",
    "record_list": lambda record: [record],
}
"""fault -> the broken record built from a valid one."""


def write_annotations(path: str, records: dict[str, Any]) -> None:
    """Write the annotation JSON, turning `NOT_UTF8_MARKER` into bytes that are not UTF-8."""
    text = json.dumps(records, ensure_ascii=False, indent=1)
    with open(path, "wb") as handle:
        handle.write(text.encode("utf-8").replace(NOT_UTF8_MARKER.encode(), NOT_UTF8_BYTES))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: PIL refuses it as a decompression bomb."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])  # signature 8, length 4, IHDR
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def nan_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A float32 WAV whose samples are NaN (a broken recorder or a bad conversion)."""
    import scipy.io.wavfile

    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, rate, np.full(int(seconds * rate), np.nan, dtype=np.float32))
    return buffer.getvalue()


def corrupt_middle(data: bytes) -> bytes:
    """Zero a tenth of the file from its middle: the header and the first frames stay intact, so the file
    opens and its first frame decodes, but later frames do not."""
    start, length = len(data) // 2, max(1, len(data) // 10)
    return data[:start] + bytes(length) + data[start + length :]


def _other_format(modality: str) -> bytes:
    """Valid bytes of another format: a sound file saved as .jpg or .mp4, a JPEG saved as .mp3. (A JPEG saved
    as .mp4 is not a fault: FFmpeg reads it as a one-frame video.)"""
    from PIL import Image

    if modality in ("image", "video"):
        return nan_wav()[:44] + bytes(3200)  # a valid WAV of silence
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


MEDIA_FAULTS: dict[str, tuple[tuple[str, ...], Callable[[bytes, str], bytes]]] = {
    "garbage": (tuple(MEDIA), lambda data, modality: np.random.default_rng(0).bytes(max(64, len(data) // 4))),
    "empty": (tuple(MEDIA), lambda data, modality: b""),
    "other_format": (tuple(MEDIA), lambda data, modality: _other_format(modality)),
    "cut_short": (("image", "video"), lambda data, modality: data[: len(data) // 3]),
    "corrupt_middle": (("video",), lambda data, modality: corrupt_middle(data)),
    "nan_samples": (("audio",), lambda data, modality: nan_wav()),
    "decompression_bomb": (("image",), lambda data, modality: bomb_png()),
}
"""fault -> (modalities it applies to, the broken bytes built from the valid file's bytes)."""


def _choose(rng: np.random.Generator, candidates: list[str], share: float) -> list[str]:
    count = min(len(candidates), max(1, round(share * len(candidates)))) if share > 0 else 0
    return sorted(rng.choice(candidates, size=count, replace=False).tolist()) if count else []


def apply_faults(raw_dir: str, faults: dict[str, list[str]]) -> None:
    """Break RAW_DIR in place: `faults` maps item ids to fault names, a `RECORD_FAULTS` key or
    "{modality}:{`MEDIA_FAULTS` key}"; writes RAW_DIR/_broken.json (the same mapping)."""
    path = os.path.join(raw_dir, ANNOTATION_FILE)
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    for item_id, names in faults.items():
        for name in names:
            if name in RECORD_FAULTS:
                records[item_id] = RECORD_FAULTS[name](records[item_id])
                continue
            modality, fault = name.split(":")
            file = media_path(raw_dir, modality, item_id)
            with open(file, "rb") as handle:
                data = handle.read()
            with open(file, "wb") as handle:
                handle.write(MEDIA_FAULTS[fault][1](data, modality))
    write_annotations(path, records)
    with open(os.path.join(raw_dir, BROKEN_FILE), "w", encoding="utf-8") as handle:
        json.dump(faults, handle, indent=1, sort_keys=True)


def break_raw(raw_dir: str, record_share: float = 0.01, media_share: float = 0.01, seed: int = 0) -> dict:
    """Break `record_share` of the records and `media_share` of the media files of RAW_DIR in place, cycling
    through the faults; returns (and writes to RAW_DIR/_broken.json) `{item_id: [fault, ...]}`."""
    rng = np.random.default_rng(seed)
    with open(os.path.join(raw_dir, ANNOTATION_FILE), encoding="utf-8") as handle:
        item_ids = sorted(json.load(handle))
    faults: dict[str, list[str]] = {}
    for number, item_id in enumerate(_choose(rng, item_ids, record_share)):
        faults.setdefault(item_id, []).append(list(RECORD_FAULTS)[number % len(RECORD_FAULTS)])
    for modality in MEDIA:
        names = [name for name, (modalities, _) in MEDIA_FAULTS.items() if modality in modalities]
        present = [item_id for item_id in item_ids if os.path.isfile(media_path(raw_dir, modality, item_id))]
        for number, item_id in enumerate(_choose(rng, present, media_share)):
            faults.setdefault(item_id, []).append(f"{modality}:{names[number % len(names)]}")
    apply_faults(raw_dir, faults)
    return faults


def check_conversion(raw_dir: str, converted_dir: str) -> dict:
    """Compare the conversion summary of CONVERTED_DIR with RAW_DIR/_broken.json; returns the counts and
    the broken ids the summary does not list (it passes when `unlisted` and `row_count_errors` are empty)."""
    with open(os.path.join(raw_dir, BROKEN_FILE), encoding="utf-8") as handle:
        broken = json.load(handle)
    with open(os.path.join(converted_dir, "_conversion", "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    annotated = {item_id for item_id, _ in iter_annotations(os.path.join(raw_dir, ANNOTATION_FILE))}
    skipped = set(summary["skipped_items"])
    listed = set(summary["invalid_records"]) | skipped | set(summary["malformed_pv"])
    listed |= set(summary["unknown_labels"]) | {i for ids in summary["corrupt_media"].values() for i in ids}
    converted_ids, row_count_errors, kept = set(), {}, 0
    for config, splits in CONFIG_SPLITS.items():
        for split in splits:
            ids = set(read_split_ids(raw_dir, config, split)) & annotated
            converted_ids |= ids
            expected = len(ids - skipped)
            rows = summary["splits"][f"{config}/{split}"]["num_rows"]
            kept += rows
            if rows != expected:
                row_count_errors[f"{config}/{split}"] = {"rows": rows, "expected": expected}
    broken_converted = set(broken) & converted_ids
    return {
        "broken_items": len(broken_converted),
        "broken_records": sum(1 for i in broken_converted if any(":" not in f for f in broken[i])),
        "broken_media_files": sum(sum(":" in f for f in broken[i]) for i in broken_converted),
        "listed_in_summary": len(broken_converted & listed),
        "unlisted": sorted(broken_converted - listed),
        "items_converted": len(converted_ids - skipped),
        "items_skipped": len(skipped),
        "rows_kept_over_all_splits": kept,
        "row_count_errors": row_count_errors,
    }


def break_converted_media(converted_dir: str, media_share: float = 0.01, seed: int = 0) -> dict:
    """Replace `media_share` of the media cells of every Parquet shard of CONVERTED_DIR with broken bytes that
    a shallow check would pass (a video corrupted in the middle, NaN audio, a cut-short image); returns
    `{"{config}/{split}": {item_id: [fault, ...]}}`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    faults = {"image": "cut_short", "video": "corrupt_middle", "audio": "nan_samples"}
    rng = np.random.default_rng(seed)
    broken: dict[str, dict[str, list[str]]] = {}
    data_dir = os.path.join(converted_dir, "data")
    for root, _, names in sorted(os.walk(data_dir)):
        for name in sorted(names):
            if not name.endswith(".parquet"):
                continue
            file = os.path.join(root, name)
            table = pq.read_table(file)
            rows = table.to_pylist()
            split = f"{os.path.basename(root)}/{name.split('-')[0]}"
            for modality, fault in faults.items():
                present = [str(index) for index, row in enumerate(rows) if row[modality] is not None]
                for index in map(int, _choose(rng, present, media_share)):
                    cell = rows[index][modality]
                    cell["bytes"] = MEDIA_FAULTS[fault][1](cell["bytes"], modality)
                    broken.setdefault(split, {}).setdefault(rows[index]["item_id"], []).append(
                        f"{modality}:{fault}"
                    )
            pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), file)
    with open(os.path.join(converted_dir, BROKEN_FILE), "w", encoding="utf-8") as handle:
        json.dump(broken, handle, indent=1, sort_keys=True)
    return broken


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", help="a raw M5Product folder, or a converted one with --converted")
    parser.add_argument("--converted", action="store_true", help="break media inside the Parquet shards")
    parser.add_argument("--check", metavar="CONVERTED_DIR", help="check a conversion of the broken RAW_DIR")
    parser.add_argument("--record-share", type=float, default=0.01)
    parser.add_argument("--media-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.check:
        report = check_conversion(args.folder, args.check)
        print(json.dumps(report, indent=1))
        raise SystemExit(1 if report["unlisted"] or report["row_count_errors"] else 0)
    if args.converted:
        broken = break_converted_media(args.folder, args.media_share, args.seed)
        count = sum(map(len, broken.values()))
    else:
        broken = break_raw(args.folder, args.record_share, args.media_share, args.seed)
        count = len(broken)
    print(f"broke {count} items; the list is in {os.path.join(args.folder, BROKEN_FILE)}")


if __name__ == "__main__":
    main()
