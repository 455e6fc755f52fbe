"""Relational distillation toward the frozen text encoder SCALE starts from: the loss against its definition
written out, the model's term on every product view, and the teacher's inputs (the caption unmasked)."""

import pytest
import torch
import torch.nn.functional as F
from test_modeling_scale import make_inputs, tiny_config

from modeling_scale import ScaleForPreTraining
from modeling_scale.simcl import relational_distillation_loss
from train.baselines import FrozenTextEncoder


def distillation_by_hand(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over products and views of KL(p_teacher || p_student), each a softmax over the cosine similarities
    to the batch's other products, written with loops."""
    batch, num_views = student.shape[:2]
    total = 0.0
    for row in range(batch):
        others = [column for column in range(batch) if column != row]
        t = torch.stack([F.cosine_similarity(teacher[row], teacher[c], dim=0) for c in others]) / temperature
        p = t.softmax(0)
        for view in range(num_views):
            s = torch.stack(
                [F.cosine_similarity(student[row, view], student[c, view], dim=0) for c in others]
            )
            total = total + (p * (p.log() - (s / temperature).log_softmax(0))).sum()
    return total / (batch * num_views)


def test_relational_distillation_is_the_kl_between_the_batch_softmaxes():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(5, 3, 8, generator=generator, requires_grad=True)
    teacher = torch.randn(
        5, 12, generator=generator, requires_grad=True
    )  # another width: only relations count
    valid = torch.ones(5, dtype=torch.bool)
    loss = relational_distillation_loss(student, teacher, valid, 0.2)
    torch.testing.assert_close(loss, distillation_by_hand(student.detach(), teacher.detach(), 0.2))
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the teacher is a fixed target
    # one view given as (B, D)
    torch.testing.assert_close(
        relational_distillation_loss(student[:, 1], teacher, valid, 0.2),
        distillation_by_hand(student[:, 1:2].detach(), teacher.detach(), 0.2),
    )


def test_relational_distillation_runs_in_float32_under_bf16_autocast():
    """Under mixed precision (accelerate autocasts the model's forward) the similarities stay float32: in
    bf16 the masked-out columns' fill overflowed and the softmaxes lost their precision."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 2, 8, generator=generator), torch.randn(6, 12, generator=generator)
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = relational_distillation_loss(student, teacher.bfloat16(), valid, 0.05)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss, relational_distillation_loss(student, teacher.bfloat16().float(), valid, 0.05)
    )


def test_relational_distillation_leaves_out_products_without_a_teacher_row_and_is_zero_when_relations_agree():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 8, generator=generator)
    student = torch.randn(6, 2, 8, generator=generator)
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    expected = distillation_by_hand(student[valid], teacher[valid], 0.1)
    torch.testing.assert_close(relational_distillation_loss(student, teacher, valid, 0.1), expected)
    changed = student.clone()
    changed[2] = torch.randn(2, 8, generator=generator)
    torch.testing.assert_close(relational_distillation_loss(changed, teacher, valid, 0.1), expected)
    # the same neighbourhoods in another basis and scale: nothing to learn
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=generator))[0]
    same = (3.0 * teacher @ rotation)[:, None].expand(-1, 2, -1)
    assert relational_distillation_loss(same, teacher, valid, 0.1).item() == pytest.approx(0.0, abs=1e-5)
    assert relational_distillation_loss(student, teacher, valid & (torch.arange(6) == 0), 0.1).item() == 0.0


def test_the_model_distils_every_product_view_over_the_products_with_a_caption():
    torch.manual_seed(0)
    model = ScaleForPreTraining(tiny_config(distillation_loss_weight=0.5)).eval()
    inputs = make_inputs(model.config)
    subset = torch.tensor([[[0, 1, 0, 0, 1]], [[1, 0, 0, 0, 0]], [[1, 0, 1, 0, 0]], [[0, 0, 1, 0, 0]]])
    teacher = torch.randn(4, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        output = model(**inputs, subset_modality_mask=subset, teacher_embeds=teacher)
        encoding = model.scale._encode(**inputs)
        views = torch.stack(
            [encoding.product_embeds, model.scale.subset_product_embeds(encoding, subset[:, 0])], dim=1
        )
        has_text = inputs["modality_mask"][:, 0].bool()
        assert not has_text.all()  # the sample leaves one product without its caption
        expected = distillation_by_hand(
            views[has_text], teacher[has_text], model.config.distillation_temperature
        )
        torch.testing.assert_close(output.distillation_loss, 0.5 * expected)
        others = (
            "mlm_loss",
            "mem_loss",
            "mrp_loss",
            "mfp_loss",
            "mam_loss",
            "contrastive_loss",
            "subset_loss",
        )
        torch.testing.assert_close(
            output.loss, output.distillation_loss + sum(output[name] for name in others)
        )
        assert (
            model(**inputs, subset_modality_mask=subset).distillation_loss.item() == 0.0
        )  # no teacher given
        model.config.distillation_loss_weight = 0.0
        assert model(**inputs, teacher_embeds=teacher).distillation_loss.item() == 0.0


class _LastHidden(torch.nn.Module):
    """A stand-in encoder whose hidden state is a lookup of the token ids (so pooling is checkable)."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(50, 3)

    def forward(self, input_ids, attention_mask):
        return type("Output", (), {"last_hidden_state": self.table(input_ids)})()


def test_frozen_text_encoder_mean_pools_the_unmasked_caption_and_never_trains():
    teacher = FrozenTextEncoder(_LastHidden())
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    ids = torch.tensor([[1, 7, 8, 2, 0], [1, 9, 2, 0, 0]])
    attention = (ids != 0).long()
    masked = torch.tensor([[1, 4, 8, 2, 0], [1, 9, 4, 0, 0]])  # 4 plays [MASK]
    labels = torch.tensor([[-100, 7, -100, -100, -100], [-100, -100, 2, -100, -100]])
    targets = teacher.teacher_inputs({"input_ids": masked, "attention_mask": attention, "labels": labels})
    table = teacher.encoder.table.weight
    expected = torch.stack([table[[1, 7, 8, 2]].mean(0), table[[1, 9, 2]].mean(0)])
    torch.testing.assert_close(targets["teacher_embeds"], expected)
    assert teacher.teacher_inputs({"pixel_values": torch.zeros(2, 3, 4, 4)}) == {}
