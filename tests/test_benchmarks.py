"""The benchmarks run end to end on a tiny configuration (CPU); their speed targets live in their output."""

import math

import pytest
import torch

from train.benchmark_training import run_benchmark


@pytest.mark.slow
def test_training_benchmark_runs_tiny_preset_on_cpu():
    result = run_benchmark(
        preset="tiny", batch_size=2, embedding_batch_size=4, steps=2, warmup=1, device="cpu", peak=1.0
    )
    assert result["attention"] == "sdpa" and result["precision"] == "float32"
    assert result["train_gflops_per_sample"] > 0 and result["embedding_gflops_per_product"] > 0
    # a training step costs more than a forward pass of the base model (backward, heads)
    assert result["train_gflops_per_sample"] > 2 * result["embedding_gflops_per_product"]
    assert result["train_samples_per_second"] > 0 and result["embedding_products_per_second"] > 0
    assert result["fusion_tokens_per_sample"] == 24 + 32 + 1 + 8 + 1 + 4 + 1 + 8  # CLS for image/video/audio
    assert result["train_tokens_per_second"] == pytest.approx(
        result["train_samples_per_second"] * result["fusion_tokens_per_sample"]
    )
    assert result["mfu"] == pytest.approx(result["train_tflops_achieved"] / 1.0)
    assert math.isfinite(result["train_tflops_achieved"])


def test_packing_benchmark_counts_fewer_flops_packed_on_both_coverages():
    from train.benchmark_packing import COVERAGES, run

    results = run("tiny", batch_size=4, num_batches=1, repeats=1)
    assert set(results) == set(COVERAGES)
    for row in results.values():
        # absent video / audio and cut captions / tables are skipped by the packed model only
        assert row["packed embed GFLOP/product"] < 0.9 * row["padded embed GFLOP/product"]
        assert row["packed train GFLOP/product"] < row["padded train GFLOP/product"]
        assert row["packed / padded train GFLOP"] == pytest.approx(
            row["packed train GFLOP/product"] / row["padded train GFLOP/product"]
        )
        assert row["padded train s/product"] > 0 and row["packed train s/product"] > 0


@pytest.mark.slow
def test_processor_benchmark_times_old_new_and_the_decoding_step(tmp_path, monkeypatch):
    import json
    import sys

    from train import benchmark_processor

    output = tmp_path / "figures.json"
    argv = ["benchmark_processor", "--seconds", "0.05", "--media_seconds", "2", "--batch_size", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--max_video_frames", "2", "--output", str(output)])
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    threads = torch.get_num_threads()
    try:
        benchmark_processor.main()  # one thread, as a per-core figure needs
    finally:  # later tests compare outputs with fresh processes that use the default
        torch.set_num_threads(threads)
    rates = json.loads(output.read_text())["products_per_cpu_second"]
    assert list(rates) == list(benchmark_processor.SCENARIOS)
    assert set(rates["text+table"]) == {"old", "new"}  # nothing to decode
    assert set(rates["+image"]) == {"old", "new", "decode", "naive"}
    assert set(rates["+video"]) == set(rates["+audio"]) == {"old", "new", "decode"}
    assert all(rate["cpu"] > 0 for scenario in rates.values() for rate in scenario.values())
