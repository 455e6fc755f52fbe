"""Per-modality-set standardisation and transport of `product_embeds`: the statistics `fit` computes, that
the transport gives every set the reference's covariance, that every view of a product is mapped by the set
it was fused from, that it takes a modality-set offset and distortion out of cross-set search, and the
calibration that fits it on the model's own embeddings."""

import numpy as np
import pytest
import torch
from test_modeling_scale import make_inputs, tiny_config
from tiny_m5product import converted_tiny_sample, tiny_demo_model_parts

from modeling_scale import MODALITIES, ScaleModel
from modeling_scale.modeling_scale import ScaleModalitySetNorm, modality_set_codes
from train.components import load_split
from train.embeddings import extract_embeddings
from train.modality_set_calibration import calibrate_modality_sets, modality_set_name

TEXT, IMAGE = 1, 4  # modality_set_codes of {text} and {image}
TEXT_TABLE_IMAGE = 7


def sums_of(embeds: dict[int, np.ndarray], num_sets: int, hidden: int):
    """Counts, sums and sums of outer products by set, as `modality_set_sums` adds them up."""
    counts, sums = np.zeros(num_sets), np.zeros((num_sets, hidden))
    products = np.zeros((num_sets, hidden, hidden))
    for code, x in embeds.items():
        counts[code], sums[code], products[code] = len(x), x.sum(0), x.T @ x
    return [torch.from_numpy(a) for a in (counts, sums, products)]


def reference_of(embeds: dict[int, np.ndarray], num_sets: int, hidden: int):
    """The reference statistics of `embeds` (set -> full views): counts and sums by set, one outer sum."""
    counts, sums, products = sums_of(embeds, num_sets, hidden)
    return counts, sums, products.sum(0)


