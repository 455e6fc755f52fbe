"""Decoding of images, videos and audio from every accepted source type, on real files, and clear errors."""

import numpy as np
import PIL.Image
import pytest
import torch
from scale_media import SECOND_COLOURS, TONE_HZ, make_media, tone
from torchcodec.decoders import AudioDecoder, VideoDecoder

from modeling_scale.media_decoding_scale import (
    MediaDecodingError,
    describe_source,
    load_audio,
    load_image,
    load_video_frames,
    resample,
)


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("media"))


def dominant_frequency(waveform: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1 / rate)[spectrum.argmax()])


def nearest_colour(pixel: np.ndarray) -> tuple[int, int, int]:
    return min(SECOND_COLOURS, key=lambda colour: np.abs(pixel.astype(int) - colour).sum())


# ------------------------------------------------------------------------------------------------ images
def test_image_sources_give_rgb(media):
    from_path = load_image(media["jpeg"])
    assert from_path.mode == "RGB" and from_path.size == (80, 48)
    assert np.abs(np.asarray(from_path)[24, 40].astype(int) - (200, 30, 30)).max() < 10
    assert load_image(str(media["png"])).mode == "RGB"  # grey PNG converted
    from_bytes = load_image(media["jpeg"].read_bytes())
    from_dict = load_image({"bytes": None, "path": str(media["jpeg"])})
    assert np.array_equal(np.asarray(from_bytes), np.asarray(from_path))
    assert np.array_equal(np.asarray(from_dict), np.asarray(from_path))
    array = np.zeros((5, 6, 3), np.uint8)
    assert load_image(array) is array
    assert load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)  # greyscale
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)  # RGBA
    assert load_image(torch.zeros(1, 5, 6)).shape == (3, 5, 6)  # channels-first greyscale tensor


@pytest.mark.parametrize("name", ["jpeg_corrupt", "png_corrupt", "not_an_image"])
def test_broken_image_raises(media, name):
    with pytest.raises(MediaDecodingError, match="cannot decode image"):
        load_image(media[name])


