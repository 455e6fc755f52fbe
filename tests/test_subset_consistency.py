"""Subset-consistent product embeddings: the subset views the collator draws, the JCT re-run embedding them,
the NT-Xent that binds them to the full view, and what brief training with it does to retrieval across
subsets."""

import pytest
import torch
from test_modeling_scale import make_inputs, tiny_config

from modeling_scale import ScaleForPreTraining, ScaleModel
from modeling_scale.collator_scale import draw_modality_subset
from modeling_scale.simcl import multiview_contrastive_loss, pairwise_contrastive_loss


def test_draw_modality_subset_keeps_a_nonempty_part_of_what_each_product_has():
    generator = torch.Generator().manual_seed(0)
    present = torch.rand(4000, 5, generator=generator) < 0.8
    present[:7] = False  # products without any modality keep none
    keep = draw_modality_subset(present, 0.5, torch.Generator().manual_seed(1))
    assert not (keep & ~present).any()
    assert (keep.any(-1) == present.any(-1)).all()
    # a product with all five keeps each with probability 0.5, plus one when the draw kept none:
    # 5 * 0.5 + 0.5 ** 5 = 2.53 on average
    full = present.all(-1)
    assert 2.4 < keep[full].sum(-1).float().mean().item() < 2.66
    again = draw_modality_subset(present, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(keep, again)
    assert torch.equal(draw_modality_subset(present, 1.0), present)
    views = draw_modality_subset(present[:, None].expand(-1, 3, -1), 0.5, torch.Generator().manual_seed(2))
    assert views.shape == (4000, 3, 5) and not (views & ~present[:, None]).any()
    assert (views.any(-1) == present.any(-1)[:, None]).all()
    assert not torch.equal(views[:, 0], views[:, 1])  # the views of one product are drawn independently


def nt_xent_by_hand(views: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss written out: every view against every other view of the batch, the positives being the
    same product's other views (mean of their -log softmax)."""
    batch, num_views = views.shape[:2]
    flat = torch.nn.functional.normalize(views, dim=-1).reshape(batch * num_views, -1)
    logits = flat @ flat.T / temperature
    logits.fill_diagonal_(float("-inf"))
    log_prob = logits.log_softmax(-1)
    product = torch.arange(batch).repeat_interleave(num_views)
    positive = (product[:, None] == product[None, :]) & ~torch.eye(batch * num_views, dtype=torch.bool)
    return -(log_prob.masked_fill(~positive, 0.0).sum(-1) / (num_views - 1)).mean()


@pytest.mark.parametrize("num_views", [2, 3])
def test_multiview_contrastive_loss_is_nt_xent(num_views):
    views = torch.randn(6, num_views, 8, generator=torch.Generator().manual_seed(num_views))
    loss = multiview_contrastive_loss(views, torch.ones(6, dtype=torch.bool), 0.5)
    torch.testing.assert_close(loss, nt_xent_by_hand(views, 0.5))
    # a product without modalities is neither an anchor nor a negative
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    torch.testing.assert_close(
        multiview_contrastive_loss(views, valid, 0.5), nt_xent_by_hand(views[valid], 0.5)
    )
    assert multiview_contrastive_loss(views, valid & (torch.arange(6) == 0), 0.5).item() == 0.0
    with pytest.raises(ValueError, match="at least 2 views"):
        multiview_contrastive_loss(views[:, :1], valid, 0.5)


def test_same_kind_views_of_other_products_are_negatives():
    """Two layouts with the same full-to-subset similarities; in one, the subset views share a direction (as a
    caption-only embedding carries "caption only"). Only NT-Xent, whose negatives hold the other products'
    subset views, tells them apart; a symmetric InfoNCE between the full and subset views cannot."""
    full = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    shared = torch.stack([full, torch.tensor([[0.8, 0.2, 0.56, 0.0], [0.2, 0.8, 0.56, 0.0]])], dim=1)
    apart = torch.stack([full, torch.tensor([[0.8, 0.2, 0.56, 0.0], [0.2, 0.8, 0.0, 0.56]])], dim=1)
    valid = torch.ones(2, dtype=torch.bool)
    assert (
        multiview_contrastive_loss(shared, valid, 0.1) > multiview_contrastive_loss(apart, valid, 0.1) + 0.05
    )
    infonce = [pairwise_contrastive_loss(v[:, 0], v[:, 1], valid, 0.1, "all")[0] for v in (shared, apart)]
    torch.testing.assert_close(*infonce)


def test_subset_view_equals_encoding_the_subset_alone():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)
    subset = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 1, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    with torch.no_grad():
        encoding = model._encode(**inputs)
        from_full = model.subset_product_embeds(encoding, subset)
        alone = model(**{**inputs, "modality_mask": subset}).product_embeds
    torch.testing.assert_close(from_full, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(from_full[0], encoding.product_embeds[0], atol=1e-3)


def test_subset_loss_is_the_weighted_nt_xent_over_the_full_and_subset_views():
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config(subset_loss_weight=0.5)).eval()
    inputs = make_inputs(model.config)
    subset = torch.tensor(
        [
            [[0, 1, 0, 0, 1], [1, 0, 0, 0, 0]],
            [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]],
            [[1, 0, 0, 0, 0], [1, 0, 1, 0, 0]],
            [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]],
        ]
    )
    with torch.no_grad():
        output = model(**inputs, subset_modality_mask=subset)
        encoding = model.scale._encode(**inputs)
        views = [encoding.product_embeds] + [
            model.scale.subset_product_embeds(encoding, subset[:, v]) for v in (0, 1)
        ]
        expected = nt_xent_by_hand(torch.stack(views, dim=1), model.config.temperature)
        torch.testing.assert_close(output.subset_loss, 0.5 * expected)
        one_view = model(**inputs, subset_modality_mask=subset[:, 0]).subset_loss
        torch.testing.assert_close(
            one_view, 0.5 * nt_xent_by_hand(torch.stack(views[:2], 1), model.config.temperature)
        )
        others = [output[name] for name in ("mlm_loss", "mem_loss", "mrp_loss", "mfp_loss", "mam_loss")]
        torch.testing.assert_close(output.loss, output.contrastive_loss + output.subset_loss + sum(others))
        assert model(**inputs).subset_loss.item() == 0.0  # no subset view drawn: no term
        model.config.subset_loss_weight = 0.0
        assert model(**inputs, subset_modality_mask=subset).subset_loss.item() == 0.0


