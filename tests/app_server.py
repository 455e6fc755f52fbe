"""Shared by the app tests: a tiny SCALE checkpoint and sample gallery, and the app serving them on loopback.

The checkpoint is random-init (the app's behaviour, not retrieval quality, is under test) but goes through
`save_pretrained` / `AutoModel.from_pretrained` / `AutoProcessor.from_pretrained` like a trained one, and
the gallery is the project's generated sample converted to Parquet, loaded with `load_dataset`.
The app is started as `python spaces_demo/app.py ...`, exactly as a user starts it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = REPO_ROOT / "spaces_demo" / "app.py"
SAMPLE_SIZE = 200
"""Products in the generated sample; its coarse-retrieval gallery then holds one to two dozen."""
SERVER_START_TIMEOUT = 180


@dataclass(frozen=True)
class DemoAssets:
    raw_dir: Path
    dataset_dir: Path
    checkpoint_dir: Path
    index_dir: Path


_assets: DemoAssets | None = None


def tiny_demo_assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssets:
    """Built once per test session (the first app test module to ask pays ~15 s)."""
    global _assets
    if _assets is None:
        _assets = build_tiny_demo_assets(tmp_path_factory.mktemp("app_assets"))
    return _assets


def build_tiny_demo_assets(root: Path) -> DemoAssets:
    from tiny_m5product import tiny_demo_model_parts

    from dataset_script.convert import convert
    from dataset_script.generate_sample import generate_sample
    from modeling_scale import ScaleModel

    assets = DemoAssets(root / "raw", root / "m5product", root / "checkpoint", root / "index")
    generate_sample(str(assets.raw_dir), size=SAMPLE_SIZE, seed=0, num_proc=1)
    convert(str(assets.raw_dir), str(assets.dataset_dir), num_proc=1)
    processor, config = tiny_demo_model_parts()
    ScaleModel(config).save_pretrained(assets.checkpoint_dir)
    processor.save_pretrained(assets.checkpoint_dir)
    return assets


def coarse_gallery(assets: DemoAssets):
    """The coarse-retrieval gallery the app searches, as `load_dataset` gives it."""
    from datasets import load_dataset

    return load_dataset(str(assets.dataset_dir), "retrieval_coarse", split="gallery")


def gallery_size(assets: DemoAssets) -> int:
    """Products in the coarse-retrieval gallery."""
    return len(coarse_gallery(assets))


def richest_gallery_product(assets: DemoAssets) -> str:
    """The item id of a coarse-gallery product with as many modalities as any (all five in the sample)."""
    rows = (
        coarse_gallery(assets)
        .data.select(["item_id", "caption", "table", "image", "video", "audio"])
        .to_pylist()
    )  # undecoded
    return max(rows, key=lambda row: sum(bool(value) for value in row.values()))["item_id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`python spaces_demo/app.py` on 127.0.0.1 in a subprocess; stopped by its own pid."""

    def __init__(self, assets: DemoAssets, log_file: Path, *extra_args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_file = log_file
        command = [
            sys.executable, str(APP),
            "--checkpoint", str(assets.checkpoint_dir),
            "--dataset", str(assets.dataset_dir),
            "--index-dir", str(assets.index_dir),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--device", "cpu",
            *extra_args,
        ]  # fmt: skip
        env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        self._log = open(log_file, "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_until_ready(self) -> AppServer:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the app did not answer within {SERVER_START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_file.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
