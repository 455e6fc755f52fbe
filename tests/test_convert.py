import json
import os
import shutil
import time
from dataclasses import asdict

import pytest
import yaml
from datasets import load_dataset

import dataset_script.convert as convert_module
from dataset_script.convert import SUMMARY_FILE, convert, main
from dataset_script.generate_sample import generate_sample
from dataset_script.raw_layout import (
    ANNOTATION_FILE,
    CONFIG_SPLITS,
    SPLIT_FILES,
    MediaReading,
    media_path,
    read_labels,
    read_split_ids,
)

ITEMS_PER_SHARD = 10


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    raw_dir = str(tmp_path_factory.mktemp("raw"))
    generate_sample(raw_dir, "tiny", seed=0, num_proc=1)
    return raw_dir


@pytest.fixture
def converted(tiny_raw, tmp_path_factory):
    """Per test, not per module: mutation testing runs for a function only the tests during which it ran, so
    a module fixture's conversion would count for its first test alone."""
    out_dir = str(tmp_path_factory.mktemp("converted"))
    summary = convert(tiny_raw, out_dir, num_proc=2, items_per_shard=ITEMS_PER_SHARD, row_group_size=4)
    return out_dir, summary


def _load(out_dir, config, tmp_path, **kwargs):
    return load_dataset(out_dir, config, cache_dir=str(tmp_path / "cache"), **kwargs)


def _split_ids(raw_dir, config, split):
    return list(dict.fromkeys(read_split_ids(raw_dir, config, split)))


def _shard_files(out_dir):
    return sorted(
        os.path.relpath(os.path.join(root, name), out_dir)
        for root, _, names in os.walk(os.path.join(out_dir, "data"))
        for name in names
    )


def _assert_decodes(row):
    """Image -> PIL, video -> torchcodec VideoDecoder frames, audio -> torchcodec AudioDecoder samples."""
    from PIL import Image

    if row["image"] is not None:
        assert isinstance(row["image"], Image.Image) and row["image"].size == (64, 64)
    if row["video"] is not None:
        assert row["video"].metadata.num_frames >= 8
        assert tuple(row["video"].get_frame_at(0).data.shape) == (3, 64, 64)
    if row["audio"] is not None:
        samples = row["audio"].get_all_samples()
        assert samples.sample_rate == 16000 and samples.data.shape[-1] > 16000


def test_every_config_loads_with_the_right_splits_and_decodes(tiny_raw, converted, tmp_path):
    out_dir, summary = converted
    assert summary["complete"]
    seen_media = {"image": 0, "video": 0, "audio": 0}
    with open(os.path.join(tiny_raw, ANNOTATION_FILE), encoding="utf-8") as handle:
        annotations = json.load(handle)
    for config, splits in CONFIG_SPLITS.items():
        dataset = _load(out_dir, config, tmp_path)
        assert sorted(dataset) == sorted(splits)
        for split in splits:
            ids = _split_ids(tiny_raw, config, split)
            assert dataset[split]["item_id"] == ids, f"{config}/{split}: order or size differs"
            assert summary["splits"][f"{config}/{split}"]["num_rows"] == len(ids)
            features = dataset[split].features
            assert list(features) == [
                "item_id", "caption", "table", "image", "video", "audio", "label", "instance_id",
            ]  # fmt: skip
            for row in dataset[split]:
                record = annotations[row["item_id"]]
                assert row["caption"] == record.get("title")
                assert features["label"].int2str(row["label"]) == record["label"]
                assert row["instance_id"] == record["instance_id"]
                assert bool(row["table"]) == ("pv" in record)
                for modality in seen_media:
                    present = os.path.exists(media_path(tiny_raw, modality, row["item_id"]))
                    assert (row[modality] is not None) == present
                    seen_media[modality] += present
                _assert_decodes(row)
    assert min(seen_media.values()) > 0


