"""Modality weights in `product_embeds`: the fit (each modality weighs the share of its similarities the
others predict), the agreement it reads (a pure-noise modality gets weight 0, a weak one less than the strong
ones, the strong ones keep theirs), the weighted fusion, and the calibration that fits them on the model's own
features and saves them."""

import pytest
import torch
from test_modeling_scale import make_inputs, tiny_config
from tiny_m5product import converted_tiny_sample, tiny_demo_model_parts

from modeling_scale import MODALITIES, ScaleModel
from modeling_scale.modeling_scale import ScaleModalityWeights, _token_mean, modality_set_codes
from train.components import load_split
from train.embeddings import extract_embeddings
from train.modality_set_calibration import calibrate_modality_sets, modality_agreement

TEXT, TABLE, IMAGE, VIDEO, AUDIO = range(5)


def agreement_of(pairs: dict[tuple[int, int], float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(5, 5) agreement and measured mask with these pairs' agreements (the others not measured)."""
    agreement, measured = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, 5, dtype=torch.bool)
    for (first, second), value in pairs.items():
        agreement[first, second] = agreement[second, first] = value
        measured[first, second] = measured[second, first] = True
    return agreement, measured


def clustered_views(generator: torch.Generator, noise_scales: list[float | None], size: int = 240):
    """(size, 5, 16) features: products from 6 clusters; modality i is its cluster's centre in a space of
    its own (a random rotation) plus noise of `noise_scales[i]`, or pure noise where the scale is None."""
    clusters = torch.randint(0, 6, (size,), generator=generator)
    centres = torch.randn(6, 16, generator=generator)
    views = []
    for scale in noise_scales:
        noise = torch.randn(size, 16, generator=generator)
        if scale is None:
            views.append(noise)
            continue
        rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator))
        views.append(centres[clusters] @ rotation + scale * noise)
    return torch.stack(views, dim=1)


