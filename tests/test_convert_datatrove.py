"""Conversion on datatrove's local executor: what `convert` writes, resumed, with the bad-data report."""

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from dataset_script.convert import MANIFEST_DIR, SUMMARY_FILE, convert
from dataset_script.convert_datatrove import LOGGING_DIR, convert_with_datatrove
from dataset_script.generate_sample import generate_sample
from dataset_script.raw_layout import SPLIT_FILES, media_path, read_split_ids

ITEMS_PER_SHARD = 10
RUN_DEPENDENT = ("rows_written_this_run", "seconds_this_run", "num_proc")


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    raw_dir = str(tmp_path_factory.mktemp("raw"))
    generate_sample(raw_dir, "tiny", seed=0, num_proc=1)
    return raw_dir


@pytest.fixture(scope="module")
def damaged_raw(tiny_raw, tmp_path_factory):
    """The tiny sample with a truncated image, a garbage audio file and an unknown id in a split file."""
    raw_dir = str(tmp_path_factory.mktemp("damaged"))
    shutil.copytree(tiny_raw, raw_dir, dirs_exist_ok=True)
    ids = list(dict.fromkeys(read_split_ids(raw_dir, "pretrain", "train")))
    with_image = [i for i in ids if os.path.exists(media_path(raw_dir, "image", i))]
    with open(media_path(raw_dir, "image", with_image[0]), "r+b") as handle:
        handle.truncate(200)
    with_audio = [i for i in ids if os.path.exists(media_path(raw_dir, "audio", i))]
    with open(media_path(raw_dir, "audio", with_audio[0]), "wb") as handle:
        handle.write(os.urandom(3000))
    with open(os.path.join(raw_dir, SPLIT_FILES["pretrain", "train"]), "a", encoding="utf-8") as handle:
        handle.write("999999999999\n")
    return raw_dir


def output_files(out_dir: str) -> list[str]:
    """Every file of the converted dataset (datatrove's own logs left out)."""
    files = (
        os.path.relpath(os.path.join(root, name), out_dir)
        for root, _, names in os.walk(out_dir)
        for name in names
    )
    return sorted(name for name in files if not name.startswith(LOGGING_DIR))


def summary_without_run_fields(out_dir: str) -> dict:
    summary = json.loads(open(os.path.join(out_dir, SUMMARY_FILE), encoding="utf-8").read())
    return {key: value for key, value in summary.items() if key not in RUN_DEPENDENT}


def test_local_executor_writes_the_same_dataset_and_report_as_convert(damaged_raw, tmp_path):
    reference, engine = str(tmp_path / "reference"), str(tmp_path / "datatrove")
    convert(damaged_raw, reference, num_proc=1, items_per_shard=ITEMS_PER_SHARD)
    convert_with_datatrove(damaged_raw, engine, tasks=3, workers=2, items_per_shard=ITEMS_PER_SHARD)
    files = output_files(reference)
    assert files == output_files(engine) and sum(name.endswith(".parquet") for name in files) > 3
    for name in files:
        if name.endswith(".parquet"):
            assert pq.read_table(os.path.join(engine, name)).equals(
                pq.read_table(os.path.join(reference, name))
            )
    summary = summary_without_run_fields(engine)
    assert summary == summary_without_run_fields(reference)
    assert summary["unknown_split_ids"] and any(summary["corrupt_media_reasons"].values())  # the damage shows
    card = open(os.path.join(engine, "README.md"), encoding="utf-8").read()
    assert card == open(os.path.join(reference, "README.md"), encoding="utf-8").read()


def test_rerun_redoes_only_a_damaged_shard(tiny_raw, tmp_path):
    out_dir = str(tmp_path / "out")
    convert_with_datatrove(tiny_raw, out_dir, tasks=2, workers=2, items_per_shard=ITEMS_PER_SHARD)
    manifests = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(os.path.join(out_dir, MANIFEST_DIR))
        for name in names
    )
    damaged = json.load(open(manifests[0], encoding="utf-8"))["file"]
    untouched = json.load(open(manifests[1], encoding="utf-8"))["file"]
    stamps = {name: os.stat(os.path.join(out_dir, name)).st_mtime_ns for name in (damaged, untouched)}
    with open(os.path.join(out_dir, damaged), "wb") as handle:
        handle.write(b"not parquet")
    convert_with_datatrove(tiny_raw, out_dir, tasks=2, workers=2, items_per_shard=ITEMS_PER_SHARD)
    assert pq.read_table(os.path.join(out_dir, damaged)).num_rows > 0  # rewritten
    assert os.stat(os.path.join(out_dir, untouched)).st_mtime_ns == stamps[untouched]  # skipped
    assert json.load(open(os.path.join(out_dir, SUMMARY_FILE), encoding="utf-8"))["complete"] is True


def test_slurm_stages_are_wired_without_submitting(tiny_raw, tmp_path):
    from datatrove.executor import SlurmPipelineExecutor

    from dataset_script.convert_datatrove import build_executor

    summary_stage = build_executor(
        tiny_raw, str(tmp_path / "out"), executor="slurm", tasks=16, partition="cpu", time="01:00:00"
    )
    assert isinstance(summary_stage, SlurmPipelineExecutor) and summary_stage.tasks == 1
    shard_stage = summary_stage.depends
    assert shard_stage.tasks == 16 and shard_stage.partition == "cpu" and not shard_stage.skip_completed
    assert shard_stage.logging_dir.path.endswith("_conversion/datatrove/shards")
