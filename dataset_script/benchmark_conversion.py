"""Measure conversion throughput on a raw folder and project it to the full 6.3 M-product release.

    python -m dataset_script.benchmark_conversion [RAW_DIR] --num-proc 2 [--json OUT.json]

RAW_DIR defaults to outputs/sample_raw (generated with `--size default` when absent). The conversion runs into
a temporary folder, so nothing of a real conversion is touched. Reported: rows/s over all configs (an item in
two configs is two rows), the streaming speed of the annotation parser (the main process's serial part), the
Parquet bytes per row relative to the raw files, the cost of checking one product-sized file of each kind
(an 800x800 JPEG, a 10 s 720p H.264 clip, a 12 s MP3: the sample's media are tiny, the release's are not),
and projections for the release's split sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from .convert import convert
from .raw_layout import ANNOTATION_FILE, MEDIA, SPLIT_FILES, iter_annotations, media_path, read_split_ids

RELEASE_ITEMS = 6_313_067  # products in M5Product (paper)
# split sizes of the released tools; classification train/test sizes are not published, so the projection
# counts the retrieval and pretraining rows only and says so
RELEASE_SPLIT_ROWS = {
    "pretrain/train": 4_363_122,
    "retrieval_coarse/gallery": 1_179_613,
    "retrieval_coarse/query": 24_054,
    "retrieval_fine/gallery": 117_791,
    "retrieval_fine/query": 1_991,
}


def _raw_bytes_of_rows(raw_dir: str) -> int:
    """Media bytes of every row the conversion writes: an item in several splits counts once per split."""
    sizes = {}
    total = 0
    for config, split in SPLIT_FILES:
        for item_id in dict.fromkeys(read_split_ids(raw_dir, config, split)):
            if item_id not in sizes:
                paths = [media_path(raw_dir, modality, item_id) for modality in MEDIA]
                sizes[item_id] = sum(os.path.getsize(path) for path in paths if os.path.exists(path))
            total += sizes[item_id]
    return total


def realistic_check_milliseconds(repeats: int = 3) -> dict[str, float]:
    """CPU cost of validating one realistically sized file per modality (what dominates real conversion)."""
    import av
    import numpy as np
    from PIL import Image

    from .generate_sample import write_mp3
    from .raw_layout import MEDIA_CHECKS

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        image = np.repeat(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8), 8, axis=0).repeat(8, axis=1)
        Image.fromarray(image).save(os.path.join(folder, "image.jpg"), quality=85)
        with av.open(os.path.join(folder, "video.mp4"), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
            stream.options = {"preset": "ultrafast", "g": "50"}
            base = rng.integers(0, 255, (45, 80, 3), dtype=np.uint8).repeat(16, axis=0).repeat(16, axis=1)
            for index in range(250):
                frame = av.VideoFrame.from_ndarray(np.roll(base, 4 * index, axis=1), format="rgb24")
                frame = frame.reformat(format="yuv420p")
                frame.pts = index
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        seconds = np.arange(12 * 44100) / 44100
        write_mp3(
            os.path.join(folder, "audio.mp3"),
            (0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32),
            44100,
        )
        costs = {}
        for modality, name in (("image", "image.jpg"), ("video", "video.mp4"), ("audio", "audio.mp3")):
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            MEDIA_CHECKS[modality](data)  # warm-up: imports, codec initialisation
            start = time.process_time()
            for _ in range(repeats):
                MEDIA_CHECKS[modality](data)
            costs[modality] = round(1000 * (time.process_time() - start) / repeats, 1)
            costs[f"{modality}_kib"] = len(data) // 1024
    return costs


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def benchmark(raw_dir: str, num_proc: int, items_per_shard: int) -> dict:
    start = time.perf_counter()
    item_ids = [item_id for item_id, _ in iter_annotations(os.path.join(raw_dir, ANNOTATION_FILE))]
    parse_seconds = time.perf_counter() - start
    raw_bytes = _raw_bytes_of_rows(raw_dir)
    realistic = realistic_check_milliseconds()

    with tempfile.TemporaryDirectory() as out_dir:
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        summary = convert(raw_dir, out_dir, num_proc=num_proc, items_per_shard=items_per_shard)
        seconds = time.perf_counter() - start
        cpu_seconds = _cpu_seconds() - cpu_before
    rows = sum(split["num_rows"] for split in summary["splits"].values())
    parquet_bytes = sum(split["num_bytes"] for split in summary["splits"].values())
    rows_per_second = rows / seconds
    bytes_per_row = parquet_bytes / rows
    release_rows = sum(RELEASE_SPLIT_ROWS.values())
    peak_rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "raw_dir": raw_dir,
        "cpu_count": os.cpu_count(),
        "num_proc": num_proc,
        "items_per_shard": items_per_shard,
        "items": len(item_ids),
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows_per_second, 1),
        # wall time suffers when other jobs share the cores; CPU time per row does not
        "cpu_ms_per_row": round(1000 * cpu_seconds / rows, 2),
        "rows_per_second_if_cores_were_free": round(num_proc * rows / cpu_seconds, 1),
        "annotation_records_per_second": round(len(item_ids) / parse_seconds),
        "parquet_bytes_per_row": round(bytes_per_row),
        "raw_media_bytes_per_row": round(raw_bytes / rows),
        "parquet_to_raw_media_ratio": round(parquet_bytes / raw_bytes, 3),
        "peak_rss_mib_per_process": round(peak_rss / 1024),
        "projection": {
            "release_rows_without_classification": release_rows,
            "hours_at_this_rate": round(release_rows / rows_per_second / 3600, 1),
            "cpu_hours": round(release_rows * cpu_seconds / rows / 3600, 1),
            "annotation_parse_minutes_per_pass": round(
                RELEASE_ITEMS / (len(item_ids) / parse_seconds) / 60, 1
            ),
            "parquet_gib_with_sample_sized_media": round(release_rows * bytes_per_row / 2**30, 1),
            "check_ms_per_realistic_file": realistic,
            "cpu_hours_upper_bound_every_row_with_all_three_realistic_media": round(
                release_rows * (cpu_seconds / rows + sum(realistic[m] for m in MEDIA) / 1000) / 3600, 1
            ),
            "parquet_tib_upper_bound_every_row_with_all_three_realistic_media": round(
                release_rows * sum(realistic[f"{m}_kib"] for m in MEDIA) / 2**30, 2
            ),
            "note": (
                "media are embedded unchanged, so the Parquet size is the raw media size of the rows "
                "written (an item in several configs counts once per config) times "
                "parquet_to_raw_media_ratio; conversion time is dominated by decoding each file once to "
                "validate it, so it grows with the real files' resolution and length"
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir", nargs="?", default="outputs/sample_raw")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--items-per-shard", type=int, default=250)
    parser.add_argument("--json", default=None, help="also write the result to this file")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.raw_dir, ANNOTATION_FILE)):
        from .generate_sample import generate_sample

        generate_sample(args.raw_dir, "default", seed=0, num_proc=args.num_proc)
    result = benchmark(args.raw_dir, args.num_proc, args.items_per_shard)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
