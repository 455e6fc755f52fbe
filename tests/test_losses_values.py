"""Every pretraining loss against an independent computation on a tiny input, with an asymmetric S, so that a
loss averaged over the wrong tokens, regressing the wrong target or weighted by the wrong S entry fails.

The masked-task losses are checked from their heads' outputs (captured by forward hooks), so they pin the
loss functions, not the encoders or the pooling in front of them."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_modeling_scale import MODALITY_MASK, make_inputs, make_pretraining_targets, tiny_config

from modeling_scale import MODALITIES, ScaleForPreTraining
from modeling_scale.modeling_scale import audio_group_vectors, image_patch_vectors, video_frame_vectors
from modeling_scale.simcl import simcl_contrastive_loss

TAU = 0.5
# A learned S parameter far from its all-ones start: every diagonal entry and every S[i, j] vs S[j, i] differ.
ASYMMETRIC_PARAMETER = torch.arange(25, dtype=torch.float32).reshape(5, 5) / 10 + torch.eye(5) * 0.3


def expected_learned_alignment(parameter: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The paper's learned S written out per sample: k * P * softmax(P) over the present modalities."""
    scores = torch.zeros(len(present), 5, 5)
    for sample, row in enumerate(present.bool()):
        index = row.nonzero().flatten()
        sub = parameter[index][:, index]
        scores[sample, index[:, None], index[None, :]] = len(index) * sub * sub.softmax(-1)
    return scores


