"""Convert an M5Product raw release (or the generated sample) into Parquet shards plus a dataset card.

    python -m dataset_script.convert RAW_DIR OUT_DIR --num-proc N [--items-per-shard 1000]
        [--shard-index I --num-shards N] [--video-fps 1 --max-video-frames 12 --max-audio-seconds 12]

Output, loadable with `load_dataset(OUT_DIR, "<config>")` (also `streaming=True`), pushable to the Hub as is::

    OUT_DIR/README.md                                  dataset card: configs, features, split sizes, licence
    OUT_DIR/data/{config}/{split}-{k:05d}-of-{n:05d}.parquet
    OUT_DIR/_conversion/manifest/{config}/{split}-{k:05d}.json   one record per finished shard
    OUT_DIR/_conversion/summary.json                   bad-data report (ids), counts

Why Parquet and not WebDataset: the media files are small (product photos, short clips), every split is
read both sequentially (training, streaming) and by column (ids/labels for evaluation without touching
media), and `load_dataset` / the Hub viewer understand Parquet with embedded Image/Video/Audio bytes natively.
Row groups are kept small (`--row-group-size`) so that streaming reads a few MB at a time.

Shards are fixed lists of ids (`--items-per-shard` consecutive ids of a split file), so a shard's name never
depends on how many processes or machines wrote it. A shard is written to a temporary name and renamed when
complete, then its manifest record is written the same way; a rerun skips every shard whose record matches.
`--shard-index/--num-shards` give machine I of N every N-th shard; all machines may write into one shared
OUT_DIR, and whichever run finds every shard complete writes the card and the summary. Temporary files that a
killed run left behind (`*.tmp-PID`) are removed when their shard is written again, so that a folder upload
never publishes them.

One bad record never stops a conversion: each record is checked against the schema (`validate_record`), a
media file is decoded as far as training will read it (`MediaReading`: the sampled frames, the audio window,
with the processor's own functions), and every problem is listed by item id, with its reason, in the summary.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing import Pool

from .raw_layout import (
    CONFIG_SPLITS,
    MEDIA,
    SPLIT_FILES,
    MediaReading,
    build_example,
    load_annotations,
    read_labels,
    read_split_ids,
)

DATA_DIR = "data"
CONVERSION_DIR = "_conversion"
MANIFEST_DIR = f"{CONVERSION_DIR}/manifest"
SUMMARY_FILE = f"{CONVERSION_DIR}/summary.json"
CARD_TEMPLATE = os.path.join(os.path.dirname(__file__), "card_template.md")


@dataclass
class ShardSpec:
    config: str
    split: str
    index: int
    num_shards: int
    item_ids: list[str]

    @property
    def file(self) -> str:
        return f"{DATA_DIR}/{self.config}/{self.split}-{self.index:05d}-of-{self.num_shards:05d}.parquet"

    @property
    def manifest_file(self) -> str:
        return f"{MANIFEST_DIR}/{self.config}/{self.split}-{self.index:05d}-of-{self.num_shards:05d}.json"

    @property
    def ids_digest(self) -> str:
        return hashlib.sha1("\n".join(self.item_ids).encode()).hexdigest()


def plan_shards(raw_dir: str, items_per_shard: int) -> tuple[list[ShardSpec], dict]:
    """Cut every split file into shards of `items_per_shard` ids.

    Also returns what was wrong with the split files: ids repeated within a split (kept once) and split files
    that do not exist (their split is left out of the card rather than failing the whole run).
    """
    shards, duplicates, missing_files = [], {}, []
    for config, splits in CONFIG_SPLITS.items():
        for split in splits:
            if not os.path.exists(os.path.join(raw_dir, SPLIT_FILES[config, split])):
                missing_files.append(SPLIT_FILES[config, split])
                continue
            ids = read_split_ids(raw_dir, config, split)
            seen, unique = set(), []
            for item_id in ids:
                if item_id in seen:
                    duplicates.setdefault(f"{config}/{split}", []).append(item_id)
                else:
                    seen.add(item_id)
                    unique.append(item_id)
            num = max(1, -(-len(unique) // items_per_shard))
            for index in range(num):
                chunk = unique[index * items_per_shard : (index + 1) * items_per_shard]
                shards.append(ShardSpec(config, split, index, num, chunk))
    return shards, {"duplicate_split_ids": duplicates, "missing_split_files": missing_files}


def read_manifest_record(out_dir: str, spec: ShardSpec) -> dict | None:
    """The shard's manifest record if the shard is complete and was built from the same ids, else None."""
    import pyarrow.parquet as pq

    try:
        with open(os.path.join(out_dir, spec.manifest_file), encoding="utf-8") as handle:
            record = json.load(handle)
        num_rows = pq.ParquetFile(os.path.join(out_dir, spec.file)).metadata.num_rows
    except (OSError, ValueError):
        return None
    if record.get("ids_digest") != spec.ids_digest or record.get("num_rows") != num_rows:
        return None
    return record


