"""The zero-initialised Linears (`ScaleZeroInitLinear`): the product embedding and the video patch path start
where their docstrings say, in every configuration."""

import torch
from test_modeling_scale import make_inputs, tiny_config

from modeling_scale import ScaleModel
from modeling_scale.modeling_scale import ScaleZeroInitLinear, _token_mean


def test_zero_initialised_linears_start_at_zero_in_every_configuration():
    """transformers skips `_init_weights` for a custom module without parameters of its own (`ScaleModel` with
    the default S): zeroing `product_projection` from ScaleModel's branch left it random."""
    for overrides in ({}, {"alignment": "learned"}, {"video_frame_encoder": "patches"}):
        model = ScaleModel(tiny_config(**overrides))
        zero_init = [m for m in model.modules() if isinstance(m, ScaleZeroInitLinear)]
        assert len(zero_init) == 1 + ("video_frame_encoder" in overrides)  # product_projection (+ grid)
        for module in zero_init:
            assert module.weight.abs().sum().item() == 0.0 and module.bias.abs().sum().item() == 0.0


def test_product_embeds_start_as_the_mean_of_the_modalities_pooled_jct_states():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    inputs = make_inputs(model.config)
    with torch.no_grad():
        encoding = model._encode(**inputs)
    per_modality = [
        _token_mean(encoding.fused[:, first:last], encoding.token_keep[name])
        for name, (first, last) in encoding.spans.items()
    ]
    present = encoding.modality_mask.float()
    expected = torch.stack(per_modality, 1).sum(1) / present.sum(1, keepdim=True)
    torch.testing.assert_close(encoding.product_embeds, expected)
