import argparse
import json

import pytest

from dataset_script.raw_layout import (
    ItemIssues,
    MediaReading,
    format_pv,
    iter_annotations,
    parse_pv,
    read_media,
)


def test_parse_pv_keeps_every_well_formed_pair():
    pv = format_pv([("材质", "纯棉"), ("brand", "Nuvo")])
    assert parse_pv(pv) == ([{"key": "材质", "value": "纯棉"}, {"key": "brand", "value": "Nuvo"}], [])
    pairs, malformed = parse_pv("材质#:#纯棉#;#garbage#;##:#novalue#;#a#:#b#:#c#;#产地#:#浙江")
    assert pairs == [{"key": "材质", "value": "纯棉"}, {"key": "产地", "value": "浙江"}]
    assert malformed == ["garbage", "#:#novalue", "a#:#b#:#c"]
    assert parse_pv(None) == ([], []) and parse_pv("") == ([], [])


@pytest.mark.parametrize("chunk_chars", [1, 7, 1 << 20])
def test_iter_annotations_streams_exactly_what_json_load_reads(tmp_path, chunk_chars):
    records = {
        "560000000001": {"title": 'Nuvo 连衣裙 "quoted" {brace}', "pv": "a#:#b", "label": "x", "n": 12345},
        "560000000002": {},
        "3": {"title": "", "nested": {"list": [1, 2.5, None, True]}},
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=2), encoding="utf-8")
    assert dict(iter_annotations(str(path), chunk_chars=chunk_chars)) == records
    path.write_text("{}", encoding="utf-8")
    assert list(iter_annotations(str(path), chunk_chars=chunk_chars)) == []


def test_iter_annotations_rejects_a_list(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match="one JSON object keyed by item id"):
        list(iter_annotations(str(path)))


def _mp4_bytes(tmp_path, index_at_front):
    import av
    import numpy as np

    path = str(tmp_path / f"video-{index_at_front}.mp4")
    options = {"movflags": "faststart"} if index_at_front else {}
    with av.open(path, "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for index in range(24):
            pixels = np.random.default_rng(index).integers(0, 255, (64, 64, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with open(path, "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("index_at_front", [False, True])
def test_a_truncated_video_is_corrupt_wherever_its_index_is(tmp_path, index_at_front):
    data = _mp4_bytes(tmp_path, index_at_front)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "1.mp4").write_bytes(data)
    (tmp_path / "videos" / "2.mp4").write_bytes(data[: len(data) * 3 // 4])
    issues = ItemIssues()
    assert read_media(str(tmp_path), "video", "1", issues)["bytes"] == data
    assert issues.corrupt_media == {}
    assert read_media(str(tmp_path), "video", "2", issues) is None
    assert list(issues.corrupt_media) == ["video"]
    assert read_media(str(tmp_path), "video", "3", issues) is None  # absent: missing, not corrupt
    assert list(issues.corrupt_media) == ["video"]


def test_media_reading_command_line_options_round_trip():
    parser = argparse.ArgumentParser()
    MediaReading.add_arguments(parser)
    assert MediaReading.from_arguments(parser.parse_args([])) == MediaReading()
    args = parser.parse_args(["--video-fps", "2", "--max-video-frames", "5", "--max-audio-seconds", "3.5"])
    assert MediaReading.from_arguments(args) == MediaReading(2.0, 5, 3.5)
