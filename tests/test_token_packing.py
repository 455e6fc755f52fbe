"""Computing only the tokens that count: packed encoders (`config.pack_tokens`) give the padded batch's
outputs, losses and gradients with fewer FLOPs where tokens are padding or modalities are absent; sparse
vocabulary heads (`config.sparse_prediction`) give the dense heads' losses from the labelled tokens alone."""

import pytest
import torch
from test_modeling_scale import MODALITY_MASK, make_inputs, make_pretraining_targets, tiny_config
from torch.utils.flop_counter import FlopCounterMode

from modeling_scale import ScaleForPreTraining, ScaleModel
from modeling_scale.modeling_scale import pack_kept_tokens

SUBSETS = torch.tensor(
    [
        [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]],
        [[0, 0, 1, 0, 1], [1, 1, 1, 1, 1]],
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]],
        [[0, 0, 0, 0, 1], [0, 0, 1, 0, 0]],
    ]
)


def test_pack_kept_tokens_lays_each_rows_kept_tokens_out_in_order_without_the_empty_rows():
    mask = torch.tensor(
        [[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0]],
        dtype=torch.bool,
    )
    packing = pack_kept_tokens(mask)
    # flattened positions of the kept tokens, row after row
    assert packing.kept.tolist() == [1, 3, 4, 12, 17, 22, 24, 25, 26]
    # attention layout: 4 rows (the empty one skipped) cut to the longest (3 tokens)
    assert packing.mask.tolist() == [
        [True, True, True],
        [True, True, False],
        [True, False, False],
        [True, True, True],
    ]
    assert packing.slots.tolist() == [0, 1, 2, 3, 4, 6, 9, 10, 11]
    empty = pack_kept_tokens(torch.zeros(2, 4, dtype=torch.bool))
    assert empty.kept.numel() == 0 and empty.mask.shape == (0, 0)


@pytest.mark.parametrize("image, video", [("features", "features"), ("pixels", "pixels")])
def test_packed_and_padded_pretraining_give_the_same_outputs_and_gradients(image, video):
    torch.manual_seed(0)
    config = tiny_config()
    packed_model = ScaleForPreTraining(config).train()  # the tiny config has no dropout
    padded_model = ScaleForPreTraining(tiny_config(pack_tokens=False)).train()
    padded_model.load_state_dict(packed_model.state_dict())
    inputs = make_inputs(config, image=image, video=video)
    batch = {**inputs, **make_pretraining_targets(config, inputs), "subset_modality_mask": SUBSETS}
    packed, padded = packed_model(**batch), padded_model(**batch)
    for name in ("loss", "mlm_loss", "mem_loss", "mrp_loss", "mfp_loss", "mam_loss", "contrastive_loss"):
        torch.testing.assert_close(packed[name], padded[name], atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(packed.subset_loss, padded.subset_loss, atol=1e-5, rtol=1e-4)
    for name in ("mlm_logits", "mem_logits", "product_embeds", "text_embeds", "audio_embeds"):
        torch.testing.assert_close(packed[name], padded[name], atol=1e-5, rtol=1e-4, msg=name)
    assert packed.subset_loss > 0 and packed.mam_loss > 0
    packed.loss.backward()
    padded.loss.backward()
    for (name, a), b in zip(packed_model.named_parameters(), padded_model.parameters(), strict=True):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-3, msg=name)


def test_packed_model_output_equals_the_padded_one_at_every_kept_token():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)
    with torch.no_grad():
        packed = model(**inputs)
        model.config.pack_tokens = False
        padded = model(**inputs)
    kept = padded.fusion_attention_mask.bool()
    assert not kept.all()  # padding and absent modalities in the batch
    torch.testing.assert_close(packed.last_hidden_state, padded.last_hidden_state, atol=1e-5, rtol=1e-4)
    assert (packed.last_hidden_state[~kept] == 0).all()
    torch.testing.assert_close(packed.product_embeds, padded.product_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.alignment_scores, padded.alignment_scores, atol=1e-5, rtol=1e-4)


def test_packing_skips_padding_and_absent_modalities_in_the_flop_count():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)

    def flops(pack_tokens: bool, batch: dict) -> int:
        model.config.pack_tokens = pack_tokens
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(**batch)
        return counter.get_total_flops()

    # 3 of the 4 products lack some modality (MODALITY_MASK) and some captions / tables are padded: packed
    # is 0.50 of padded here
    assert MODALITY_MASK.sum() < MODALITY_MASK.numel()
    assert flops(True, inputs) < 0.75 * flops(False, inputs)
    # one product with every modality, nothing padded: the same work either way
    full = {key: torch.ones_like(v[:1]) if key.endswith("mask") else v[:1] for key, v in inputs.items()}
    assert flops(True, full) == flops(False, full)


@pytest.mark.parametrize("reading", ["logits", "loss"])
def test_sparse_prediction_gives_the_dense_losses_and_gradients_from_the_labelled_tokens(reading):
    torch.manual_seed(0)
    overrides = {"alignment": "learned", "simcl_weight_reading": reading}
    sparse_model = ScaleForPreTraining(tiny_config(sparse_prediction=True, **overrides)).train()
    dense_model = ScaleForPreTraining(tiny_config(**overrides)).train()
    dense_model.load_state_dict(sparse_model.state_dict())
    with torch.no_grad():  # an S away from all ones, so its weights show
        for model in (sparse_model, dense_model):
            model.scale.alignment_parameter.copy_(torch.linspace(0.5, 1.5, 25).view(5, 5))
    config = sparse_model.config
    inputs = make_inputs(config)
    batch = {**inputs, **make_pretraining_targets(config, inputs)}
    sparse, dense = sparse_model(**batch), dense_model(**batch)
    for name, labels, mask, modality in (
        ("mlm", batch["labels"], "attention_mask", 0),
        ("mem", batch["table_labels"], "table_attention_mask", 1),
    ):
        # labelled tokens of the samples that have the modality, in order
        counted = (labels != -100) & batch[mask].bool() & sparse.modality_mask.bool()[:, modality, None]
        assert 0 < counted.sum() < counted.numel()
        assert sparse[f"{name}_logits"].shape == (counted.sum(), config.vocab_size)
        torch.testing.assert_close(sparse[f"{name}_logits"], dense[f"{name}_logits"][counted])
        torch.testing.assert_close(sparse[f"{name}_loss"], dense[f"{name}_loss"])
    torch.testing.assert_close(sparse.loss, dense.loss)
    sparse.loss.backward()
    dense.loss.backward()
    for (name, a), b in zip(sparse_model.named_parameters(), dense_model.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)