def remove_stale_temporaries(out_dir: str, spec: ShardSpec) -> list[str]:
    """Delete the `*.tmp-PID` files of `spec`'s shard and manifest record (left by a killed run).

    Only the shards a run is about to write are cleaned: with `--num-shards`, another machine's shards (and
    their temporaries, possibly being written right now) are never touched.
    """
    stale = []
    for final in (spec.file, spec.manifest_file):
        for path in glob.glob(glob.escape(os.path.join(out_dir, final)) + ".tmp-*"):
            os.remove(path)
            stale.append(os.path.relpath(path, out_dir))
    return stale


def _atomic_write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=1)
    os.replace(temporary, path)


@dataclass
class ShardTask:
    raw_dir: str
    out_dir: str
    spec: ShardSpec
    records: dict[str, dict]
    label_names: list[str]
    row_group_size: int
    row_group_bytes: int
    reading: MediaReading = MediaReading()


def write_shard(task: ShardTask) -> dict:
    """Write one shard and its manifest record; memory is bounded by one row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .features import m5product_features

    spec = task.spec
    features = m5product_features(task.label_names)
    label_ids = {name: index for index, name in enumerate(task.label_names)}
    schema = features.arrow_schema
    path = os.path.join(task.out_dir, spec.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    issues = {
        "unknown_ids": [],
        "invalid_records": {},
        "skipped_items": [],
        "malformed_pv": {},
        "unknown_labels": {},
        "corrupt_media": {m: {} for m in MEDIA},
        "missing_media": dict.fromkeys(MEDIA, 0),
    }
    rows, row_bytes, num_rows, modality_counts = [], 0, 0, dict.fromkeys(("caption", "table", *MEDIA), 0)
    with pq.ParquetWriter(temporary, schema) as writer:

        def flush() -> None:
            nonlocal rows, row_bytes
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=len(rows))
                rows, row_bytes = [], 0

        for item_id in spec.item_ids:
            record = task.records.get(item_id)
            if record is None:
                issues["unknown_ids"].append(item_id)
                continue
            example, item_issues = build_example(task.raw_dir, item_id, record, label_ids, task.reading)
            if item_issues.record_problems:
                issues["invalid_records"][item_id] = item_issues.record_problems
            if item_issues.skipped:
                issues["skipped_items"].append(item_id)
                continue
            if item_issues.malformed_pv:
                issues["malformed_pv"][item_id] = item_issues.malformed_pv
            if item_issues.unknown_label is not None:
                issues["unknown_labels"][item_id] = item_issues.unknown_label
            for modality, reason in item_issues.corrupt_media.items():
                issues["corrupt_media"][modality][item_id] = reason
            for modality in item_issues.missing_media:
                issues["missing_media"][modality] += 1
            for key in modality_counts:
                modality_counts[key] += bool(example[key])
            rows.append(features.encode_example(example))
            row_bytes += sum(len(example[m]["bytes"]) for m in MEDIA if example[m] is not None)
            num_rows += 1
            if len(rows) >= task.row_group_size or row_bytes >= task.row_group_bytes:
                flush()
        flush()
    os.replace(temporary, path)
    manifest = {
        "file": spec.file,
        "config": spec.config,
        "split": spec.split,
        "index": spec.index,
        "num_ids": len(spec.item_ids),
        "num_rows": num_rows,
        "num_bytes": os.path.getsize(path),
        "ids_digest": spec.ids_digest,
        "modality_counts": modality_counts,
        "issues": issues,
    }
    _atomic_write_json(os.path.join(task.out_dir, spec.manifest_file), manifest)
    return manifest


def _waves(shards: list[ShardSpec], max_items: int) -> Iterator[list[ShardSpec]]:
    """Groups of shards holding at most `max_items` ids, so annotation records in memory stay bounded."""
    wave, size = [], 0
    for spec in shards:
        if wave and size + len(spec.item_ids) > max_items:
            yield wave
            wave, size = [], 0
        wave.append(spec)
        size += len(spec.item_ids)
    if wave:
        yield wave


def summarise(records: list[dict], split_file_problems: dict) -> dict:
    """Merge the shards' issue reports: ids listed once even when an item appears in several configs."""
    unknown_ids: dict[str, list[str]] = {}
    malformed_pv, unknown_labels, invalid_records, skipped_items = {}, {}, {}, set()
    corrupt_media: dict[str, dict[str, str]] = {m: {} for m in MEDIA}
    missing_media = dict.fromkeys(MEDIA, 0)
    splits = {}
    for record in sorted(records, key=lambda r: (r["config"], r["split"], r["index"])):
        key = f"{record['config']}/{record['split']}"
        split = splits.setdefault(key, {"num_rows": 0, "num_bytes": 0, "num_shards": 0})
        split["num_rows"] += record["num_rows"]
        split["num_bytes"] += record["num_bytes"]
        split["num_shards"] += 1
        issues = record["issues"]
        if issues["unknown_ids"]:
            unknown_ids.setdefault(key, []).extend(issues["unknown_ids"])
        malformed_pv.update(issues["malformed_pv"])
        unknown_labels.update(issues["unknown_labels"])
        invalid_records.update(issues["invalid_records"])
        skipped_items.update(issues["skipped_items"])
        for modality in MEDIA:
            corrupt_media[modality].update(issues["corrupt_media"][modality])
            missing_media[modality] += issues["missing_media"][modality]
    return {
        "splits": splits,
        "unknown_split_ids": unknown_ids,
        **split_file_problems,
        "invalid_records": dict(sorted(invalid_records.items())),
        "skipped_items": sorted(skipped_items),
        "malformed_pv": malformed_pv,
        "unknown_labels": unknown_labels,
        "corrupt_media": {m: sorted(reasons) for m, reasons in corrupt_media.items()},
        "corrupt_media_reasons": {m: dict(sorted(reasons.items())) for m, reasons in corrupt_media.items()},
        "missing_media_rows": missing_media,
    }


