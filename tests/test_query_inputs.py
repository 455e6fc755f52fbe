"""spaces_demo/query_inputs.py: visitor input becomes a checked query, or a message naming what is wrong."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spaces_demo"))
import query_inputs  # noqa: E402
from query_inputs import QueryError, build_query, read_table  # noqa: E402

from dataset_script.generate_sample import write_mp3, write_mp4  # noqa: E402

ALL = ["text", "table", "image", "video", "audio"]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("query_media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    write_mp4(str(folder / "clip.mp4"), rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), fps=4)
    write_mp3(str(folder / "tone.mp3"), np.sin(np.linspace(0, 800, 16000)).astype(np.float32))
    (folder / "truncated.jpg").write_bytes((folder / "photo.jpg").read_bytes()[:200])
    (folder / "fake.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (folder / "fake.mp3").write_bytes(b"ID3 not really a sound")
    (folder / "photo.tiff").write_bytes(b"II*\x00")
    return {path.name: path for path in folder.iterdir()}


def test_table_rows_from_the_dataframe_blank_rows_dropped():
    frame = pd.DataFrame([["材质", "纯棉"], ["", ""], [" colour ", "red "], [None, None]], columns=["k", "v"])
    assert read_table(frame) == [("材质", "纯棉"), ("colour", "red")]
    assert read_table({"headers": ["k", "v"], "data": [["a", "b"]]}) == [("a", "b")]
    assert read_table(None) == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["", ""], ["颜色", ""]], "Table row 2: value is empty"),
        ([["", "红色"]], "Table row 1: property is empty"),
    ],
)
def test_half_filled_table_row_is_refused(rows, message):
    with pytest.raises(QueryError, match=message):
        read_table(rows)


def test_every_modality_is_read(media):
    query = build_query(
        ALL,
        text="  red dress ",
        table=[["材质", "纯棉"]],
        image=media["photo.jpg"],
        video=media["clip.mp4"],
        audio=media["tone.mp3"],
    )
    assert query.modalities == tuple(ALL)
    assert query.text == "red dress" and query.table == [("材质", "纯棉")]
    assert query.image.mode == "RGB" and query.image.size == (60, 40)
    assert query.video == str(media["clip.mp4"]) and query.audio == str(media["tone.mp3"])
    assert query.ignored == []


def test_unticked_modalities_are_ignored_and_reported(media):
    query = build_query(["image"], text="red dress", image=media["photo.jpg"])
    assert query.modalities == ("image",)
    assert query.text is None and query.ignored == ["text"]


@pytest.mark.parametrize(
    ("search_with", "given", "message"),
    [
        (ALL, {}, "Empty query"),
        (ALL, {"text": "   ", "table": [["", ""]]}, "Empty query"),
        (["image"], {"text": "red dress"}, r"Empty query.*\(image\)"),
        ([], {"text": "red dress"}, "Tick at least one modality"),
        (["smell"], {"text": "red dress"}, "Unknown modalities"),
    ],
)
def test_nothing_to_search_with(search_with, given, message):
    with pytest.raises(QueryError, match=message):
        build_query(search_with, **given)


@pytest.mark.parametrize(
    ("modality", "name", "message"),
    [
        ("image", "truncated.jpg", "The image 'truncated.jpg' could not be read"),
        ("image", "photo.tiff", "unsupported format '.tiff'"),
        ("video", "fake.mp4", "The video file 'fake.mp4' could not be decoded"),
        ("video", "photo.jpg", "The video file 'photo.jpg' has an unsupported format '.jpg'"),
        ("audio", "fake.mp3", "The audio file 'fake.mp3' could not be decoded"),
    ],
)
def test_bad_files_are_named_in_the_message(media, modality, name, message):
    with pytest.raises(QueryError, match=message) as error:
        build_query(ALL, **{modality: media[name]})
    assert str(media[name].parent) not in str(error.value)  # the visitor sees the name, not server folders


def test_limits_on_image_pixels_and_clip_length(media, monkeypatch):
    monkeypatch.setattr(query_inputs, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(QueryError, match="'photo.jpg' is 60x40 pixels"):
        build_query(ALL, image=media["photo.jpg"])
    monkeypatch.setattr(query_inputs, "MAX_CLIP_SECONDS", 0.5)
    with pytest.raises(QueryError, match="'clip.mp4' lasts 1.0 s; the limit is 0.5 s"):
        build_query(ALL, video=media["clip.mp4"])