def test_modality_set_codes_and_names():
    mask = torch.tensor([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert modality_set_codes(mask).tolist() == [TEXT, IMAGE, TEXT_TABLE_IMAGE, 31, 0]
    assert [modality_set_name(c) for c in (TEXT, TEXT_TABLE_IMAGE, 31, 0)] == [
        "text",
        "text+table+image",
        "+".join(MODALITIES),
        "none",
    ]


def test_fit_gives_each_set_its_statistics_shrunk_toward_the_pooled_ones():
    rng = np.random.default_rng(0)
    hidden = 6
    embeds = {
        TEXT: rng.normal(3.0, 2.0, (48, hidden)),
        IMAGE: rng.normal(-1.0, 0.5, (400, hidden)),
        TEXT_TABLE_IMAGE: rng.normal(0.0, 1.0, (2, hidden)),
    }
    norm = ScaleModalitySetNorm(tiny_config(hidden_size=hidden))
    norm.fit(*sums_of(embeds, 32, hidden), prior_count=16.0)

    everything = np.concatenate(list(embeds.values()))
    pooled_mean, pooled_square = everything.mean(0), (everything**2).mean(0)
    for code, x in embeds.items():
        weight = len(x) / (len(x) + 16.0)  # 0.75 for text, 0.96 for image, 0.11 for the pair seen twice
        mean = weight * x.mean(0) + (1 - weight) * pooled_mean
        square = weight * (x**2).mean(0) + (1 - weight) * pooled_square
        np.testing.assert_allclose(norm.mean[code].numpy(), mean, rtol=1e-5)
        np.testing.assert_allclose(norm.std[code].numpy(), np.sqrt(square - mean**2), rtol=1e-5)
    never_seen = 31
    np.testing.assert_allclose(norm.mean[never_seen].numpy(), pooled_mean, rtol=1e-5)
    np.testing.assert_allclose(norm.std[never_seen].numpy(), everything.std(0), rtol=1e-5)

    norm.fit(*sums_of(embeds, 32, hidden), prior_count=0.0)  # no shrinkage: each set's own statistics
    image = embeds[IMAGE]
    np.testing.assert_allclose(norm.mean[IMAGE].numpy(), image.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std[IMAGE].numpy(), image.std(0), rtol=1e-5)
    standardised = norm(torch.from_numpy(image).float(), torch.tensor([[0, 0, 1, 0, 0]]).expand(400, -1))
    np.testing.assert_allclose(standardised.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardised.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)

    torch.testing.assert_close(norm.transport, torch.eye(hidden).expand(32, -1, -1))  # no reference given

    norm.reset()
    x = torch.randn(3, hidden)
    torch.testing.assert_close(norm(x, torch.ones(3, 5)), x)
    with pytest.raises(ValueError, match="no embeddings"):
        norm.fit(torch.zeros(32), torch.zeros(32, hidden), torch.zeros(32, hidden, hidden))


def test_transport_gives_every_set_the_reference_covariance_with_the_least_movement():
    """Without ridge or shrinkage, each set's mapped embeddings have mean 0 and the reference's covariance
    (standardised: its correlation matrix); a set already shaped as the reference is only standardised;
    the map in the raw space is symmetric positive definite (the Monge map, no rotation)."""
    rng = np.random.default_rng(0)
    hidden = 6
    mixing = rng.normal(size=(hidden, hidden))
    reference = rng.normal(size=(4000, hidden)) @ np.diag([3.0, 2.0, 1.0, 0.7, 0.5, 0.2]) @ mixing + 1.0
    distorted = rng.normal(size=(3000, hidden)) @ rng.normal(size=(hidden, hidden)) - 2.0
    embeds = {31: reference, TEXT: distorted}
    norm = ScaleModalitySetNorm(tiny_config(hidden_size=hidden))
    norm.fit(*sums_of(embeds, 32, hidden), reference_of({31: reference}, 32, hidden), prior_count=0, ridge=0)

    target = np.cov(reference.T, bias=True)
    correlation = target / np.sqrt(np.outer(np.diag(target), np.diag(target)))
    for code, x in embeds.items():
        mask = torch.tensor([[int(code >> bit & 1) for bit in range(5)]]).expand(len(x), -1)
        mapped = norm(torch.from_numpy(x).float(), mask).double().numpy()
        np.testing.assert_allclose(mapped.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(np.cov(mapped.T, bias=True), correlation, atol=1e-4)
    standardise_only = norm.transport[31].double() * norm.std[31] / norm.std[31][:, None]
    torch.testing.assert_close(standardise_only, torch.eye(hidden, dtype=torch.float64), atol=1e-4, rtol=0)
    # the reference is set 31 itself here, so its standard deviations are the mapped space's scale
    raw_map = norm.transport[TEXT].double() * norm.std[31] / norm.std[TEXT][:, None]
    torch.testing.assert_close(raw_map, raw_map.T, atol=1e-4, rtol=1e-4)
    assert torch.linalg.eigvalsh(raw_map).min() > 0

    with pytest.raises(ValueError, match="no reference"):
        norm.fit(*sums_of(embeds, 32, hidden), (torch.zeros(32), torch.zeros(32, hidden), torch.eye(hidden)))


def test_standardising_by_set_takes_the_set_offset_out_of_cross_set_search():
    """Products embedded as content + an offset and spread that depend only on the modality set (what the
    cross-subset table measured on trained SCALE): a caption-only query is nearest the caption-only
    listings; standardised by set, it is nearest its own product embedded from everything."""
    rng = np.random.default_rng(0)
    hidden, num_products = 16, 200
    content = rng.normal(size=(num_products, hidden))
    offset = {TEXT: rng.normal(size=hidden) * 4, 31: rng.normal(size=hidden) * 4}
    spread = {TEXT: 0.5, 31: 2.0}

    def embed(code: int, rows: np.ndarray) -> np.ndarray:
        noise = rng.normal(scale=0.1, size=(len(rows), hidden))
        return spread[code] * (content[rows] + noise) + offset[code]

    everything, captions = embed(31, np.arange(num_products)), embed(TEXT, np.arange(num_products))
    norm = ScaleModalitySetNorm(tiny_config(hidden_size=hidden))
    norm.fit(*sums_of({31: everything, TEXT: captions}, 32, hidden), prior_count=0.0)

    # gallery: the first 100 products from all five modalities, the other 100 from their caption alone
    gallery = np.concatenate([everything[:100], captions[100:]])
    gallery_sets = torch.tensor([[1] * 5] * 100 + [[1, 0, 0, 0, 0]] * 100)
    queries, query_sets = captions[:100], torch.tensor([[1, 0, 0, 0, 0]] * 100)

    def own_product_top1(query: torch.Tensor, items: torch.Tensor) -> float:
        query, items = (torch.nn.functional.normalize(t.float(), dim=-1) for t in (query, items))
        scores = query @ items.T
        scores[torch.arange(100), 100 + torch.arange(100)] = -2  # not its own caption listing (none there)
        return (scores.argmax(-1) == torch.arange(100)).float().mean().item()

    queries, gallery = torch.from_numpy(queries).float(), torch.from_numpy(gallery).float()
    raw = own_product_top1(queries, gallery)
    standardised = own_product_top1(norm(queries, query_sets), norm(gallery, gallery_sets))
    assert raw < 0.1 and standardised > 0.9, (raw, standardised)


def test_transport_takes_a_set_distortion_out_of_cross_set_search():
    """Caption-only embeddings stretched along two directions that no axis lines up with (plus an offset):
    standardising each set by axis leaves most caption-only queries nearest the caption-only listings;
    the transport, fitted on other products, maps them back onto the full listings' shape."""
    rng = np.random.default_rng(0)
    hidden, num_products = 16, 400
    content = rng.normal(size=(num_products, hidden))
    directions, _ = np.linalg.qr(rng.normal(size=(hidden, 2)))
    stretch = np.eye(hidden) + 6.0 * directions @ directions.T

    def noisy(rows: np.ndarray) -> np.ndarray:
        return content[rows] + rng.normal(scale=0.1, size=(len(rows), hidden))

    products = np.arange(num_products)
    everything, captions = noisy(products) + 2.0, noisy(products) @ stretch - 1.0
    held_out = {31: everything[200:], TEXT: captions[200:]}  # the products the statistics are fitted on
    gallery = torch.from_numpy(np.concatenate([everything[:100], captions[100:200]])).float()
    gallery_sets = torch.tensor([[1] * 5] * 100 + [[1, 0, 0, 0, 0]] * 100)
    queries, query_sets = torch.from_numpy(captions[:100]).float(), torch.tensor([[1, 0, 0, 0, 0]] * 100)

    def own_product_top1(norm: ScaleModalitySetNorm) -> float:
        query, items = (
            torch.nn.functional.normalize(norm(x, sets), dim=-1)
            for x, sets in ((queries, query_sets), (gallery, gallery_sets))
        )
        return ((query @ items.T).argmax(-1) == torch.arange(100)).float().mean().item()

    standardised, transported = (ScaleModalitySetNorm(tiny_config(hidden_size=hidden)) for _ in range(2))
    standardised.fit(*sums_of(held_out, 32, hidden), prior_count=0)
    transported.fit(
        *sums_of(held_out, 32, hidden), reference_of({31: held_out[31]}, 32, hidden), prior_count=0
    )
    with torch.no_grad():
        assert own_product_top1(standardised) < 0.5 and own_product_top1(transported) > 0.9


def test_every_view_is_standardised_by_the_set_it_was_fused_from():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)
    subsets = torch.tensor(
        [
            [[1, 0, 1, 0, 0], [0, 0, 1, 0, 0]],
            [[0, 0, 1, 0, 1], [1, 1, 1, 1, 1]],
            [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
            [[0, 0, 0, 0, 1], [1, 0, 0, 0, 1]],
        ]
    )
    with torch.no_grad():
        raw, sets = model.get_subset_product_embeddings(subsets, **inputs)
        present = model(**inputs).modality_mask.bool()
        torch.testing.assert_close(sets[:, 0], present)
        torch.testing.assert_close(sets[:, 1:], subsets.bool() & present[:, None])
        model.modality_set_norm.mean.normal_()
        model.modality_set_norm.std.uniform_(0.5, 2.0)
        model.modality_set_norm.transport.normal_()
        fitted, _ = model.get_subset_product_embeddings(subsets, **inputs)
        norm = model.modality_set_norm
        codes = modality_set_codes(sets)
        standardised = (raw - norm.mean[codes]) / norm.std[codes]
        expected = (standardised[..., None, :] @ norm.transport[codes]).squeeze(-2)
        torch.testing.assert_close(fitted, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model(**inputs).product_embeds, fitted[:, 0], atol=1e-5, rtol=1e-4)
        for view in range(subsets.shape[1]):
            alone = model(**{**inputs, "modality_mask": subsets[:, view]}).product_embeds
            torch.testing.assert_close(fitted[:, view + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_calibration_fits_the_models_own_embeddings_of_each_set(tmp_path_factory):
    """With every modality kept in the "subset" views and no shrinkage, the fitted rows are exactly the mean
    and standard deviation of the raw embeddings of the products of each set; afterwards the model's own
    embeddings of a well-populated set are standardised."""
    processor, config = tiny_demo_model_parts()
    torch.manual_seed(0)
    model = ScaleModel(config).eval()
    dataset = load_split(str(converted_tiny_sample(tmp_path_factory)), "pretrain", "train")
    raw = extract_embeddings(model, processor, dataset, batch_size=16, normalize=False, show_progress=False)
    counts = calibrate_modality_sets(
        model,
        processor,
        dataset,
        agreement_products=0,  # the plain mean, as `raw` was fused (the weights: test_modality_weights.py)
        num_views=2,
        keep_probability=1.0,
        prior_count=0.0,
        transport=False,  # standardisation alone: exact moments (the transport: the tests above)
        batch_size=16,
    )
    codes = modality_set_codes(torch.from_numpy(raw["modality_mask"])).numpy()
    assert counts == {modality_set_name(c): 3 * int((codes == c).sum()) for c in np.unique(codes) if c > 0}
    assert not model.training
    norm = model.modality_set_norm
    for code in np.unique(codes[codes > 0]):
        x = raw["product_embeds"][codes == code].astype(np.float64)
        np.testing.assert_allclose(norm.mean[code].numpy(), x.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.std[code].numpy(), np.maximum(x.std(0), 1e-6), rtol=1e-3, atol=1e-5)
    after = extract_embeddings(model, processor, dataset, batch_size=16, normalize=False, show_progress=False)
    largest = np.bincount(codes[codes > 0]).argmax()
    standardised = after["product_embeds"][codes == largest]
    assert (codes == largest).sum() >= 5
    np.testing.assert_allclose(standardised.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(standardised.std(0), 1.0, atol=1e-2)
