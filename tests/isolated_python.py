"""Run Python as a user without this project would: `python -I` (no PYTHONPATH, no script directory on the
path), another working directory, and an import hook that refuses the project's packages (the editable
install would otherwise still answer through its site-packages finder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_PACKAGES = ("modeling_scale", "train", "dataset_script", "spaces_demo")

BLOCKER = f"""
import importlib.abc, sys
class _ProjectBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {PROJECT_PACKAGES!r}:
            raise ModuleNotFoundError(f"{{name}} is blocked: this process must not see the project")
        return None
sys.meta_path.insert(0, _ProjectBlocker())
"""


def isolated_python(
    script: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    background: bool = False,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run `script` (source text) with the project blocked; `env` adds to an offline environment whose
    remote-code module cache lies under `cwd`. With `background`, return the running `Popen` (output to
    cwd/process.log)."""
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_MODULES_CACHE": str(cwd / "hf_modules"),
        **(env or {}),
    }
    environment.pop("PYTHONPATH", None)
    command = [sys.executable, "-I", "-c", BLOCKER + script, *args]
    if background:
        log = open(cwd / "process.log", "w")  # noqa: SIM115 - closed when the process is stopped
        return subprocess.Popen(command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
