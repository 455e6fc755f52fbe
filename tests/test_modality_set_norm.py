"""Per-modality-set standardisation of `product_embeds`: the statistics `fit` computes, that every view of a
product is standardised by the set it was fused from, that it takes a modality-set offset out of cross-set
search, and the calibration that fits it on the model's own embeddings."""

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
    counts, sums, squares = np.zeros(num_sets), np.zeros((num_sets, hidden)), np.zeros((num_sets, hidden))
    for code, x in embeds.items():
        counts[code], sums[code], squares[code] = len(x), x.sum(0), (x**2).sum(0)
    return [torch.from_numpy(a) for a in (counts, sums, squares)]


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

    norm.reset()
    x = torch.randn(3, hidden)
    torch.testing.assert_close(norm(x, torch.ones(3, 5)), x)
    with pytest.raises(ValueError, match="no embeddings"):
        norm.fit(torch.zeros(32), torch.zeros(32, hidden), torch.zeros(32, hidden))


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
        fitted, _ = model.get_subset_product_embeddings(subsets, **inputs)
        norm = model.modality_set_norm
        codes = modality_set_codes(sets)
        torch.testing.assert_close(fitted, (raw - norm.mean[codes]) / norm.std[codes], atol=1e-5, rtol=1e-4)
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
