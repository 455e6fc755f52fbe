"""Tiny real media files for the processor tests: JPEG, PNG, an MP4 with an AAC sound track, WAV, MP3, and
broken copies of each. Videos show one solid colour per second, so frame sampling shows in the pixels."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import scipy.io.wavfile

SECOND_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # second 0 red, 1 green, 2 blue
VIDEO_SECONDS = 2.5
VIDEO_FPS = 10
TONE_HZ = 1000.0


def tone(seconds: float, rate: int, frequency: float = TONE_HZ) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def write_mp4(path: Path, size: int = 64, with_audio: bool = True) -> None:
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=VIDEO_FPS)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = None
        if with_audio:
            audio = container.add_stream("aac", rate=44100)
            audio.layout = "stereo"
        for index in range(int(VIDEO_SECONDS * VIDEO_FPS)):
            colour = SECOND_COLOURS[index // VIDEO_FPS]
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), colour, np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if audio is not None:
            samples = tone(VIDEO_SECONDS, 44100)
            stereo = np.stack([samples, samples])
            for start in range(0, stereo.shape[1], 1024):
                chunk = np.ascontiguousarray(stereo[:, start : start + 1024])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = 44100
                frame.pts = start
                frame.time_base = Fraction(1, 44100)
                container.mux(audio.encode(frame))
            container.mux(audio.encode())


def write_mp3(path: Path, seconds: float = 2.0, rate: int = 22050) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        samples = tone(seconds, rate)
        for start in range(0, len(samples), 1152):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + 1152].copy(), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def truncated_copy(source: Path, target: Path, keep: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep])
    return target


def make_media(folder: Path) -> dict[str, Path]:
    """Write every test file into `folder`; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "jpeg": folder / "red.jpg",
        "png": folder / "grey.png",
        "mp4": folder / "colours.mp4",
        "mp4_silent": folder / "silent.mp4",
        "wav": folder / "tone.wav",
        "mp3": folder / "tone.mp3",
    }
    PIL.Image.new("RGB", (80, 48), (200, 30, 30)).save(files["jpeg"], quality=95)
    PIL.Image.new("L", (40, 40), 128).save(files["png"])
    write_mp4(files["mp4"])
    write_mp4(files["mp4_silent"], with_audio=False)
    stereo = (np.stack([tone(2.0, 22050)] * 2, axis=1) * 32767).astype(np.int16)
    scipy.io.wavfile.write(files["wav"], 22050, stereo)
    write_mp3(files["mp3"])
    for name in ("jpeg", "png", "mp4"):
        size = files[name].stat().st_size
        files[f"{name}_corrupt"] = truncated_copy(
            files[name], folder / f"corrupt_{files[name].name}", size // 3
        )
    # a WAV cut anywhere after its header is still a valid, shorter WAV: cut inside the header
    files["wav_corrupt"] = truncated_copy(files["wav"], folder / "corrupt_tone.wav", 30)
    # MP3 is a stream of independent frames, so a truncated MP3 still decodes: keep less than one frame
    files["mp3_corrupt"] = truncated_copy(files["mp3"], folder / "corrupt_tone.mp3", 60)
    files["not_an_image"] = folder / "notes.jpg"
    files["not_an_image"].write_text("this is not an image")
    return files
