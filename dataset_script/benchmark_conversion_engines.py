"""Today's converter (`convert`, a multiprocessing pool) against datatrove's local executor, in one run.

    python -m dataset_script.benchmark_conversion_engines RAW_DIR --num-proc 2 --repeats 2

Both convert RAW_DIR into fresh temporary folders with the same number of processes, alternately
(`--repeats` times each, so a change in the machine's load hits both alike). Figures: rows per CPU-second
of this process and its workers (user + system; the fair figure on a shared machine, where wall clock mostly
measures waiting for a core) and rows/s of wall clock, best run of each, and the ratios datatrove / pool.
datatrove runs `--tasks-per-worker` tasks per worker (more tasks balance the load; each parses the
annotation file for its own ids).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from .convert import SUMMARY_FILE, convert
from .convert_datatrove import convert_with_datatrove


def _rows(out_dir: str) -> int:
    with open(os.path.join(out_dir, SUMMARY_FILE), encoding="utf-8") as handle:
        return sum(split["num_rows"] for split in json.load(handle)["splits"].values())


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the workers of both engines)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(item.ru_utime + item.ru_stime for item in usage)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks-per-worker", type=int, default=4)
    parser.add_argument("--items-per-shard", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    engines = {
        "pool (convert)": lambda out: convert(
            args.raw_dir, out, num_proc=args.num_proc, items_per_shard=args.items_per_shard
        ),
        "datatrove local": lambda out: convert_with_datatrove(
            args.raw_dir,
            out,
            tasks=args.tasks_per_worker * args.num_proc,
            workers=args.num_proc,
            items_per_shard=args.items_per_shard,
        ),
    }
    seconds = {name: [] for name in engines}
    cpu = {name: [] for name in engines}
    rows = {}
    for _ in range(args.repeats):
        for name, run in engines.items():
            with tempfile.TemporaryDirectory() as out_dir:
                start, cpu_start = time.perf_counter(), _cpu_seconds()
                run(out_dir)
                seconds[name].append(time.perf_counter() - start)
                cpu[name].append(_cpu_seconds() - cpu_start)
                rows[name] = _rows(out_dir)
    if len(set(rows.values())) != 1:
        raise RuntimeError(f"the engines wrote different row counts: {rows}")
    rates = {name: rows[name] / min(times) for name, times in seconds.items()}
    cpu_rates = {name: rows[name] / min(times) for name, times in cpu.items()}
    print(
        f"conversion of {args.raw_dir} ({next(iter(rows.values())):,} rows), {args.num_proc} processes, "
        f"load average {os.getloadavg()[0]:.1f}, best of {args.repeats}:"
    )
    for name, rate in rates.items():
        runs = ", ".join(
            f"{value:.1f} s ({cpu_value:.1f} CPU-s)"
            for value, cpu_value in zip(seconds[name], cpu[name], strict=True)
        )
        print(f"  {name:<16} {cpu_rates[name]:7.1f} rows per CPU-s {rate:7.1f} rows/s  (runs: {runs})")
    pool, engine = "pool (convert)", "datatrove local"
    print(
        f"  datatrove / pool: {cpu_rates[engine] / cpu_rates[pool]:.2f}x per CPU-second, "
        f"{rates[engine] / rates[pool]:.2f}x wall clock"
    )


if __name__ == "__main__":
    main()
