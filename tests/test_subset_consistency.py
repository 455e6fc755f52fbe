"""Subset-consistent product embeddings: the subset view the collator draws, the JCT re-run embedding it, the
InfoNCE that binds it to the full view, and what brief training with it does to retrieval across subsets."""

import pytest
import torch
from test_modeling_scale import BATCH, make_inputs, tiny_config

from modeling_scale import ScaleForPreTraining, ScaleModel
from modeling_scale.collator_scale import draw_modality_subset
from modeling_scale.simcl import pairwise_contrastive_loss


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


def test_subset_loss_is_the_weighted_infonce_between_the_two_views():
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config(subset_loss_weight=0.5)).eval()
    inputs = make_inputs(model.config)
    subset = torch.tensor([[0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    with torch.no_grad():
        output = model(**inputs, subset_modality_mask=subset)
        encoding = model.scale._encode(**inputs)
        expected, count = pairwise_contrastive_loss(
            encoding.product_embeds,
            model.scale.subset_product_embeds(encoding, subset),
            torch.ones(BATCH, dtype=torch.bool),
            model.config.temperature,
            denominator="all",
        )
        assert count.item() == BATCH
        torch.testing.assert_close(output.subset_loss, 0.5 * expected)
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
    """24 products with every modality, 60 updates on the whole pretraining loss, with and without the
    subset term (same seed, same batches, same subset draws). Measured here: own product top-1 (chance
    1/24) from text 0.92 vs 0.46, image 0.67 vs 0.29, text+image 0.96 vs 0.67."""

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
            subset = draw_modality_subset(inputs["modality_mask"], 0.5, generator)
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
