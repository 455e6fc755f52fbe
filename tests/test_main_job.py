"""The README's main job end to end on the tiny sample, a few updates per run; then rerun: all skipped."""

import json

import pytest
from tiny_m5product import minilm_path

from train import main_job


@pytest.mark.slow
def test_main_job_runs_end_to_end_and_skips_finished_steps(tmp_path, capsys):
    options = [
        "--output_root",
        str(tmp_path),
        "--size",
        "tiny",
        "--model_config",
        "tiny",
        "--max_steps",
        "2",
        "--batch_size",
        "4",
        "--num_workers",
        "0",
        "--combinations",
        "text;text,image",
        "--pretrain_args",
        f"--text_encoder none --tokenizer {minilm_path()}",
    ]
    main_job.main(options)
    printed = capsys.readouterr().out
    assert "**Table 3**" in printed and "**Table 5**" in printed
    for path in (
        "m5product/README.md",
        "pretrain/model.safetensors",
        "pretrain/processor_config.json",
        "finetune/model.safetensors",
        "eval/results.json",
        "eval/tsne.png",
    ):
        assert (tmp_path / path).exists(), path
    index_files = sorted(path.name for path in (tmp_path / "index").rglob("*") if path.is_file())
    assert {"embeddings.npy", "index.faiss", "meta.json"} <= set(index_files)
    timings = json.loads((tmp_path / "main_job_timings.json").read_text())
    assert all(isinstance(timings[step], float) for step in ("pretrain", "finetune", "evaluate"))

    main_job.main(options + ["--no_index"])
    timings = json.loads((tmp_path / "main_job_timings.json").read_text())
    assert {timings[step] for step in ("generate sample", "convert", "pretrain", "finetune", "evaluate")} == {
        "skipped"
    }
    assert "**Table 3**" in capsys.readouterr().out


def test_only_the_generated_sample_has_its_vocabulary_trimmed(tmp_path):
    """Real data keeps the text encoder's whole vocabulary: a word only a query uses keeps its embedding."""
    root, data = tmp_path, tmp_path / "m5product"
    for argv, trimmed in (([], True), (["--raw_dir", str(tmp_path / "raw")], False)):
        args = main_job.parse_args([*argv, "--simcl_ablation"])
        commands = main_job.pretraining_commands(args, root, data)
        assert [suffix for suffix, _ in commands] == ["", "_no_simcl"]
        for _, command in commands:
            assert ("--trim_vocabulary" in command) is trimmed, (argv, command)
            assert command[command.index("--data_dir") + 1] == str(data)
