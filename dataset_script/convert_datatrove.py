"""The M5Product conversion on Hugging Face `datatrove`: one machine (local executor), a Slurm cluster or Ray.

    python -m dataset_script.convert_datatrove RAW_DIR OUT_DIR --tasks 8 --workers 2            # local
    python -m dataset_script.convert_datatrove RAW_DIR OUT_DIR --executor slurm --tasks 512 \\
        --partition cpu --time 04:00:00 --cpus-per-task 4                                     # Slurm array
    python -m dataset_script.convert_datatrove RAW_DIR OUT_DIR --executor ray --tasks 512 --workers 64

The output is `dataset_script.convert`'s, file for file: the same Parquet shards (fixed lists of ids, so
their names do not depend on the number of tasks), manifest records, `_conversion/summary.json` bad-data
report and dataset card. datatrove schedules and retries; the work is `convert` itself: task `rank` of
`tasks` runs `convert(..., shard_index=rank, num_shards=tasks, write_summary=False)`, i.e. every `tasks`-th
shard, skipping shards whose manifest record matches (resume), and a second one-task stage that depends on
the first writes the summary and card once every shard is complete. Resuming is `convert`'s: a rerun starts
every task again (datatrove's `skip_completed` is off: its completion marks would also skip a shard damaged
or removed since), and each task skips its shards whose manifest record matches, which costs a Parquet
footer read per shard. datatrove's logs and stats live in `OUT_DIR/_conversion/datatrove/`. On Slurm and
Ray, RAW_DIR and OUT_DIR must be on a file system every node sees (as for `--shard-index/--num-shards`).

More tasks than workers balance the load (each task is a few shards); each task parses the annotation file
for its own ids, which `benchmark_conversion` measures as the serial part.
"""

from __future__ import annotations

import argparse
import os

from datatrove.pipeline.base import PipelineStep

from .convert import CONVERSION_DIR, convert
from .raw_layout import MediaReading

EXECUTORS = ("local", "slurm", "ray")
LOGGING_DIR = f"{CONVERSION_DIR}/datatrove"


class ConvertShards(PipelineStep):
    """Task `rank` of `world_size` writes every `world_size`-th shard of the conversion (see `convert`)."""

    name = "M5Product shards"
    type = "Writer"

    def __init__(
        self, raw_dir: str, out_dir: str, items_per_shard: int, row_group_size: int, reading: MediaReading
    ):
        super().__init__()
        self.raw_dir, self.out_dir = raw_dir, out_dir
        self.items_per_shard, self.row_group_size, self.reading = items_per_shard, row_group_size, reading

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        result = convert(
            self.raw_dir,
            self.out_dir,
            num_proc=1,
            items_per_shard=self.items_per_shard,
            shard_index=rank,
            num_shards=world_size,
            row_group_size=self.row_group_size,
            reading=self.reading,
            write_summary=False,
        )
        self.stat_update("rows_written", value=result["rows_written"])
        return data


class WriteSummary(ConvertShards):
    """After every shard task: the bad-data summary and the dataset card (converts a shard still missing)."""

    name = "M5Product summary and card"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        summary = convert(
            self.raw_dir,
            self.out_dir,
            num_proc=1,
            items_per_shard=self.items_per_shard,
            row_group_size=self.row_group_size,
            reading=self.reading,
        )
        if not summary.get("complete"):
            raise RuntimeError(f"the conversion is not complete: {summary}")
        return data


def build_executor(
    raw_dir: str,
    out_dir: str,
    executor: str = "local",
    tasks: int = 4,
    workers: int = -1,
    items_per_shard: int = 1000,
    row_group_size: int = 100,
    reading: MediaReading | None = None,
    **cluster,
):
    """The summary stage's executor (running it runs the shard stage first). `cluster`: Slurm / Ray options
    (partition, time, cpus_per_task, mem_per_cpu_gb, ...), passed to both stages."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    reading = reading or MediaReading()
    logging_dir = os.path.join(out_dir, LOGGING_DIR)
    steps = {
        "shards": ConvertShards(raw_dir, out_dir, items_per_shard, row_group_size, reading),
        "summary": WriteSummary(raw_dir, out_dir, items_per_shard, row_group_size, reading),
    }
    if executor == "local":
        from datatrove.executor import LocalPipelineExecutor as Executor

        # workers inherit the imported modules (torch, FFmpeg bindings), like `convert`'s pool, instead of
        # importing them again in each forkserver child
        cluster.setdefault("start_method", "fork")
    elif executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor as Executor

        cluster.setdefault("job_name", "m5product_convert")
    else:
        from datatrove.executor import RayPipelineExecutor as Executor
    shard_stage = Executor(
        pipeline=[steps["shards"]],
        tasks=tasks,
        workers=workers,
        logging_dir=os.path.join(logging_dir, "shards"),
        skip_completed=False,
        **cluster,
    )
    return Executor(
        pipeline=[steps["summary"]],
        tasks=1,
        workers=1,
        logging_dir=os.path.join(logging_dir, "summary"),
        skip_completed=False,
        depends=shard_stage,
        **cluster,
    )


def convert_with_datatrove(raw_dir: str, out_dir: str, **options) -> None:
    """Run the whole conversion with `build_executor(raw_dir, out_dir, **options)` and wait for it (local)."""
    build_executor(raw_dir, out_dir, **options).run()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("raw_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--tasks", type=int, default=4 * (os.cpu_count() or 1))
    parser.add_argument("--workers", type=int, default=-1, help="tasks run at once (-1: local = all cores)")
    parser.add_argument("--items-per-shard", type=int, default=1000)
    parser.add_argument("--row-group-size", type=int, default=100)
    parser.add_argument("--partition", default=None, help="Slurm partition")
    parser.add_argument("--time", default="04:00:00", help="Slurm time limit per task")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="Slurm / Ray")
    parser.add_argument("--mem-per-cpu-gb", type=float, default=4, help="Slurm / Ray")
    MediaReading.add_arguments(parser)
    args = parser.parse_args()
    workers = args.workers
    if args.executor == "local" and workers == -1:
        workers = os.cpu_count() or 1
    cluster = {}
    if args.executor in ("slurm", "ray"):
        cluster = {"cpus_per_task": args.cpus_per_task, "mem_per_cpu_gb": args.mem_per_cpu_gb}
    if args.executor == "slurm":
        if not args.partition:
            parser.error("--executor slurm needs --partition")
        cluster.update(partition=args.partition, time=args.time)
    convert_with_datatrove(
        args.raw_dir,
        args.out_dir,
        executor=args.executor,
        tasks=args.tasks,
        workers=workers,
        items_per_shard=args.items_per_shard,
        row_group_size=args.row_group_size,
        reading=MediaReading.from_arguments(args),
        **cluster,
    )


if __name__ == "__main__":
    main()