def test_streaming_reads_the_same_rows(tiny_raw, converted, tmp_path):
    out_dir, _ = converted
    decoded = {"video": 0, "audio": 0}
    for config, splits in CONFIG_SPLITS.items():
        streamed = _load(out_dir, config, tmp_path, streaming=True)
        for split in splits:
            rows = list(streamed[split])
            assert [row["item_id"] for row in rows] == _split_ids(tiny_raw, config, split)
            for row in rows:
                _assert_decodes(row)
                for modality in decoded:
                    decoded[modality] += row[modality] is not None
    assert min(decoded.values()) > 0


def test_card_is_a_hub_dataset_card(tiny_raw, converted):
    out_dir, summary = converted
    with open(os.path.join(out_dir, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    metadata = yaml.safe_load(text.split("---")[1])
    assert {c["config_name"] for c in metadata["configs"]} == set(CONFIG_SPLITS)
    assert next(c for c in metadata["configs"] if c["config_name"] == "pretrain")["default"]
    for info in metadata["dataset_info"]:
        for split in info["splits"]:
            key = f"{info['config_name']}/{split['name']}"
            assert split["num_examples"] == summary["splits"][key]["num_rows"]
    assert "redistribution is not allowed" in text and "instance_id" in text
    assert (metadata["license"], metadata["license_name"]) == ("other", "m5product-research-only")
    # the features (the label's class names from labels.txt), the class count and each split's size
    labels = read_labels(tiny_raw)
    for info in metadata["dataset_info"]:
        feature = next(f for f in info["features"] if f["name"] == "label")
        assert feature["dtype"]["class_label"]["names"] == {str(i): name for i, name in enumerate(labels)}
    assert f"category classification ({len(labels)} classes)" in text
    for key, sizes in summary["splits"].items():
        mib = sizes["num_bytes"] / 2**20
        assert f"| {key} | {sizes['num_rows']:,} | {sizes['num_shards']} | {mib:,.1f} MiB |" in text
        # each split's shard count is the number of its parquet files
        config, split = key.split("/")
        files = [name for name in _shard_files(out_dir) if name.startswith(f"data/{config}/{split}-")]
        assert sizes["num_shards"] == len(files) > 0


def test_rerun_skips_complete_shards_and_redoes_only_a_damaged_one(tiny_raw, converted):
    out_dir, _ = converted
    files = _shard_files(out_dir)
    mtimes = {name: os.path.getmtime(os.path.join(out_dir, name)) for name in files}
    again = convert(tiny_raw, out_dir, num_proc=1, items_per_shard=ITEMS_PER_SHARD)
    assert again["complete"] and again["rows_written_this_run"] == 0
    assert {name: os.path.getmtime(os.path.join(out_dir, name)) for name in files} == mtimes

    damaged = next(name for name in files if "pretrain" in name)
    with open(os.path.join(out_dir, damaged), "r+b") as handle:
        handle.truncate(100)  # as if the machine died while copying it
    open(os.path.join(out_dir, damaged) + ".tmp-123", "wb").close()  # an interrupted writer's leftover
    repaired = convert(tiny_raw, out_dir, num_proc=1, items_per_shard=ITEMS_PER_SHARD)
    assert repaired["rows_written_this_run"] == ITEMS_PER_SHARD
    assert _shard_files(out_dir) == files  # the leftover is gone: a folder upload would publish it
    changed = [name for name in files if os.path.getmtime(os.path.join(out_dir, name)) != mtimes[name]]
    assert changed == [damaged]


def test_machines_split_the_shards_and_the_last_writes_the_card(tiny_raw, converted, tmp_path):
    out_dir, summary = converted
    shared = str(tmp_path / "shared")
    # a small record budget: the annotation file is streamed once per wave of shards
    first = convert(
        tiny_raw, shared, items_per_shard=ITEMS_PER_SHARD, shard_index=0, num_shards=2, max_items_in_memory=15
    )
    assert not first["complete"] and first["missing_shards"] > 0
    assert not os.path.exists(os.path.join(shared, "README.md"))
    # the second machine through the command line, which returns nothing: its summary is the file it writes
    argv = [
        tiny_raw,
        shared,
        "--items-per-shard",
        str(ITEMS_PER_SHARD),
        "--num-proc",
        "2",
        "--row-group-size",
        "4",
    ]
    main([*argv, "--shard-index", "1", "--num-shards", "2", "--video-fps", "2", "--max-audio-seconds", "3"])
    with open(os.path.join(shared, SUMMARY_FILE), encoding="utf-8") as handle:
        second = json.load(handle)
    assert second["complete"] and os.path.exists(os.path.join(shared, "README.md"))
    assert second["num_proc"] == 2 and second["items_per_shard"] == ITEMS_PER_SHARD
    # what the media check decoded: the options given, the processor's defaults otherwise
    assert second["media_reading"] == {"video_fps": 2.0, "max_video_frames": 12, "max_audio_seconds": 3.0}
    assert summary["media_reading"] == asdict(MediaReading())
    assert first["rows_written"] + second["rows_written_this_run"] == sum(
        sizes["num_rows"] for sizes in summary["splits"].values()
    )
    assert _shard_files(shared) == [name for name in _shard_files(out_dir) if ".tmp-" not in name]
    for key, sizes in summary["splits"].items():
        assert second["splits"][key]["num_rows"] == sizes["num_rows"]
        assert second["splits"][key]["num_shards"] == sizes["num_shards"]
    with pytest.raises(ValueError, match="shard-index"):
        convert(tiny_raw, shared, shard_index=2, num_shards=2)
    # shards only (a distributed engine's task): no summary, no card, the rows it wrote
    alone = str(tmp_path / "shards_only")
    result = convert(tiny_raw, alone, items_per_shard=ITEMS_PER_SHARD, write_summary=False)
    assert (
        result["complete"] is None
        and result["rows_written"] == first["rows_written"] + second["rows_written_this_run"]
    )
    assert not os.path.exists(os.path.join(alone, SUMMARY_FILE)) and not os.path.exists(
        os.path.join(alone, "README.md")
    )


def test_command_line_defaults(monkeypatch):
    calls = []
    monkeypatch.setattr(convert_module, "convert", lambda *args, **kwargs: calls.append((args, kwargs)))
    main(["raw", "out"])
    assert calls == [
        (
            ("raw", "out"),
            {
                "num_proc": os.cpu_count() or 1,
                "items_per_shard": 1000,
                "shard_index": 0,
                "num_shards": 1,
                "row_group_size": 100,
                "max_items_in_memory": 1_000_000,
                "reading": MediaReading(),
            },
        )
    ]


@pytest.fixture(scope="module")
def broken(tiny_raw, tmp_path_factory):
    """The tiny sample with one of each kind of bad data, and what was broken where."""
    raw_dir = str(tmp_path_factory.mktemp("broken_raw"))
    shutil.copytree(tiny_raw, raw_dir, dirs_exist_ok=True)
    ids = _split_ids(raw_dir, "pretrain", "train")
    with open(os.path.join(raw_dir, ANNOTATION_FILE), encoding="utf-8") as handle:
        annotations = json.load(handle)

    def first(modality, skip=()):
        return next(i for i in ids if os.path.exists(media_path(raw_dir, modality, i)) and i not in skip)

    missing_image = first("image")
    os.remove(media_path(raw_dir, "image", missing_image))
    truncated_video = first("video")
    path = media_path(raw_dir, "video", truncated_video)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    garbage_audio = first("audio")
    with open(media_path(raw_dir, "audio", garbage_audio), "wb") as handle:
        handle.write(os.urandom(3000))
    corrupt_image = first("image", skip={missing_image})
    with open(media_path(raw_dir, "image", corrupt_image), "r+b") as handle:
        handle.truncate(200)
    malformed_pv = next(i for i in ids if "pv" in annotations[i])
    annotations[malformed_pv]["pv"] = "材质#:#纯棉#;#no separator here#;#产地#:#浙江"
    unknown_label = ids[-1]
    annotations[unknown_label]["label"] = "not/a/real/category"
    empty_audio = first("audio", skip={garbage_audio})
    open(media_path(raw_dir, "audio", empty_audio), "wb").close()
    used = {ids[0], missing_image, truncated_video, garbage_audio, corrupt_image, malformed_pv, empty_audio}
    not_object = next(i for i in ids[1:8] if i not in used)  # mid-shard: the items after it must still come
    annotations[not_object] = ["a list", "not an object"]
    number_title = next(i for i in ids[1:] if i not in used | {not_object, unknown_label})
    annotations[number_title]["title"] = 12345
    with open(os.path.join(raw_dir, ANNOTATION_FILE), "w", encoding="utf-8") as handle:
        json.dump(annotations, handle, ensure_ascii=False)
    with open(os.path.join(raw_dir, SPLIT_FILES["pretrain", "train"]), "a", encoding="utf-8") as handle:
        handle.write(f"999999999999\n{ids[0]}\n")
    os.remove(os.path.join(raw_dir, SPLIT_FILES["classification", "train"]))  # the config's other split stays
    return raw_dir, {
        "missing_image": missing_image,
        "truncated_video": truncated_video,
        "garbage_audio": garbage_audio,
        "corrupt_image": corrupt_image,
        "malformed_pv": malformed_pv,
        "unknown_label": unknown_label,
        "empty_audio": empty_audio,
        "not_object": not_object,
        "number_title": number_title,
        "valid_ids": [i for i in ids if i != not_object],
    }


def test_bad_data_is_reported_and_nothing_valid_is_dropped(broken, tmp_path, capsys):
    raw_dir, bad = broken
    out_dir = str(tmp_path / "out")
    # in this process (the 2-process pool is the `converted` fixture's): mutation testing sees write_shard
    started = time.perf_counter()
    summary = convert(raw_dir, out_dir, num_proc=1, items_per_shard=ITEMS_PER_SHARD)
    assert summary["complete"] and 0 < summary["seconds_this_run"] <= time.perf_counter() - started + 0.01
    printed = capsys.readouterr().out
    with open(os.path.join(out_dir, SUMMARY_FILE), encoding="utf-8") as handle:
        assert json.load(handle) == json.loads(json.dumps(summary))

    assert summary["unknown_split_ids"] == {"pretrain/train": ["999999999999"]}
    assert summary["duplicate_split_ids"] == {"pretrain/train": [bad["valid_ids"][0]]}
    assert summary["missing_split_files"] == [SPLIT_FILES["classification", "train"]]
    assert summary["malformed_pv"] == {bad["malformed_pv"]: ["no separator here"]}
    assert summary["unknown_labels"] == {bad["unknown_label"]: "not/a/real/category"}
    assert summary["corrupt_media"] == {
        "image": [bad["corrupt_image"]],
        "video": [bad["truncated_video"]],
        "audio": sorted([bad["garbage_audio"], bad["empty_audio"]]),
    }
    reasons = summary["corrupt_media_reasons"]
    assert {m: sorted(r) for m, r in reasons.items()} == summary["corrupt_media"]
    assert reasons["audio"][bad["empty_audio"]] == "the file is empty (0 bytes)"
    for modality, item_id in (
        ("image", "corrupt_image"),
        ("video", "truncated_video"),
        ("audio", "garbage_audio"),
    ):
        reason = reasons[modality][bad[item_id]]  # the decoder's own message, one line
        assert (
            isinstance(reason, str)
            and reason
            and "\n" not in reason
            and reason != "the file is empty (0 bytes)"
        )
    assert summary["skipped_items"] == [bad["not_object"]]
    assert summary["invalid_records"] == {
        bad["not_object"]: ["the record is a JSON array, not an object: item skipped"],
        bad["number_title"]: ["title is a JSON number, not a string: kept as '12345'"],
    }
    for key in ("999999999999", bad["malformed_pv"], bad["truncated_video"], bad["garbage_audio"]):
        assert key in printed

    train = _load(out_dir, "pretrain", tmp_path, split="train")
    assert train["item_id"] == bad["valid_ids"]
    rows = {row["item_id"]: row for row in train}
    assert rows[bad["missing_image"]]["image"] is None and rows[bad["corrupt_image"]]["image"] is None
    assert rows[bad["truncated_video"]]["video"] is None
    assert rows[bad["garbage_audio"]]["audio"] is None
    assert rows[bad["malformed_pv"]]["table"] == [
        {"key": "材质", "value": "纯棉"},
        {"key": "产地", "value": "浙江"},
    ]
    assert rows[bad["unknown_label"]]["label"] == -1
    assert rows[bad["number_title"]]["caption"] == "12345"
    assert rows[bad["empty_audio"]]["audio"] is None
    # the damaged items keep every other field
    assert rows[bad["truncated_video"]]["caption"] is not None or rows[bad["truncated_video"]]["image"]
    assert summary["splits"]["pretrain/train"]["num_rows"] == len(bad["valid_ids"])
    # a missing split file costs that split only
    assert list(_load(out_dir, "classification", tmp_path)) == ["test"]
    # and the card counts each kind of problem
    with open(os.path.join(out_dir, "README.md"), encoding="utf-8") as handle:
        card = handle.read().splitlines()
    for row in (
        "| split-file ids missing from the annotation | 1 |",
        "| records with fields outside the schema (valid fields kept) | 1 |",
        "| records that are not JSON objects (item left out) | 1 |",
        "| malformed `pv` strings (well-formed pairs kept) | 1 |",
        "| labels outside labels.txt (stored as -1) | 1 |",
        "| split files absent (split left out) | 1 |",
        "| ids repeated within a split file (kept once) | 1 |",
        "| corrupt image files (stored as missing) | 1 |",
        "| corrupt video files (stored as missing) | 1 |",
        "| corrupt audio files (stored as missing) | 2 |",
    ):
        assert row in card


def test_rerun_after_a_changed_split_file_rewrites_the_shards_whose_ids_changed(
    tiny_raw, converted, tmp_path
):
    """Two ids trade places across shards 0 and 1 of a split: same row counts, other ids. Those two shards
    must be rewritten (the manifest's ids digest no longer matches), the others kept."""
    raw_dir, out_dir = str(tmp_path / "raw"), str(tmp_path / "out")
    shutil.copytree(tiny_raw, raw_dir, copy_function=os.link)  # hard links: the shared fixture stays intact
    shutil.copytree(converted[0], out_dir)
    split_file = os.path.join(raw_dir, SPLIT_FILES["pretrain", "train"])
    ids = _split_ids(raw_dir, "pretrain", "train")
    assert len(ids) > 2 * ITEMS_PER_SHARD
    ids[0], ids[ITEMS_PER_SHARD] = ids[ITEMS_PER_SHARD], ids[0]
    os.remove(split_file)  # a new file, not a write through the hard link
    with open(split_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(ids) + "\n")

    files = _shard_files(out_dir)
    mtimes = {name: os.path.getmtime(os.path.join(out_dir, name)) for name in files}
    rerun = convert(raw_dir, out_dir, num_proc=1, items_per_shard=ITEMS_PER_SHARD)
    assert rerun["complete"] and rerun["rows_written_this_run"] == 2 * ITEMS_PER_SHARD
    changed = [name for name in files if os.path.getmtime(os.path.join(out_dir, name)) != mtimes[name]]
    assert [name.split("/")[-1][:17] for name in changed] == ["train-00000-of-00", "train-00001-of-00"]
    assert all("/pretrain/" in f"/{name}" for name in changed)
    assert _load(out_dir, "pretrain", tmp_path, split="train")["item_id"] == ids
