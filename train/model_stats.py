"""Parameter count and FLOPs per sample of SCALE (paper-sized by default).

Inputs have the paper's sizes: 36 caption tokens, 64 table tokens, 36 detector regions (2048-d + 5-d box),
12 per-second video features (1024-d), 750 log-mel frames (80 bins); every pretext task and SIMCL are on, so
the backward pass covers every head. FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matmuls,
convolutions and attention; element-wise ops are not counted), on CPU in float32.

    python train/model_stats.py                 # paper config
    python train/model_stats.py --batch-size 4 --json
"""

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_scale import MODALITIES, ScaleConfig, ScaleForPreTraining
from modeling_scale.collator_scale import draw_modality_subset
from modeling_scale.modeling_scale import MODEL_INPUT_NAMES

PAPER_INPUT_SIZES = {"text": 36, "table": 64, "regions": 36, "frames": 12, "audio_frames": 750}


def paper_sized_batch(
    config: ScaleConfig, batch_size: int, seed: int = 0, sizes: dict[str, int] = PAPER_INPUT_SIZES
) -> dict[str, torch.Tensor]:
    """A synthetic batch with every modality at the paper's sizes (or `sizes`, same keys), ~15 % of each
    modality's tokens masked, and the subset view of the subset-consistency loss drawn."""
    g = torch.Generator().manual_seed(seed)
    audio_tokens = -(-sizes["audio_frames"] // config.audio_subsampling)

    def masked(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g) < config.mask_probability

    batch = {
        "input_ids": torch.randint(1, config.vocab_size, (batch_size, sizes["text"]), generator=g),
        "attention_mask": torch.ones(batch_size, sizes["text"], dtype=torch.long),
        "table_input_ids": torch.randint(1, config.vocab_size, (batch_size, sizes["table"]), generator=g),
        "table_attention_mask": torch.ones(batch_size, sizes["table"], dtype=torch.long),
        "table_entity_ids": torch.arange(sizes["table"]).remainder(9).expand(batch_size, -1),
        "image_features": torch.randn(batch_size, sizes["regions"], config.image_feature_dim, generator=g),
        "image_boxes": torch.rand(batch_size, sizes["regions"], config.image_box_dim, generator=g),
        "image_mask": torch.ones(batch_size, sizes["regions"], dtype=torch.long),
        "video_features": torch.randn(batch_size, sizes["frames"], config.video_feature_dim, generator=g),
        "video_mask": torch.ones(batch_size, sizes["frames"], dtype=torch.long),
        "audio_features": torch.randn(
            batch_size, sizes["audio_frames"], config.audio_feature_dim, generator=g
        ),
        "audio_mask": torch.ones(batch_size, sizes["audio_frames"], dtype=torch.long),
    }
    batch["labels"] = torch.where(masked(batch_size, sizes["text"]), batch["input_ids"], -100)
    batch["table_labels"] = torch.where(masked(batch_size, sizes["table"]), batch["table_input_ids"], -100)
    batch["masked_image_positions"] = masked(batch_size, sizes["regions"])
    batch["image_targets"] = batch["image_features"].clone()
    batch["masked_video_positions"] = masked(batch_size, sizes["frames"])
    batch["video_targets"] = batch["video_features"].clone()
    batch["masked_audio_positions"] = masked(batch_size, audio_tokens)
    batch["audio_targets"] = batch["audio_features"].clone()
    present = torch.ones(batch_size, config.num_subset_views, len(MODALITIES), dtype=torch.bool)
    batch["subset_modality_mask"] = draw_modality_subset(present, config.subset_keep_probability, g).long()
    return batch


def fusion_tokens(config: ScaleConfig, sizes: dict[str, int] = PAPER_INPUT_SIZES) -> int:
    """JCT sequence length of a paper-sized sample (the model adds a CLS to image, video and audio)."""
    audio_tokens = -(-sizes["audio_frames"] // config.audio_subsampling)
    return sizes["text"] + sizes["table"] + 1 + sizes["regions"] + 1 + sizes["frames"] + 1 + audio_tokens


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def measure(config: ScaleConfig | None = None, batch_size: int = 2) -> dict[str, float]:
    """Build `ScaleForPreTraining(config)` and count one forward+backward and one `ScaleModel` forward on a
    paper-sized batch, padded (`pack_tokens=False`) and packed: every modality is present at full length,
    so packing only skips the modalities each subset view leaves out."""
    config = config or ScaleConfig()
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).train()
    batch = paper_sized_batch(config, batch_size)
    model_inputs = {key: value for key, value in batch.items() if key in MODEL_INPUT_NAMES}
    stats, pack_tokens_given = {}, config.pack_tokens  # model.config is `config`: restored below
    for suffix, pack_tokens in (("", False), ("_packed", True)):
        model.config.pack_tokens = pack_tokens
        counter = FlopCounterMode(display=False)
        start = time.perf_counter()
        with counter:
            output = model(**batch)
            output.loss.backward()
        stats[f"seconds_forward_backward{suffix}"] = time.perf_counter() - start
        if not torch.isfinite(output.loss):
            raise RuntimeError(f"the forward pass gave a non-finite loss: {output.loss}")
        inference_counter = FlopCounterMode(display=False)
        with torch.no_grad(), inference_counter:
            model.scale(**model_inputs)
        stats[f"train_flops_per_sample{suffix}"] = counter.get_total_flops() / batch_size
        stats[f"inference_flops_per_sample{suffix}"] = inference_counter.get_total_flops() / batch_size
        model.zero_grad()
    model.config.pack_tokens = pack_tokens_given
    return {
        "parameters_pretraining": count_parameters(model),
        "parameters_base_model": count_parameters(model.scale),
        "parameters_per_encoder": count_parameters(model.scale.encoders["text"]),
        "parameters_fusion_encoder": count_parameters(model.scale.fusion_encoder),
        "fusion_tokens": fusion_tokens(config),
        **stats,
        "batch_size": batch_size,
        "loss": output.loss.item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    stats = measure(ScaleConfig(), args.batch_size)
    if args.json:
        print(json.dumps(stats))
        return
    rows = [
        ("parameters, ScaleForPreTraining", f"{stats['parameters_pretraining'] / 1e6:.1f} M"),
        ("parameters, ScaleModel", f"{stats['parameters_base_model'] / 1e6:.1f} M"),
        ("  one modality encoder", f"{stats['parameters_per_encoder'] / 1e6:.1f} M"),
        ("  JCT", f"{stats['parameters_fusion_encoder'] / 1e6:.1f} M"),
        ("JCT tokens per sample", str(stats["fusion_tokens"])),
        (
            "pretraining forward+backward / sample",
            f"{stats['train_flops_per_sample'] / 1e9:.1f} GFLOP padded, "
            f"{stats['train_flops_per_sample_packed'] / 1e9:.1f} packed",
        ),
        (
            "ScaleModel forward / sample",
            f"{stats['inference_flops_per_sample'] / 1e9:.1f} GFLOP padded, "
            f"{stats['inference_flops_per_sample_packed'] / 1e9:.1f} packed",
        ),
        (
            "wall time (batch, this machine)",
            f"{stats['seconds_forward_backward']:.1f} s padded, "
            f"{stats['seconds_forward_backward_packed']:.1f} s packed ({stats['batch_size']})",
        ),
    ]
    for name, value in rows:
        print(f"{name:<40}{value}")


if __name__ == "__main__":
    main()
