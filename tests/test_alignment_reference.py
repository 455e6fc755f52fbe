"""SIMCL's alignment reference: the relative S of a model in eval mode read against cross-product statistics
fitted after training, so a product's S is its own, whoever it is batched with."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_modeling_scale import MODALITY_MASK, make_inputs, tiny_config
from tiny_m5product import converted_tiny_sample, tiny_demo_model_parts

from modeling_scale import MODALITIES, ScaleModel
from modeling_scale.modeling_scale import ScaleAlignmentReference
from modeling_scale.simcl import _batch_relative_agreement, alignment_scores, cross_product_cosine_sums
from train.components import load_split
from train.embeddings import extract_embeddings
from train.modality_set_calibration import calibrate_modality_sets

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]], dtype=torch.bool)


def _modality_embeds(output) -> torch.Tensor:
    """(B, M, P) the per-modality features a model output exposes as `<modality>_embeds`."""
    return torch.stack([getattr(output, f"{name}_embeds") for name in MODALITIES], dim=1)


def test_cross_product_cosine_sums_count_every_pair_of_two_different_products():
    torch.manual_seed(0)
    features = torch.randn(4, 5, 8)
    counts, sums, squares = cross_product_cosine_sums(features, MASK)
    unit = F.normalize(features, dim=-1)
    for i in range(5):
        for j in range(5):
            values = [
                float(unit[b, i] @ unit[k, j])
                for b in range(4)
                for k in range(4)
                if b != k and MASK[b, i] and MASK[k, j]
            ]
            assert counts[i, j] == len(values)
            assert sums[i, j].item() == pytest.approx(sum(values), abs=1e-5)
            assert squares[i, j].item() == pytest.approx(sum(v * v for v in values), abs=1e-5)


def test_relative_scores_against_a_reference_are_each_products_own_standardised_cosines():
    torch.manual_seed(0)
    unit = F.normalize(torch.randn(4, 5, 8), dim=-1)
    mean = torch.rand(5, 5) * 0.2
    mean = 0.5 * (mean + mean.T)
    std = torch.rand(5, 5) + 0.5
    std = 0.5 * (std + std.T)
    scores = _batch_relative_agreement(unit, MASK, (mean, std))
    for b in range(4):
        for i in range(5):
            for j in range(5):
                both = bool(MASK[b, i] and MASK[b, j])
                expected = (float(unit[b, i] @ unit[b, j]) - mean[i, j]) / std[i, j] if both else 0.0
                assert scores[b, i, j].item() == pytest.approx(float(expected), abs=1e-5)
    batch = alignment_scores(unit, MASK, "relative", reference=(mean, std))
    alone = alignment_scores(unit[2:3], MASK[2:3], "relative", reference=(mean, std))
    torch.testing.assert_close(alone[0], batch[2])  # its own S, whoever it is batched with
    batch_read = alignment_scores(unit, MASK, "relative")
    lone_batch_read = alignment_scores(unit[2:3], MASK[2:3], "relative")
    assert not torch.allclose(lone_batch_read[0], batch_read[2])  # read against the batch, it is not


def test_reference_fit_reads_mean_and_spread_and_keeps_unseen_pairs_neutral():
    reference = ScaleAlignmentReference(tiny_config())
    assert not reference.fitted
    counts, sums, squares = torch.zeros(3, 5, 5).unbind(0)
    counts[0, 1] = counts[1, 0] = 4
    sums[0, 1] = sums[1, 0] = 2.0
    squares[0, 1] = squares[1, 0] = 1.5  # mean 0.5, variance 1.5 / 4 - 0.25 = 0.125
    reference.fit(counts, sums, squares)
    assert reference.fitted
    assert reference.mean[0, 1].item() == pytest.approx(0.5)
    assert reference.std[1, 0].item() == pytest.approx(0.125**0.5)
    assert reference.mean[2, 3].item() == 0.0 and reference.std[2, 3].item() == 1.0
    reference.reset()
    assert not reference.fitted and reference.mean.abs().sum() == 0
    with pytest.raises(ValueError, match="no cross-product cosines"):
        reference.fit(torch.zeros(5, 5), torch.zeros(5, 5), torch.zeros(5, 5))


def test_a_fitted_model_reads_each_products_s_against_the_reference_in_eval_mode_only():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)
    first = {name: value[:1] for name, value in inputs.items()}
    with torch.no_grad():
        batch_read = model(**inputs).alignment_scores
        assert not torch.allclose(model(**first).alignment_scores[0], batch_read[0])  # alone: no batch
        reference = model.alignment_reference
        reference.fit(*cross_product_cosine_sums(torch.randn(16, 5, 8), torch.ones(16, 5, dtype=torch.bool)))
        reference.mean.uniform_(-0.1, 0.1)  # a reference unlike the batch's own statistics
        fitted = model(**inputs)
        alone = model(**first)
        features = _modality_embeds(fitted)
        expected = alignment_scores(
            features, fitted.modality_mask, "relative", reference=(reference.mean, reference.std)
        )
        model.train()  # dropout is 0 in the tiny config
        trained = model(**inputs).alignment_scores
    torch.testing.assert_close(fitted.alignment_scores, expected)
    torch.testing.assert_close(alone.alignment_scores[0], fitted.alignment_scores[0])
    assert not torch.allclose(fitted.alignment_scores, batch_read)
    torch.testing.assert_close(trained, batch_read)  # training reads the batch, as the loss was measured
    assert (fitted.alignment_scores[~MODALITY_MASK.bool()] == 0).all()  # missing modalities weigh nothing


def test_the_relative_temperature_sharpens_the_models_s_in_training_and_against_the_reference():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config(relative_alignment_temperature=0.5))
    inputs = make_inputs(model.config)
    with torch.no_grad():
        trained = model(**inputs)  # dropout is 0 in the tiny config
        model.eval()
        reference = model.alignment_reference
        reference.fit(*cross_product_cosine_sums(torch.randn(16, 5, 8), torch.ones(16, 5, dtype=torch.bool)))
        fitted = model(**inputs)
    batch_read = alignment_scores(
        _modality_embeds(trained), trained.modality_mask, "relative", relative_temperature=0.5
    )
    torch.testing.assert_close(trained.alignment_scores, batch_read)
    features, mask, against = _modality_embeds(fitted), fitted.modality_mask, (reference.mean, reference.std)
    read = alignment_scores(features, mask, "relative", reference=against, relative_temperature=0.5)
    torch.testing.assert_close(fitted.alignment_scores, read)
    assert not torch.allclose(read, alignment_scores(features, mask, "relative", reference=against))


@pytest.mark.slow
def test_calibration_fits_the_reference_on_the_models_own_cross_product_cosines(tmp_path_factory, tmp_path):
    """One batch holds every product, so the reference is the mean and spread of the cosines between one
    product's modality and every other product's; it survives save / load."""
    processor, config = tiny_demo_model_parts()
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    dataset = load_split(str(converted_tiny_sample(tmp_path_factory)), "pretrain", "train")
    raw = extract_embeddings(model, processor, dataset, batch_size=64, normalize=False, show_progress=False)
    calibrate_modality_sets(model, processor, dataset, num_views=1, batch_size=64, max_products=len(dataset))
    unit = raw["modality_embeds"] / np.linalg.norm(raw["modality_embeds"], axis=-1, keepdims=True).clip(1e-12)
    present = raw["modality_mask"].astype(bool)
    reference = model.alignment_reference
    assert reference.fitted
    for i, j in ((0, 1), (0, 2), (1, 2), (2, 2)):
        rows, columns = np.flatnonzero(present[:, i]), np.flatnonzero(present[:, j])
        cosines = unit[rows, i] @ unit[columns, j].T
        others = rows[:, None] != columns[None, :]
        values = cosines[others]
        name = f"{MODALITIES[i]}-{MODALITIES[j]}"
        assert reference.mean[i, j].item() == pytest.approx(values.mean(), abs=1e-4), name
        assert reference.std[i, j].item() == pytest.approx(values.std(), rel=1e-3), name
    model.save_pretrained(tmp_path)
    reloaded = ScaleModel.from_pretrained(tmp_path)
    assert reloaded.alignment_reference.fitted
    torch.testing.assert_close(reloaded.alignment_reference.mean, reference.mean)
