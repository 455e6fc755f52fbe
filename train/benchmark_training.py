"""Pretraining and embedding-extraction throughput of SCALE on one device, with model FLOPs utilisation.

Times `ScaleForPreTraining` optimizer steps (forward, backward, AdamW) on synthetic paper-sized batches
(`train/model_stats.py`: 36 caption and 64 table tokens, 36 regions, 12 frames, 750 audio frames, every
pretext task and SIMCL on) and `ScaleModel` forward passes for embedding extraction, with bf16 autocast and
PyTorch's scaled-dot-product attention (sdpa) on a GPU. FLOPs per sample are counted by
`torch.utils.flop_counter.FlopCounterMode` on the same step (matmuls and attention, as in model_stats.py),
so MFU = counted FLOPs x samples/s / the device's dense bf16 peak (`PEAK_BF16_TFLOPS`, or `--peak_tflops`).
JCT tokens/s counts the fusion sequence (339 tokens per paper-sized sample) per second.

    python train/benchmark_training.py                          # paper preset, any CUDA device
    python train/benchmark_training.py --preset tiny --device cpu --steps 3

On a CPU the default precision is float32 and no MFU is printed unless `--peak_tflops` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_scale import ScaleConfig, ScaleForPreTraining
from modeling_scale.modeling_scale import MODEL_INPUT_NAMES
from train.model_stats import PAPER_INPUT_SIZES, count_parameters, fusion_tokens, paper_sized_batch

PEAK_BF16_TFLOPS = {
    "B200": 2250.0,
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card peaks at 756
    "H800": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "4090": 165.0,
}
"""Dense (no sparsity) bf16 tensor-core peak of common GPUs, TFLOP/s, by a substring of the device name."""
PRESETS = {
    "paper": ({"sparse_prediction": True}, PAPER_INPUT_SIZES),
    "tiny": (
        {
            "sparse_prediction": True,
            "hidden_size": 48,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "num_encoder_layers": 1,
            "num_fusion_layers": 1,
            "max_text_length": 24,
            "max_table_length": 32,
            "image_feature_dim": 64,
            "video_feature_dim": 32,
            "audio_feature_dim": 16,
            "max_audio_frames": 64,
            "audio_subsampling": 8,
            "projection_dim": 16,
        },
        {"text": 24, "table": 32, "regions": 8, "frames": 4, "audio_frames": 64},
    ),
}
"""Model config overrides and input sizes: the paper's preset (ScaleConfig defaults with the presets' sparse
vocabulary heads; encoders packed by default), a tiny one for CI."""


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_loop(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return time.perf_counter() - start


def run_benchmark(
    preset: str = "paper",
    batch_size: int = 64,
    embedding_batch_size: int = 256,
    steps: int = 20,
    warmup: int = 5,
    device: str | torch.device | None = None,
    bf16: bool | None = None,
    attention: str = "sdpa",
    peak: float | None = None,
) -> dict[str, float | int | str | None]:
    """
    Pretraining samples/s, JCT tokens/s, FLOPs per sample and MFU, and embedding products/s.

    Args:
        preset: `"paper"` or `"tiny"` (see `PRESETS`).
        bf16: bf16 autocast (default: on CUDA only).
        attention: transformers attention implementation (`"sdpa"` or `"eager"`).
        peak: the device's bf16 peak in TFLOP/s (default: `PEAK_BF16_TFLOPS` by device name; None on CPU).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = device.type == "cuda" if bf16 is None else bf16
    overrides, sizes = PRESETS[preset]
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    config = ScaleConfig(**overrides)
    config._attn_implementation = attention
    model = ScaleForPreTraining(config).to(device).train()
    batch = {
        key: value.to(device) for key, value in paper_sized_batch(config, batch_size, sizes=sizes).items()
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast():
            loss = model(**batch).loss
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    train_flops = counter.get_total_flops() / batch_size
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"the pretraining loss is not finite: {loss.item()}")

    def train_step() -> None:
        with autocast():
            step_loss = model(**batch).loss
        step_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_seconds = _timed_loop(train_step, steps, warmup, device)
    samples_per_second = batch_size * steps / train_seconds

    base = model.scale.eval()
    inputs = paper_sized_batch(config, embedding_batch_size, sizes=sizes)
    inputs = {key: value.to(device) for key, value in inputs.items() if key in MODEL_INPUT_NAMES}

    @torch.no_grad()
    def embed_step() -> None:
        with autocast():
            base(**inputs).product_embeds.float()

    embed_counter = FlopCounterMode(display=False)
    with embed_counter:
        embed_step()
    embed_seconds = _timed_loop(embed_step, max(1, steps // 2), max(1, warmup // 2), device)
    products_per_second = embedding_batch_size * max(1, steps // 2) / embed_seconds

    tokens = fusion_tokens(config, sizes)
    peak = peak if peak is not None else peak_tflops(device)
    achieved = train_flops * samples_per_second
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "preset": preset,
        "precision": "bf16 autocast" if bf16 else "float32",
        "attention": model.config._attn_implementation,
        "parameters": count_parameters(model),
        "batch_size": batch_size,
        "fusion_tokens_per_sample": tokens,
        "train_gflops_per_sample": train_flops / 1e9,
        "train_samples_per_second": samples_per_second,
        "train_tokens_per_second": samples_per_second * tokens,
        "train_tflops_achieved": achieved / 1e12,
        "peak_tflops": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "embedding_batch_size": embedding_batch_size,
        "embedding_gflops_per_product": embed_counter.get_total_flops() / embedding_batch_size / 1e9,
        "embedding_products_per_second": products_per_second,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--embedding_batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--no_bf16", action="store_true", help="float32 on the GPU too")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak (bf16, dense)")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    result = run_benchmark(
        preset=args.preset,
        batch_size=args.batch_size,
        embedding_batch_size=args.embedding_batch_size,
        steps=args.steps,
        warmup=args.warmup,
        device=args.device,
        bf16=False if args.no_bf16 else None,
        attention=args.attention,
        peak=args.peak_tflops,
    )
    mfu = f"{100 * result['mfu']:.1f} % of {result['peak_tflops']:g} TFLOP/s" if result["mfu"] else "n/a"
    print(
        f"SCALE {result['preset']} preset on {result['device']} ({result['precision']}, "
        f"{result['attention']}, {result['parameters'] / 1e6:.1f} M parameters)\n"
        f"  pretraining: batch {result['batch_size']}, {result['train_samples_per_second']:.2f} samples/s, "
        f"{result['train_tokens_per_second']:,.0f} JCT tokens/s, "
        f"{result['train_gflops_per_sample']:.1f} GFLOP/sample, "
        f"{result['train_tflops_achieved']:.2f} TFLOP/s, MFU {mfu}\n"
        f"  embedding extraction: batch {result['embedding_batch_size']}, "
        f"{result['embedding_products_per_second']:.2f} products/s "
        f"({result['embedding_gflops_per_product']:.1f} GFLOP/product)"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