def own_product_top1(model: ScaleForPreTraining, inputs: dict, query_modalities: list[int]) -> float:
    """Share of products whose embedding from `query_modalities` alone is nearest their own full embedding."""
    with torch.no_grad():
        full = torch.nn.functional.normalize(model.scale(**inputs).product_embeds, dim=-1)
        only = torch.zeros_like(inputs["modality_mask"])
        only[:, query_modalities] = inputs["modality_mask"][:, query_modalities]
        query = torch.nn.functional.normalize(
            model.scale(**{**inputs, "modality_mask": only}).product_embeds, dim=-1
        )
    return (query @ full.T).argmax(-1).eq(torch.arange(len(full))).float().mean().item()


@pytest.mark.slow
def test_brief_training_with_the_subset_loss_finds_products_from_part_of_their_modalities():
    """24 products with every modality, 60 updates on the whole loss, with and without the subset term (same
    seed, same batches, same subset draws; two subset views). Measured here: own product top-1 (chance 1/24)
    from text 0.79 vs 0.29, image 0.79 vs 0.25, text+image 1.00 vs 0.54."""

    def train(subset_loss_weight: float) -> dict[str, float]:
        torch.manual_seed(0)
        config = tiny_config(subset_loss_weight=subset_loss_weight, use_simcl=False)
        model = ScaleForPreTraining(config)
        batches = []
        for seed in range(6):  # 6 batches of 4 products: the subset InfoNCE only ever sees 4 at once
            inputs = make_inputs(config, seed=seed)
            inputs["modality_mask"] = torch.ones_like(inputs["modality_mask"])
            for key in ("attention_mask", "table_attention_mask", "image_mask", "video_mask", "audio_mask"):
                inputs[key] = torch.ones_like(inputs[key])
            batches.append(inputs)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for step in range(60):
            inputs = batches[step % len(batches)]
            present = inputs["modality_mask"][:, None].expand(-1, config.num_subset_views, -1)
            subset = draw_modality_subset(present, 0.5, generator)
            model(**inputs, subset_modality_mask=subset).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        everything = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
        queries = {"text": [0], "image": [2], "text+image": [0, 2]}
        return {name: own_product_top1(model, everything, modalities) for name, modalities in queries.items()}

    with_subset, without_subset = train(1.0), train(0.0)
    for query in with_subset:
        assert with_subset[query] >= 0.6, (query, with_subset, without_subset)
        assert with_subset[query] >= without_subset[query] + 0.25, (query, with_subset, without_subset)
