"""Decoding of images, videos and audio from every accepted source type, on real files, and clear errors."""

from fractions import Fraction

import numpy as np
import PIL.Image
import pytest
import torch
from scale_media import SECOND_COLOURS, TONE_HZ, make_media, tone, write_mp3
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


@pytest.mark.parametrize("from_file", [True, False])  # resampled by torchcodec / a native-rate decoder by us
def test_audio_window_starts_at_the_first_sample(tmp_path, from_file):
    # LAME's encoder delay starts an MP3 stream 25 ms in; the window still holds max_seconds of sound
    path = tmp_path / "long.mp3"
    write_mp3(path, seconds=3.0, rate=44100)
    assert AudioDecoder(str(path)).metadata.begin_stream_seconds > 0.02
    source = str(path) if from_file else AudioDecoder(str(path))
    window = load_audio(source, 16000, max_seconds=2.0)
    assert len(window) == 32000
    everything = load_audio(source, 16000, None)
    # the same samples (scipy's resampling of the window alone differs in its last filter length)
    np.testing.assert_allclose(window[:31000], everything[:31000], atol=1e-6)


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


# ------------------------------------------------------------------------- decoding at the model's size
def photo_like(height: int, width: int) -> np.ndarray:
    """Smooth shading, a few objects and sensor noise: the content whose reduced decoding is checked."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    picture = np.stack([200 + 40 * x, 205 + 30 * y, 215 - 20 * x * y], axis=-1)
    for _ in range(5):
        centre, radius = rng.uniform(0.2, 0.8, 2), rng.uniform(0.05, 0.2)
        picture[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius**2] = rng.integers(20, 235, 3)
    return np.clip(picture + rng.normal(0, 3, picture.shape), 0, 255).astype(np.uint8)


def resized(image: PIL.Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(image.resize(size[::-1], PIL.Image.BICUBIC)).astype(int)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_reduced_decoding_matches_full_decoding(tmp_path, image_format):
    path = tmp_path / f"photo.{image_format.lower()}"
    PIL.Image.fromarray(photo_like(900, 1000)).save(path, image_format, quality=90)
    target = (224, 200)  # (height, width), not square: each side is reduced on its own
    full, reduced = load_image(path), load_image(path, min_size=target)
    assert reduced.mode == "RGB"
    assert target[0] <= reduced.height < 2 * target[0] and target[1] <= reduced.width < 2 * target[1]
    difference = np.abs(resized(reduced, target) - resized(full, target))
    assert (
        difference.mean() < 1.0 and np.percentile(difference, 99) <= 5
    )  # levels of 255; sharp edges differ more


def test_reduced_decoding_keeps_small_and_palette_images(tmp_path):
    small = tmp_path / "small.jpg"
    PIL.Image.fromarray(photo_like(100, 120)).save(small, quality=95)
    assert np.array_equal(np.asarray(load_image(small, min_size=(224, 224))), np.asarray(load_image(small)))
    palette = tmp_path / "palette.png"
    PIL.Image.fromarray(photo_like(600, 600)).convert("P").save(palette)  # indices must not be averaged
    full, reduced = load_image(palette), load_image(palette, min_size=(224, 224))
    assert reduced.size == full.size and np.array_equal(np.asarray(reduced), np.asarray(full))


def test_fused_image_preprocessing_equals_pil_backend():
    from transformers.image_processing_backends import PilBackend

    from modeling_scale import ScaleImageProcessor

    processor = ScaleImageProcessor(size={"height": 64, "width": 48})
    # the last one already has the size, as video frames decoded at the model's size do
    images = [PIL.Image.fromarray(photo_like(90, 70)), photo_like(50, 120), photo_like(64, 48)]
    for return_tensors in ("np", "pt"):
        fused = processor(images, return_tensors=return_tensors)["pixel_values"]
        reference = PilBackend._preprocess(
            processor,
            [np.moveaxis(np.asarray(image), -1, 0) for image in images],
            **{
                **processor.to_dict(),
                "size": processor.size,
                "resample": processor.resample,
                "do_pad": False,
                "pad_size": None,
                "crop_size": None,
                "return_tensors": return_tensors,
            },
        )["pixel_values"]
        assert tuple(fused.shape) == (3, 3, 64, 48)
        np.testing.assert_allclose(np.asarray(fused), np.asarray(reference), atol=1e-5, rtol=0)


def test_video_frames_decoded_at_the_model_size(tmp_path):
    import av

    picture = photo_like(96, 400)
    path = tmp_path / "pan.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for index in range(35):  # 3.5 s panning over the picture
            frame = np.ascontiguousarray(picture[:, index * 6 : index * 6 + 128])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    full = load_video_frames(path, fps=1.0, max_frames=12)
    small = load_video_frames(path, fps=1.0, max_frames=12, size=(56, 64))
    assert small.shape == (4, 56, 64, 3) and full.shape == (4, 96, 128, 3)
    expected = np.stack([resized(PIL.Image.fromarray(frame), (56, 64)) for frame in full])
    difference = np.abs(small.astype(int) - expected)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8


def test_a_lazily_opened_image_is_read_before_its_file_closes(tmp_path):
    """The demo opens an upload in a `with` block and hands the PIL image on: it must survive the close."""
    path = tmp_path / "photo.jpg"
    PIL.Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    with PIL.Image.open(path) as image:
        loaded = load_image(image)
    assert np.asarray(loaded.convert("RGB"))[0, 0].tolist() == pytest.approx([200, 10, 10], abs=3)


# ------------------------------------------------------------------------- video: skipping unshown frames
def encode_changing_video(path, codec: str, rate, frames: int, options: dict, timestamps=None) -> None:
    """Every frame differs from its neighbours (a moving noise texture), so a wrong frame is a pixel
    difference; `timestamps` (milliseconds) gives a variable frame rate or a late start."""
    import av

    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (48, 256, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(np.roll(texture, 3 * index, axis=1)[:, :64]), format="rgb24"
            )
            if timestamps is not None:
                frame.pts, frame.time_base = int(timestamps[index]), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


VIDEO_ENCODINGS = {
    "h264 B-pyramid": ("libx264", 25, 190, {"bf": "3", "b-pyramid": "normal", "g": "20"}),
    "h264 29.97 fps": ("libx264", Fraction(30000, 1001), 160, {"bf": "3"}),
    "hevc": ("libx265", 24, 130, {"x265-params": "bframes=4:b-pyramid=1:keyint=30:log-level=none"}),
    "mpeg4 B-frames": ("mpeg4", 24, 130, {"bf": "2", "g": "24"}),
    "vp9": ("libvpx-vp9", 25, 80, {}),
    "variable frame rate": ("libx264", 25, 150, {"bf": "3"}),
    "late start": ("libx264", 25, 100, {"bf": "3"}),
}


def encoded_video(tmp_path, name: str):
    codec, rate, frames, options = VIDEO_ENCODINGS[name]
    timestamps = None
    if name == "variable frame rate":
        timestamps = np.cumsum(np.random.default_rng(1).integers(20, 90, frames))
    elif name == "late start":
        timestamps = 700 + 40 * np.arange(frames)
    path = tmp_path / "video.mp4"
    encode_changing_video(path, codec, rate, frames, options, timestamps)
    return path


@pytest.mark.parametrize("name", list(VIDEO_ENCODINGS))
def test_skipping_unshown_frames_gives_a_frame_accurate_decoders_frames(tmp_path, name):
    """Files are sampled by PyAV with non-reference frames skipped; torchcodec's exact mode decodes all."""
    path = encoded_video(tmp_path, name)
    for fps, max_frames in ((1.0, 12), (3.0, 30), (25.0, 40)):
        exact = load_video_frames(VideoDecoder(str(path), seek_mode="exact"), fps, max_frames)
        assert np.array_equal(load_video_frames(path, fps, max_frames), exact), (name, fps)


