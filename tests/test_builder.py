import glob
import json
import os
import shutil

import pytest
from datasets import Image, load_dataset

from dataset_script.builder import M5ProductRaw
from dataset_script.generate_sample import generate_sample
from dataset_script.raw_layout import ANNOTATION_FILE, CONFIG_SPLITS, media_path, read_split_ids


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory):
    raw_dir = str(tmp_path_factory.mktemp("raw"))
    generate_sample(raw_dir, "tiny", seed=0, num_proc=1)
    return raw_dir


@pytest.mark.parametrize("config", list(CONFIG_SPLITS))
def test_builder_reads_every_split_of_the_raw_layout(tiny_raw, tmp_path, config):
    builder = M5ProductRaw(data_dir=tiny_raw, config_name=config, cache_dir=str(tmp_path))
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    assert sorted(dataset) == sorted(CONFIG_SPLITS[config])
    with open(os.path.join(tiny_raw, ANNOTATION_FILE), encoding="utf-8") as handle:
        annotations = json.load(handle)
    for split in CONFIG_SPLITS[config]:
        assert dataset[split]["item_id"] == read_split_ids(tiny_raw, config, split)
        for row in dataset[split].cast_column("image", Image(decode=False)):
            record = annotations[row["item_id"]]
            assert row["caption"] == record.get("title")
            assert dataset[split].features["label"].int2str(row["label"]) == record["label"]
            path = media_path(tiny_raw, "image", row["item_id"])
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    assert row["image"]["bytes"] == handle.read(), "media must be embedded unchanged"
            else:
                assert row["image"] is None


def test_builder_parquet_output_loads_and_decodes(tiny_raw, tmp_path):
    """raw -> builder -> Parquet -> load_dataset, every feature decoding."""
    from PIL.Image import Image as PILImage

    builder = M5ProductRaw(data_dir=tiny_raw, config_name="retrieval_fine", cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare(output_dir=str(tmp_path / "parquet"), file_format="parquet")
    files = {
        split: sorted(glob.glob(str(tmp_path / "parquet" / f"*-{split}*.parquet")))
        for split in ("gallery", "query")
    }
    dataset = load_dataset(
        "parquet", data_files=files, features=builder.info.features, cache_dir=str(tmp_path / "cache")
    )
    for split in files:
        assert dataset[split].num_rows == len(read_split_ids(tiny_raw, "retrieval_fine", split))
    rows = list(dataset["gallery"]) + list(dataset["query"])
    image = next(row["image"] for row in rows if row["image"] is not None)
    video = next(row["video"] for row in rows if row["video"] is not None)
    audio = next(row["audio"] for row in rows if row["audio"] is not None)
    assert isinstance(image, PILImage)
    assert video.get_frames_in_range(0, 4).data.shape == (4, 3, 64, 64)
    assert audio.get_all_samples().data.shape[0] == 1
    assert all(isinstance(row["table"], list) for row in rows)


def test_builder_keeps_items_with_a_corrupt_file(tiny_raw, tmp_path):
    raw_dir = str(tmp_path / "raw")
    shutil.copytree(tiny_raw, raw_dir)
    ids = read_split_ids(raw_dir, "retrieval_coarse", "gallery")
    victim = next(i for i in ids if os.path.exists(media_path(raw_dir, "image", i)))
    with open(media_path(raw_dir, "image", victim), "wb") as handle:
        handle.write(b"not a jpeg")
    builder = M5ProductRaw(
        data_dir=raw_dir, config_name="retrieval_coarse", cache_dir=str(tmp_path / "cache")
    )
    builder.download_and_prepare()
    gallery = builder.as_dataset(split="gallery")
    assert gallery["item_id"] == ids
    row = gallery[ids.index(victim)]
    assert row["image"] is None and row["caption"] is not None


def test_builder_needs_a_data_dir():
    with pytest.raises(ValueError, match="data_dir"):
        M5ProductRaw(config_name="pretrain")