def test_each_modality_weighs_the_share_of_its_similarities_the_others_predict():
    weights = ScaleModalityWeights(tiny_config())
    r12, r13, r23 = 0.7, 0.4, 0.45
    shares = weights.fit(*agreement_of({(TEXT, TABLE): r12, (TEXT, IMAGE): r13, (TABLE, IMAGE): r23}))
    # the R^2 of regressing one modality's similarities on the two others', in closed form
    expected = torch.tensor(
        [
            (r12**2 + r13**2 - 2 * r12 * r13 * r23) / (1 - r23**2),
            (r12**2 + r23**2 - 2 * r12 * r13 * r23) / (1 - r13**2),
            (r13**2 + r23**2 - 2 * r12 * r13 * r23) / (1 - r12**2),
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(shares[:3], expected)
    torch.testing.assert_close(weights.weights[:3], (expected / expected.mean()).float())
    assert weights.weights[3:].tolist() == [1.0, 1.0]  # measured against nothing: weight 1

    # two groups that agree within and not across (caption + table, photo + video): no group is sacrificed
    weights.fit(
        *agreement_of(
            {
                (TEXT, TABLE): 0.7,
                (IMAGE, VIDEO): 0.7,
                (TEXT, IMAGE): 0.05,
                (TABLE, VIDEO): 0.05,
                (TEXT, VIDEO): 0.0,
            }
        )
    )
    assert weights.weights[:4].min() > 0.9 * weights.weights[:4].max()

    weights.fit(*agreement_of({(TEXT, IMAGE): 0.35}))  # two modalities: nothing tells them apart
    assert weights.weights.tolist() == pytest.approx([1.0] * 5)

    weights.fit(*agreement_of({}))
    assert weights.weights.tolist() == [1.0] * 5


def test_a_pure_noise_modality_gets_no_weight_and_the_informative_ones_keep_theirs():
    generator = torch.Generator().manual_seed(0)
    present = torch.ones(240, 5, dtype=torch.bool)
    present[:, AUDIO] = False
    weights = ScaleModalityWeights(tiny_config())

    clean = clustered_views(generator, [0.5, 0.5, 2.0, None, None])
    agreement, measured = modality_agreement(clean, present & torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool))
    weights.fit(agreement, measured)
    without_noise = weights.weights[:3].clone()
    # the weak modality (noise 2.0 around its cluster centre) counts less than the two strong ones
    assert without_noise[IMAGE] < 0.5 * min(without_noise[TEXT], without_noise[TABLE])

    agreement, measured = modality_agreement(clean, present)
    assert measured[VIDEO, :3].all() and not measured[AUDIO].any()
    assert agreement[VIDEO, :3].abs().max() < 0.05
    weights.fit(agreement, measured)
    assert weights.weights[VIDEO] < 0.02 * weights.weights[:3].min()
    # relative to each other, the informative modalities weigh what they weighed without the noise
    torch.testing.assert_close(
        weights.weights[:3] / weights.weights[:3].sum(),
        without_noise / without_noise.sum(),
        atol=0.02,
        rtol=0,
    )


def test_agreement_is_measured_only_on_products_having_both_modalities():
    generator = torch.Generator().manual_seed(1)
    features = clustered_views(generator, [0.3, 0.3, 0.3, 0.3, 0.3])
    present = torch.ones(240, 5, dtype=torch.bool)
    present[:200, VIDEO] = False  # 40 products have video
    features[:200, VIDEO] = torch.randn(200, 16, generator=generator)  # what absent rows hold never counts
    present[:, AUDIO] = False
    present[:10, AUDIO] = True  # too few products to measure audio against anything
    agreement, measured = modality_agreement(features, present)
    assert measured[VIDEO, TEXT] and not measured[AUDIO].any()
    assert agreement[VIDEO, TEXT] > 0.8 and agreement[TEXT, TABLE] > 0.8


def test_product_embeds_are_the_weighted_mean_of_the_modalities_pooled_jct_states():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    model.modality_weights.weights.copy_(torch.tensor([2.0, 0.5, 1.0, 0.0, 3.0]))
    inputs = make_inputs(model.config)
    with torch.no_grad():
        encoding = model._encode(**inputs)
    pooled = torch.stack(
        [
            _token_mean(encoding.fused[:, first:last], encoding.token_keep[name])
            for name, (first, last) in encoding.spans.items()
        ],
        dim=1,
    )
    columns = [MODALITIES.index(name) for name in encoding.spans]
    weights = model.modality_weights.weights[columns] * encoding.modality_mask[:, columns]
    only_zero_weight = weights.sum(1) == 0
    weights[only_zero_weight] = encoding.modality_mask[only_zero_weight][:, columns].float()
    expected = (weights[..., None] * pooled).sum(1) / weights.sum(1, keepdim=True)
    torch.testing.assert_close(encoding.product_embeds, expected)

    video_only = torch.zeros(len(encoding.modality_mask), 5)
    video_only[:, VIDEO] = 1
    with torch.no_grad():
        alone = model(**{**inputs, "modality_mask": video_only})
    has_video = alone.modality_mask[:, VIDEO].bool()
    assert has_video.any()
    # a sample whose only modality weighs 0 is still embedded (its plain mean), not zeroed
    assert alone.product_embeds[has_video].norm(dim=-1).min() > 0


@pytest.mark.slow
def test_calibration_fits_the_weights_saves_them_and_old_checkpoints_load_the_plain_mean(
    tmp_path_factory, tmp_path
):
    processor, config = tiny_demo_model_parts()
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    dataset = load_split(str(converted_tiny_sample(tmp_path_factory)), "pretrain", "train")
    calibrate_modality_sets(model, processor, dataset, batch_size=16, num_views=1)
    fitted = model.modality_weights.weights.clone()
    assert torch.isfinite(fitted).all() and (fitted >= 0).all()
    assert not torch.allclose(fitted, torch.ones(5))

    model.save_pretrained(tmp_path / "fitted")
    torch.testing.assert_close(
        ScaleModel.from_pretrained(tmp_path / "fitted").modality_weights.weights, fitted
    )

    state = {k: v for k, v in model.state_dict().items() if not k.startswith("modality_weights.")}
    model.save_pretrained(tmp_path / "old", state_dict=state)
    old = ScaleModel.from_pretrained(tmp_path / "old")
    assert old.modality_weights.weights.tolist() == [1.0] * 5

    calibrate_modality_sets(model, processor, dataset, batch_size=16, num_views=1, agreement_products=0)
    assert model.modality_weights.weights.tolist() == [1.0] * 5


@pytest.mark.slow
def test_calibration_encodes_each_product_once_and_fits_the_sets_on_the_weighted_embeddings(tmp_path_factory):
    """The weights and the set statistics come from one pass of the encoders and the JCT, yet the statistics
    are those of the embeddings fused with the weights just fitted, not with the plain mean."""
    processor, config = tiny_demo_model_parts()
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    dataset = load_split(str(converted_tiny_sample(tmp_path_factory)), "pretrain", "train")
    encoded, encode = [], model._encode
    model._encode = lambda **inputs: encoded.append(len(inputs["modality_mask"])) or encode(**inputs)
    calibrate_modality_sets(
        model,
        processor,
        dataset,
        batch_size=16,
        num_views=1,
        keep_probability=1.0,
        prior_count=0.0,
        transport=False,
    )
    del model._encode
    assert sum(encoded) == len(dataset)

    fitted_mean = model.modality_set_norm.mean.clone()
    model.modality_set_norm.reset()
    weighted = extract_embeddings(
        model, processor, dataset, batch_size=16, normalize=False, show_progress=False
    )
    model.modality_weights.reset()
    plain = extract_embeddings(model, processor, dataset, batch_size=16, normalize=False, show_progress=False)
    codes = modality_set_codes(torch.from_numpy(weighted["modality_mask"]))
    largest = int(codes[codes > 0].bincount().argmax())
    members = (codes == largest).numpy()
    assert members.sum() >= 5
    own = torch.from_numpy(weighted["product_embeds"][members]).double().mean(0)
    torch.testing.assert_close(fitted_mean[largest].double(), own, atol=1e-5, rtol=1e-4)
    plain_own = torch.from_numpy(plain["product_embeds"][members]).double().mean(0)
    assert (own - plain_own).abs().max() > 10 * 1e-4  # the weights move the embeddings: the test can fail