@pytest.mark.parametrize("name", ["h264 B-pyramid", "variable frame rate"])
def test_skipped_frames_are_never_the_ones_played(tmp_path, name):
    """In decode order, each packet judged from the packets before it: the frames judged unshown are a third
    of the file or more, and none of them is a frame played at a sampled time."""
    import av

    from modeling_scale.media_decoding_scale import _pts_seconds, _shown_at_a_target

    path = encoded_video(tmp_path, name)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [packet.pts for packet in container.demux(stream) if packet.pts is not None]
        time_base = stream.time_base
    targets = (np.arange(7) * 0.9 + 0.1).tolist()  # from after the first frame
    shown, demuxed = [], []
    for pts in packets:
        shown.append(_shown_at_a_target(pts, sorted(demuxed), targets, time_base))
        demuxed.append(pts)
    in_order = sorted(packets)
    played = {
        in_order[np.searchsorted([_pts_seconds(p, time_base) for p in in_order], t, "right") - 1]
        for t in targets
    }
    assert all(flag for pts, flag in zip(packets, shown, strict=True) if pts in played)
    assert sum(not flag for flag in shown) > len(packets) / 3


def test_video_without_pyav_goes_through_torchcodec(tmp_path, monkeypatch):
    import sys

    path = encoded_video(tmp_path, "h264 B-pyramid")
    exact = load_video_frames(VideoDecoder(str(path), seek_mode="exact"), 1.0, 12)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    assert np.array_equal(load_video_frames(path, 1.0, 12), exact)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_video_is_turned_upright_as_torchcodec_plays_it(tmp_path, rotate):
    """Phone videos carry a display rotation: the frames (and the resize to the model's size) are upright."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command is needed to tag a video as rotated")
    path, rotated = encoded_video(tmp_path, "h264 B-pyramid"), tmp_path / "rotated.mp4"
    tag = ["-metadata:s:v:0", f"rotate={rotate}"]
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-c", "copy", *tag, str(rotated)], check=True
    )
    exact = load_video_frames(VideoDecoder(str(rotated), seek_mode="exact"), 3.0, 30)
    assert exact.shape[1:3] == ((48, 64) if rotate == 180 else (64, 48))
    assert np.array_equal(load_video_frames(rotated, 3.0, 30), exact)
    small = load_video_frames(rotated, 1.0, 12, size=(40, 30))
    expected = np.stack([resized(PIL.Image.fromarray(frame), (40, 30)) for frame in exact[::3]])
    difference = np.abs(small.astype(int) - expected).mean()  # a noise texture: ~9 upright, ~38 upside down
    assert small.shape == expected.shape and difference < 12