def test_image_bad_types_and_missing_file(media, tmp_path):
    with pytest.raises(MediaDecodingError, match="no such file"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(MediaDecodingError, match="unsupported image type int"):
        load_image(3)
    with pytest.raises(MediaDecodingError, match="2 or 3 dimensions"):
        load_image(np.zeros((1, 2, 3, 4)))


# ------------------------------------------------------------------------------------------------- video
def test_video_sampled_at_one_frame_per_second(media):
    frames = load_video_frames(media["mp4"], fps=1.0, max_frames=12)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8  # 2.5 s -> t = 0, 1, 2
    assert [nearest_colour(frame[32, 32]) for frame in frames] == list(SECOND_COLOURS)


def test_video_rate_and_frame_limit(media):
    twice = load_video_frames(media["mp4"], fps=2.0, max_frames=12)  # t = 0, .5, 1, 1.5, 2
    assert [nearest_colour(f[32, 32]) for f in twice] == [SECOND_COLOURS[i] for i in (0, 0, 1, 1, 2)]
    assert len(load_video_frames(media["mp4"], fps=1.0, max_frames=2)) == 2


def test_video_from_bytes_and_decoders(media):
    reference = load_video_frames(media["mp4"], fps=1.0, max_frames=12)
    assert np.array_equal(load_video_frames(media["mp4"].read_bytes(), 1.0, 12), reference)
    for order in ("NCHW", "NHWC"):
        decoder = VideoDecoder(str(media["mp4"]), dimension_order=order)
        assert np.array_equal(load_video_frames(decoder, 1.0, 12), reference)


def test_decoded_frames_taken_as_sampled():
    thwc = np.random.default_rng(0).integers(0, 255, (5, 8, 10, 3), dtype=np.uint8)
    assert np.array_equal(load_video_frames(thwc, 1.0, 12), thwc)
    tchw = torch.from_numpy(thwc).permute(0, 3, 1, 2)
    assert np.array_equal(load_video_frames(tchw, 1.0, 3), thwc[:3])
    as_images = [PIL.Image.fromarray(frame) for frame in thwc]
    assert np.array_equal(load_video_frames(as_images, 1.0, 12), thwc)
    with pytest.raises(MediaDecodingError, match="shape"):
        load_video_frames(np.zeros((8, 10, 3)), 1.0, 12)


@pytest.mark.parametrize("name", ["mp4_corrupt", "jpeg", "wav"])
def test_broken_or_wrong_video_raises(media, name):
    with pytest.raises(MediaDecodingError, match="video"):
        load_video_frames(media[name], 1.0, 12)


# ------------------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize("name", ["wav", "mp3", "mp4"])
def test_audio_files_are_mono_16k_tone(media, name):
    waveform = load_audio(media[name], sampling_rate=16000, max_seconds=12.0)
    assert waveform.ndim == 1 and waveform.dtype == np.float32
    seconds = 2.5 if name == "mp4" else 2.0
    assert abs(len(waveform) / 16000 - seconds) < 0.05
    assert abs(dominant_frequency(waveform, 16000) - TONE_HZ) < 10


def test_audio_cut_to_max_seconds(media):
    assert len(load_audio(media["wav"], 16000, max_seconds=0.5)) == 8000


def test_audio_array_forms_are_resampled():
    wave = tone(1.0, 8000)
    for source in ((wave, 8000), {"array": wave, "sampling_rate": 8000}):
        out = load_audio(source, 16000, 12.0)
        assert len(out) == 16000 and abs(dominant_frequency(out, 16000) - TONE_HZ) < 5
    stereo_channels_first = np.stack([wave, wave])
    assert len(load_audio((stereo_channels_first, 8000), 16000, 12.0)) == 16000
    # bare arrays are taken to be at the requested rate already
    assert np.array_equal(load_audio(torch.from_numpy(wave), 8000, None), wave)
    assert np.allclose(resample(wave, 8000, 8000), wave)


def test_audio_decoder_objects(media):
    reference = load_audio(media["mp3"], 16000, 12.0)
    native = AudioDecoder(str(media["mp3"]))  # 22.05 kHz: resampled by us
    from_decoder = load_audio(native, 16000, 12.0)
    assert abs(len(from_decoder) - len(reference)) < 200
    assert abs(dominant_frequency(from_decoder, 16000) - TONE_HZ) < 10


def test_datasets_features_yield_decoders_we_accept(media):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict({"audio": [str(media["mp3"])], "video": [str(media["mp4"])]})
    row = table.cast_column("audio", datasets.Audio()).cast_column("video", datasets.Video())[0]
    assert isinstance(row["audio"], AudioDecoder) and isinstance(row["video"], VideoDecoder)
    assert "tone.mp3" in describe_source(row["audio"]) and "colours.mp4" in describe_source(row["video"])
    assert load_video_frames(row["video"], 1.0, 12).shape == (3, 64, 64, 3)
    assert abs(dominant_frequency(load_audio(row["audio"], 16000, 12.0), 16000) - TONE_HZ) < 10


@pytest.mark.parametrize("name", ["wav_corrupt", "mp3_corrupt", "mp4_corrupt", "mp4_silent", "jpeg"])
def test_broken_or_silent_audio_raises(media, name):
    with pytest.raises(MediaDecodingError, match="cannot decode audio"):
        load_audio(media[name], 16000, 12.0)


def test_audio_bad_types():
    with pytest.raises(MediaDecodingError, match="unsupported audio type"):
        load_audio(1.5, 16000, 12.0)
    with pytest.raises(MediaDecodingError, match="sampling_rate"):
        load_audio({"array": np.zeros(10)}, 16000, 12.0)
    with pytest.raises(MediaDecodingError, match="no samples"):
        load_audio(np.zeros(0), 16000, 12.0)


def test_describe_source_names_the_file(media):
    assert str(media["jpeg"]) in describe_source(media["jpeg"])
    assert describe_source({"path": "a/b.mp3", "bytes": None}) == "file 'a/b.mp3'"
    assert describe_source(b"123") == "3 bytes"