def write_card(out_dir: str, label_names: list[str], summary: dict) -> None:
    """README.md with `configs` (data_files per split) and `dataset_info` (features, split sizes)."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    from .features import m5product_features

    features = m5product_features(label_names)
    configs, infos = {}, DatasetInfosDict()
    present = {
        config: [split for split in splits if f"{config}/{split}" in summary["splits"]]
        for config, splits in CONFIG_SPLITS.items()
    }
    for config, splits in present.items():
        if not splits:
            continue
        configs[config] = {
            "data_files": [
                {"split": split, "path": f"{DATA_DIR}/{config}/{split}-*.parquet"} for split in splits
            ],
            **({"default": True} if config == next(c for c, s in present.items() if s) else {}),
        }
        split_dict = SplitDict()
        for split in splits:
            sizes = summary["splits"][f"{config}/{split}"]
            split_info = SplitInfo(name=split, num_bytes=sizes["num_bytes"], num_examples=sizes["num_rows"])
            split_dict.add(split_info)
        infos[config] = DatasetInfo(features=features, splits=split_dict)
    card_data = DatasetCardData(
        license="other",
        license_name="m5product-research-only",
        pretty_name="M5Product",
        task_categories=["feature-extraction", "image-classification", "text-classification"],
        tags=["multimodal", "e-commerce", "retrieval", "video", "audio"],
    )
    MetadataConfigs(configs).to_dataset_card_data(card_data)
    infos.to_dataset_card_data(card_data)
    split_rows = "\n".join(
        f"| {key} | {sizes['num_rows']:,} | {sizes['num_shards']} | {sizes['num_bytes'] / 2**20:,.1f} MiB |"
        for key, sizes in summary["splits"].items()
    )
    issue_counts = {
        "split-file ids missing from the annotation": sum(map(len, summary["unknown_split_ids"].values())),
        "records with fields outside the schema (valid fields kept)": len(
            summary["invalid_records"].keys() - set(summary["skipped_items"])
        ),
        "records that are not JSON objects (item left out)": len(summary["skipped_items"]),
        "malformed `pv` strings (well-formed pairs kept)": len(summary["malformed_pv"]),
        "labels outside labels.txt (stored as -1)": len(summary["unknown_labels"]),
        "split files absent (split left out)": len(summary["missing_split_files"]),
        "ids repeated within a split file (kept once)": sum(
            map(len, summary["duplicate_split_ids"].values())
        ),
        **{f"corrupt {m} files (stored as missing)": len(ids) for m, ids in summary["corrupt_media"].items()},
    }
    issue_rows = "\n".join(f"| {what} | {count:,} |" for what, count in issue_counts.items())
    with open(CARD_TEMPLATE, encoding="utf-8") as handle:
        body = handle.read().format(
            split_rows=split_rows,
            issue_rows=issue_rows,
            num_labels=len(label_names),
            summary_file=SUMMARY_FILE,
        )
    DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}").save(os.path.join(out_dir, "README.md"))


def convert(
    raw_dir: str,
    out_dir: str,
    num_proc: int = 1,
    items_per_shard: int = 1000,
    shard_index: int = 0,
    num_shards: int = 1,
    row_group_size: int = 100,
    row_group_bytes: int = 64 << 20,
    max_items_in_memory: int = 1_000_000,
    reading: MediaReading | None = None,
    write_summary: bool = True,
) -> dict:
    """Convert RAW_DIR into OUT_DIR (resumable); return the summary, or progress when shards are missing.

    `reading` says how much of each media file training reads (frames per second and count, audio seconds);
    the media check decodes that much (default: the processor's defaults). `write_summary=False` writes
    shards only, for an engine that runs one summary step after all of them (`convert_datatrove`).
    """
    from tqdm.auto import tqdm

    reading = reading or MediaReading()
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    start = time.perf_counter()
    label_names = read_labels(raw_dir)
    shards, split_file_problems = plan_shards(raw_dir, items_per_shard)
    mine = [spec for ordinal, spec in enumerate(shards) if ordinal % num_shards == shard_index]
    pending = [spec for spec in mine if read_manifest_record(out_dir, spec) is None]
    done = len(mine) - len(pending)
    print(f"{len(shards)} shards in all, {len(mine)} for this run, {done} already complete")
    stale = [path for spec in pending for path in remove_stale_temporaries(out_dir, spec)]
    if stale:
        print(f"removed {len(stale)} temporary files left by an interrupted run: {stale[:5]}")

    written = 0
    progress = tqdm(total=sum(len(spec.item_ids) for spec in pending), unit="item", desc="converting")
    with Pool(num_proc) if num_proc > 1 else _NoPool() as pool:
        for wave in _waves(pending, max_items_in_memory):
            records = load_annotations(raw_dir, {item_id for spec in wave for item_id in spec.item_ids})
            tasks = [
                ShardTask(
                    raw_dir,
                    out_dir,
                    spec,
                    {item_id: records[item_id] for item_id in spec.item_ids if item_id in records},
                    label_names,
                    row_group_size,
                    row_group_bytes,
                    reading,
                )
                for spec in wave
            ]
            del records
            for manifest in pool.imap_unordered(write_shard, tasks):
                written += manifest["num_rows"]
                progress.update(manifest["num_ids"])
    progress.close()
    seconds = time.perf_counter() - start

    if not write_summary:
        return {"complete": None, "rows_written": written, "seconds": seconds}
    complete = [read_manifest_record(out_dir, spec) for spec in shards]
    if any(record is None for record in complete):
        missing = sum(record is None for record in complete)
        print(f"{missing} shards (other --shard-index runs) are not complete; the last run writes the card")
        return {"complete": False, "missing_shards": missing, "rows_written": written, "seconds": seconds}
    summary = summarise(complete, split_file_problems)
    summary.update(
        complete=True,
        rows_written_this_run=written,
        seconds_this_run=round(seconds, 2),
        num_proc=num_proc,
        num_labels=len(label_names),
        items_per_shard=items_per_shard,
        media_reading=asdict(reading),
    )
    _atomic_write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
    write_card(out_dir, label_names, summary)
    _print_report(summary)
    return summary


class _NoPool:
    """`Pool` stand-in for num_proc=1: same interface, runs in this process (easier to debug and profile)."""

    def __enter__(self) -> _NoPool:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def imap_unordered(self, function, iterable):
        return map(function, iterable)


def _print_report(summary: dict) -> None:
    print("split sizes:")
    for key, sizes in summary["splits"].items():
        print(f"  {key:28s} {sizes['num_rows']:>9,} rows  {sizes['num_shards']:>5} shards")
    problems = {
        "unknown_split_ids": summary["unknown_split_ids"],
        "duplicate_split_ids": summary["duplicate_split_ids"],
        "missing_split_files": summary["missing_split_files"],
        "invalid_records": summary["invalid_records"],
        "malformed_pv": summary["malformed_pv"],
        "unknown_labels": summary["unknown_labels"],
        "corrupt_media": {m: reasons for m, reasons in summary["corrupt_media_reasons"].items() if reasons},
    }
    problems = {key: value for key, value in problems.items() if value}
    if problems:
        counts = {
            key: sum(map(len, v.values())) if key == "corrupt_media" else len(v)
            for key, v in problems.items()
        }
        print(f"data problems {counts} (items kept with the affected fields missing, except records that are")
        print(f"not JSON objects; every id with its reason in {SUMMARY_FILE}):")
        text = json.dumps(problems, ensure_ascii=False, indent=1)
        print(text if len(text) <= 20_000 else text[:20_000] + f"\n... (the rest in {SUMMARY_FILE})")
    print("media files absent (missing modality, counted per row):", summary["missing_media_rows"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--items-per-shard", type=int, default=1000)
    parser.add_argument("--shard-index", type=int, default=0, help="this machine's index (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of machines sharing the work")
    parser.add_argument("--row-group-size", type=int, default=100)
    parser.add_argument("--max-items-in-memory", type=int, default=1_000_000)
    MediaReading.add_arguments(parser)
    args = parser.parse_args(argv)
    convert(
        args.raw_dir,
        args.out_dir,
        num_proc=args.num_proc,
        items_per_shard=args.items_per_shard,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        row_group_size=args.row_group_size,
        max_items_in_memory=args.max_items_in_memory,
        reading=MediaReading.from_arguments(args),
    )


if __name__ == "__main__":
    main()