def reference_weighted_eq2(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, valid: list, tau: float):
    """Eq. 2 with anchor k's logits scaled by scale[k] (Eq. 3), written out with loops; None if < 2 usable."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    members = [k for k, ok in enumerate(valid) if ok]
    if len(members) < 2:
        return None
    losses = []
    for k in members:
        s = float(scale[k])
        positive = s * float(a[k] @ b[k]) / tau
        negatives = [s * float(a[k] @ b[n]) / tau for n in members if n != k]
        negatives += [s * float(b[k] @ a[n]) / tau for n in members if n != k]
        losses.append(math.log(sum(math.exp(x) for x in negatives)) - positive)
    return sum(losses) / len(losses)


def test_pair_i_j_is_scaled_by_s_i_j_not_s_j_i():
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(5, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 1, 0, 1], [1, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    alignment = torch.rand(5, 5, 5, generator=g) * 2 + 0.1
    assert not torch.allclose(alignment, alignment.transpose(1, 2))
    expected = []
    for i in range(5):
        for j in range(i + 1, 5):
            both = (mask[:, i].bool() & mask[:, j].bool()).tolist()
            term = reference_weighted_eq2(embeds[:, i], embeds[:, j], alignment[:, i, j], both, TAU)
            if term is not None:
                expected.append(term)
    loss = simcl_contrastive_loss(embeds, mask, TAU, "negatives", alignment)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)


@pytest.fixture(scope="module")
def config():
    return tiny_config(alignment="learned", simcl_weight_reading="logits")


def asymmetric_model(config) -> ScaleForPreTraining:
    torch.manual_seed(0)
    model = ScaleForPreTraining(config).eval()
    with torch.no_grad():
        model.scale.alignment_parameter.copy_(ASYMMETRIC_PARAMETER)
    return model


def run_with_heads(model: ScaleForPreTraining, batch: dict) -> tuple:
    """The model's output and every pretraining head's raw output (before the S weighting)."""
    captured = {}
    handles = [
        module.register_forward_hook(lambda m, args, out, name=name: captured.__setitem__(name, out))
        for name, module in model.named_children()
        if name.endswith("_head")
    ]
    try:
        with torch.no_grad():
            out = model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return out, captured


def s_diagonal(name: str) -> torch.Tensor:
    index = MODALITIES.index(name)
    return expected_learned_alignment(ASYMMETRIC_PARAMETER, MODALITY_MASK)[:, index, index]


def expected_token_loss(logits, weight, labels, keep) -> torch.Tensor:
    """Cross-entropy of S[i, i] * logits over the labelled (!= -100) tokens the sample really has."""
    counted = (labels != -100) & keep.bool()
    return F.cross_entropy((logits * weight[:, None, None])[counted], labels[counted])


def expected_regression_loss(predictions, weight, targets, counted) -> torch.Tensor:
    """Mean over the counted tokens of the per-token mean squared error of S[i, i] * prediction."""
    squared = (predictions * weight[:, None, None] - targets) ** 2
    return squared.mean(-1)[counted.bool()].mean()


def test_alignment_and_contrastive_loss_use_the_learned_s(config):
    model = asymmetric_model(config)
    inputs = make_inputs(config)
    out, _ = run_with_heads(model, {**inputs, **make_pretraining_targets(config, inputs)})
    expected = expected_learned_alignment(ASYMMETRIC_PARAMETER, MODALITY_MASK)
    torch.testing.assert_close(out.alignment_scores, expected)
    modality_embeds = torch.stack([out[f"{name}_embeds"] for name in MODALITIES], dim=1)
    contrastive = simcl_contrastive_loss(
        modality_embeds, MODALITY_MASK, config.temperature, config.contrastive_denominator, expected
    )
    torch.testing.assert_close(out.contrastive_loss, contrastive)


def test_mlm_and_mem_average_the_labelled_present_tokens_weighted_by_their_s_diagonal(config):
    model = asymmetric_model(config)
    inputs = make_inputs(config)
    targets = make_pretraining_targets(config, inputs)
    # labels on padding and on a missing modality's rows too: they must not count
    assert ((targets["labels"] != -100) & (inputs["attention_mask"] == 0)).any()
    out, heads = run_with_heads(model, {**inputs, **targets})
    present = MODALITY_MASK.bool()
    mlm = expected_token_loss(
        heads["mlm_head"], s_diagonal("text"), targets["labels"], inputs["attention_mask"] & present[:, :1]
    )
    mem = expected_token_loss(
        heads["mem_head"],
        s_diagonal("table"),
        targets["table_labels"],
        inputs["table_attention_mask"] & present[:, 1:2],
    )
    torch.testing.assert_close(out.mlm_loss, mlm)
    torch.testing.assert_close(out.mem_loss, mem)
    torch.testing.assert_close(out.mlm_logits, heads["mlm_head"] * s_diagonal("text")[:, None, None])


@pytest.mark.parametrize("path", ["features", "pixels"])
def test_mrp_mfp_mam_regress_the_saved_targets_weighted_by_their_s_diagonal(config, path):
    """The targets differ from the (masked) inputs everywhere, as after the collator zeroed the masked
    tokens: regressing the model's own input instead of `*_targets` fails."""
    model = asymmetric_model(config)
    inputs = make_inputs(config, image=path, video=path)
    targets = make_pretraining_targets(config, inputs)
    out, heads = run_with_heads(model, {**inputs, **targets})
    present = MODALITY_MASK.bool()

    if path == "pixels":
        image_head, image_raw = "image_pixel_head", image_patch_vectors(targets["image_targets"], 16)
        image_keep = present[:, 2:3].expand(-1, image_raw.shape[1])
        video_head, video_raw = "video_pixel_head", video_frame_vectors(targets["video_targets"], 16)
    else:
        image_head, image_raw = "image_feature_head", targets["image_targets"]
        image_keep = inputs["image_mask"].bool() & present[:, 2:3]
        video_head, video_raw = "video_feature_head", targets["video_targets"]
    video_keep = inputs["video_mask"].bool() & present[:, 3:4]
    image_counted = targets["masked_image_positions"] & image_keep
    video_counted = targets["masked_video_positions"] & video_keep
    assert image_counted.any() and video_counted.any()
    mrp = expected_regression_loss(heads[image_head], s_diagonal("image"), image_raw, image_counted)
    mfp = expected_regression_loss(heads[video_head], s_diagonal("video"), video_raw, video_counted)
    torch.testing.assert_close(out.mrp_loss, mrp)
    torch.testing.assert_close(out.mfp_loss, mfp)

    # MAM: groups of 4 frames; padding frames of a partly valid group are left out of its mean
    audio_raw = audio_group_vectors(targets["audio_targets"], config.audio_subsampling)
    frame_valid = audio_group_vectors(
        inputs["audio_mask"][..., None].expand(targets["audio_targets"].shape).float(), 4
    ).bool()
    audio_counted = targets["masked_audio_positions"] & frame_valid.any(-1) & present[:, 4:5]
    audio_predictions = heads["audio_head"] * s_diagonal("audio")[:, None, None]
    squared = torch.where(frame_valid, (audio_predictions - audio_raw) ** 2, 0)
    mam = (squared.sum(-1) / frame_valid.sum(-1).clamp(min=1))[audio_counted].mean()
    torch.testing.assert_close(out.mam_loss, mam)
