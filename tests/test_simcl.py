"""SIMCL: the alignment matrix S in every mode, Eq. 2 vs standard InfoNCE against hand computations, the pair
average or sum, S on the logits or on the losses, what optimising S can do to the loss, and negatives gathered
(with gradients) from several processes."""

import math
import socket

import pytest
import torch
import torch.nn.functional as F

from modeling_scale.simcl import (
    alignment_scores,
    gather_with_grad,
    pairwise_contrastive_loss,
    simcl_contrastive_loss,
)

TAU = 0.5


def reference_eq2(a: torch.Tensor, b: torch.Tensor, valid: list[bool], tau: float) -> float:
    """Eq. 2 written out with loops: one loss per positive pair, only the 2(N-1) cross-modal negatives."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    members = [i for i, ok in enumerate(valid) if ok]
    losses = []
    for i in members:
        positive = math.exp(float(a[i] @ b[i]) / tau)
        negatives = sum(math.exp(float(a[i] @ b[k]) / tau) for k in members if k != i)
        negatives += sum(math.exp(float(b[i] @ a[k]) / tau) for k in members if k != i)
        losses.append(-math.log(positive / negatives))
    return sum(losses) / len(losses)


def test_eq2_on_a_two_sample_example_worked_by_hand():
    """Orthonormal features, tau = 1: positive 1, negatives 0 -> Eq. 2 = log(2) - 1; InfoNCE log(1+e) - 1."""
    embeds = torch.eye(2)
    valid = torch.ones(2, dtype=torch.bool)
    loss, count = pairwise_contrastive_loss(embeds, embeds, valid, temperature=1.0, denominator="negatives")
    torch.testing.assert_close(loss, torch.tensor(math.log(2) - 1))
    assert count == 2
    loss, _ = pairwise_contrastive_loss(embeds, embeds, valid, temperature=1.0, denominator="all")
    torch.testing.assert_close(loss, torch.tensor(math.log(1 + math.e) - 1))


def test_eq2_matches_the_written_out_formula_and_skips_invalid_samples():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    valid = [True, True, False, True, True]
    loss, count = pairwise_contrastive_loss(a, b, torch.tensor(valid), TAU, "negatives")
    assert count == 4
    assert loss.item() == pytest.approx(reference_eq2(a, b, valid, TAU), rel=1e-5)


def test_all_is_the_symmetric_infonce_over_the_valid_samples():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    valid = torch.tensor([True, False, True, True, True])
    loss, _ = pairwise_contrastive_loss(a, b, valid, TAU, "all")
    logits = F.normalize(a[valid], dim=-1) @ F.normalize(b[valid], dim=-1).T / TAU
    targets = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, pairwise_contrastive_loss(a, b, valid, TAU, "negatives")[0])


def test_logit_scale_multiplies_each_anchor_row():
    """Eq. 3: S[i, j] scales the pair's logits; with one scale for every anchor it acts as tau / s."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    valid = torch.ones(4, dtype=torch.bool)
    scaled, _ = pairwise_contrastive_loss(a, b, valid, TAU, "negatives", logit_scale=torch.full((4,), 0.25))
    torch.testing.assert_close(scaled, pairwise_contrastive_loss(a, b, valid, TAU / 0.25, "negatives")[0])
    per_anchor = torch.tensor([1.0, 0.5, 2.0, 0.1])
    mixed, _ = pairwise_contrastive_loss(a, b, valid, TAU, "negatives", logit_scale=per_anchor)
    # anchor i's term is its Eq. 2 term at temperature tau / s_i
    expected = [_per_anchor_eq2(a, b, TAU / s)[i] for i, s in enumerate(per_anchor.tolist())]
    torch.testing.assert_close(mixed, torch.stack(expected).mean())


def _per_anchor_eq2(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / tau
    off_diagonal = ~torch.eye(len(a), dtype=torch.bool)
    negatives = torch.cat(
        [logits.masked_fill(~off_diagonal, -torch.inf), logits.T.masked_fill(~off_diagonal, -torch.inf)],
        dim=1,
    )
    return torch.logsumexp(negatives, dim=1) - logits.diagonal()


def test_invalid_samples_get_no_gradient_and_too_few_samples_give_zero():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 4, generator=g, requires_grad=True)
    b = torch.randn(3, 4, generator=g, requires_grad=True)
    loss, _ = pairwise_contrastive_loss(a, b, torch.tensor([True, True, False]), TAU)
    loss.backward()
    assert torch.all(a.grad[2] == 0) and torch.all(b.grad[2] == 0) and a.grad[:2].abs().sum() > 0

    a.grad = None
    lonely, count = pairwise_contrastive_loss(a, b, torch.tensor([True, False, False]), TAU)
    lonely.backward()
    assert lonely == 0 and count == 0
    assert torch.isfinite(a.grad).all() and torch.all(a.grad == 0)


def test_simcl_averages_the_usable_pairs():
    g = torch.Generator().manual_seed(4)
    embeds = torch.randn(4, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 1], [1, 0, 1, 0, 0], [1, 1, 1, 1, 0]])
    total = simcl_contrastive_loss(embeds, mask, TAU, "negatives")
    usable = []
    for i in range(5):
        for j in range(i + 1, 5):
            both = mask[:, i].bool() & mask[:, j].bool()
            if both.sum() >= 2:
                usable.append(reference_eq2(embeds[:, i], embeds[:, j], both.tolist(), TAU))
    assert len(usable) == 3  # text-table, text-image, table-image; the rest have < 2 samples
    assert total.item() == pytest.approx(sum(usable) / len(usable), rel=1e-5)
    assert simcl_contrastive_loss(embeds, torch.eye(5, dtype=torch.long)[:4], TAU) == 0


# --------------------------------------------------------------------------------------------------- S


def test_feature_alignment_matches_the_released_formula():
    g = torch.Generator().manual_seed(5)
    embeds = torch.randn(2, 5, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1]])
    scores = alignment_scores(embeds, mask, "feature")

    features = F.normalize(embeds[0], dim=-1)
    cosine = features @ features.T
    expected = F.normalize(cosine * cosine.softmax(-1), dim=-1)
    torch.testing.assert_close(scores[0], expected)

    present = [0, 2, 4]
    sub = F.normalize(embeds[1, present], dim=-1)
    sub_cosine = sub @ sub.T
    torch.testing.assert_close(
        scores[1][present][:, present], F.normalize(sub_cosine * sub_cosine.softmax(-1), dim=-1)
    )
    assert torch.all(scores[1, [1, 3]] == 0) and torch.all(scores[1, :, [1, 3]] == 0)
    torch.testing.assert_close(scores[1, present].norm(dim=-1), torch.ones(3))

    changed = embeds.clone()
    changed[1, [1, 3]] = 100.0
    torch.testing.assert_close(alignment_scores(changed, mask, "feature"), scores)


def test_learned_alignment_zero_init_is_dead_and_ones_init_weights_by_one():
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1]])
    embeds = torch.zeros(2, 5, 3)
    zero = torch.zeros(5, 5, requires_grad=True)
    assert torch.all(
        alignment_scores(embeds, mask, "learned", zero) == 0
    )  # the paper's init: every logit x 0

    ones = torch.ones(5, 5, requires_grad=True)
    scores = alignment_scores(embeds, mask, "learned", ones)
    pair = (mask[:, :, None] * mask[:, None, :]).float()
    torch.testing.assert_close(scores, pair)
    (scores * torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(6))).sum().backward()
    assert ones.grad.abs().sum() > 0

    g = torch.Generator().manual_seed(7)
    parameter = torch.randn(5, 5, generator=g)
    scores = alignment_scores(embeds, mask, "learned", parameter)
    present = [0, 3, 4]
    sub = parameter[present][:, present]
    torch.testing.assert_close(scores[1][present][:, present], 3 * sub * sub.softmax(-1))
    assert torch.all(scores[1, [1, 2]] == 0) and torch.all(scores[1, :, [1, 2]] == 0)


def test_alignment_rejects_unknown_mode():
    with pytest.raises(ValueError, match="alignment mode"):
        alignment_scores(torch.zeros(1, 5, 2), torch.ones(1, 5), "both")
    for mode in ("learned", "bounded"):
        with pytest.raises(ValueError, match=f'"{mode}" needs the .* alignment_parameter'):
            alignment_scores(torch.zeros(1, 5, 2), torch.ones(1, 5), mode)


def test_bounded_weights_average_one_over_present_pairs_and_modalities():
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 1, 0, 0]])
    embeds = torch.zeros(3, 5, 4)
    constant = torch.full((5, 5), 0.3)
    pair = (mask[:, :, None] * mask[:, None, :]).float()
    torch.testing.assert_close(alignment_scores(embeds, mask, "bounded", constant), pair)  # starts unweighted

    parameter = torch.randn(5, 5, generator=torch.Generator().manual_seed(10), requires_grad=True)
    scores = alignment_scores(embeds, mask, "bounded", parameter)
    torch.testing.assert_close(scores, scores.transpose(1, 2))
    assert torch.all(scores[1, [1, 3]] == 0) and torch.all(scores[1, :, [1, 3]] == 0)
    present = [0, 2, 4]
    symmetric = 0.5 * (parameter + parameter.T)
    upper = [(i, j) for i in present for j in present if i < j]
    expected_pairs = 3 * torch.stack([symmetric[i, j] for i, j in upper]).softmax(0)
    torch.testing.assert_close(torch.stack([scores[1, i, j] for i, j in upper]), expected_pairs)
    torch.testing.assert_close(scores[1].diagonal()[present], 3 * symmetric.diagonal()[present].softmax(0))
    for row, sample in zip(scores, mask.bool(), strict=True):
        pairs = sample[:, None] & sample[None, :] & torch.ones(5, 5, dtype=torch.bool).triu(1)
        if pairs.any():
            torch.testing.assert_close(row[pairs].mean(), torch.tensor(1.0))
        torch.testing.assert_close(row.diagonal()[sample].mean(), torch.tensor(1.0))
    scores.sum().backward()
    assert parameter.grad.abs().sum() > 0


def test_embedding_weights_follow_the_feature_agreement_without_gradient():
    g = torch.Generator().manual_seed(11)
    embeds = torch.randn(2, 5, 6, generator=g, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0]])
    scores = alignment_scores(embeds, mask, "embedding")
    assert not scores.requires_grad, "S must not reward the encoders for misaligning a pair"

    features = F.normalize(embeds[0].detach(), dim=-1)
    cosine = features @ features.T
    upper = torch.ones(5, 5, dtype=torch.bool).triu(1)
    torch.testing.assert_close(scores[0][upper], 10 * cosine[upper].softmax(0))
    agreement = (cosine.sum(-1) - cosine.diagonal()) / 4
    torch.testing.assert_close(scores[0].diagonal(), 5 * agreement.softmax(0))
    # a sample with two modalities: one pair (weight 1), two modalities with the same agreement (1 each)
    torch.testing.assert_close(scores[1][[0, 2]][:, [0, 2]], torch.ones(2, 2))
    assert torch.all(scores[1, [1, 3, 4]] == 0) and torch.all(scores[1, :, [1, 3, 4]] == 0)
    # the model reads the cosines at the InfoNCE temperature: a gap of tau in cosine is a factor e in weight
    sharp = alignment_scores(embeds, mask, "embedding", temperature=TAU)
    torch.testing.assert_close(sharp[0][upper], 10 * (cosine[upper] / TAU).softmax(0))
    torch.testing.assert_close(sharp[0].diagonal(), 5 * (agreement / TAU).softmax(0))


def test_relative_weights_read_each_pair_against_the_batchs_other_products():
    g = torch.Generator().manual_seed(14)
    embeds = torch.randn(6, 5, 4, generator=g, requires_grad=True)
    mask = torch.ones(6, 5, dtype=torch.long)
    mask[0, 3] = mask[1, 4] = 0
    scores = alignment_scores(embeds, mask, "relative")
    assert not scores.requires_grad

    features = F.normalize(embeds.detach(), dim=-1)

    def standardised(b: int, i: int, j: int) -> torch.Tensor:
        others = [k for k in range(6) if k != b and mask[k, j]]
        negatives = torch.stack([features[b, i] @ features[k, j] for k in others])
        return (features[b, i] @ features[b, j] - negatives.mean()) / negatives.std(unbiased=False)

    b, present = 2, [0, 1, 2, 3, 4]
    relative = torch.zeros(5, 5)
    for i in present:
        for j in present:
            if i != j:
                relative[i, j] = 0.5 * (standardised(b, i, j) + standardised(b, j, i))
    upper = torch.ones(5, 5, dtype=torch.bool).triu(1)
    torch.testing.assert_close(scores[b][upper], 10 * relative[upper].softmax(0))
    torch.testing.assert_close(scores[b].diagonal(), 5 * (relative.sum(-1) / 4).softmax(0))
    assert torch.all(scores[0, 3] == 0) and torch.all(scores[1, :, 4] == 0)
    # a relative temperature divides the standard deviations before both softmaxes
    sharp = alignment_scores(embeds, mask, "relative", relative_temperature=0.25)
    torch.testing.assert_close(sharp[b][upper], 10 * (relative[upper] / 0.25).softmax(0))
    torch.testing.assert_close(sharp[b].diagonal(), 5 * (relative.sum(-1) / 4 / 0.25).softmax(0))
    # a pair that fewer than two other products hold has nothing to be read against: score 0, weight 1
    lonely = alignment_scores(embeds[:2], torch.ones(2, 5, dtype=torch.long), "relative")
    torch.testing.assert_close(lonely, torch.ones(2, 5, 5))


def test_relative_weights_find_the_unrelated_table_that_the_cosine_level_hides():
    """Half of the batch shows another product's table, and caption and table share a direction for every
    product (as the noisy sample's pretrained models do: there the embedding S gave the table's pairs 1.25 of
    weight with an unrelated table and 1.35 with the listing's own). Read at the model's temperature 0.07, the
    embedding S follows that shared level and even raises the unrelated caption-table pair; the relative S
    reads each pair against the batch's other products, so only the unrelated tables lose weight."""
    g = torch.Generator().manual_seed(15)
    latent = torch.randn(64, 16, generator=g)
    shared = 2.0 * torch.randn(16, generator=g)
    text = latent + 0.5 * torch.randn(64, 16, generator=g) + shared
    image = latent + 0.5 * torch.randn(64, 16, generator=g)
    table = latent + 0.5 * torch.randn(64, 16, generator=g) + shared
    unrelated = torch.arange(64) < 32
    table[unrelated] = table[unrelated].roll(1, dims=0)
    silent = torch.zeros(64, 16)
    embeds = torch.stack([text, table, image, silent, silent], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * 64)

    def table_pairs(mode: str) -> tuple[float, float]:
        scores = alignment_scores(embeds, mask, mode, temperature=0.07)
        weights = 0.5 * (scores[:, 0, 1] + scores[:, 1, 2])
        return weights[unrelated].mean().item(), weights[~unrelated].mean().item()

    unrelated_weight, own_weight = table_pairs("embedding")
    assert unrelated_weight > 0.9 * own_weight and unrelated_weight > 1  # blind to which table is unrelated
    unrelated_weight, own_weight = table_pairs("relative")
    assert unrelated_weight < 0.5 and own_weight > 0.9


def _aligned_batch(
    generator: torch.Generator, batch: int = 8, noise: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0)
) -> torch.Tensor:
    """(B, 5, 6): four modalities are views of one latent per sample with `noise` added, audio is noise."""
    latent = torch.randn(batch, 6, generator=generator)
    views = [latent + level * torch.randn(batch, 6, generator=generator) for level in noise]
    return torch.stack([*views, torch.randn(batch, 6, generator=generator)], dim=1)


@pytest.mark.parametrize("reading", ["loss", "logits"])
def test_optimising_a_bounded_s_alone_cannot_push_the_loss_below_its_bound(reading):
    """Frozen features, S alone optimised hard on the loss it weights. The learned S drives the loss far below
    anything the features justify; the bounded S stays above the lowest pair loss when it weights the losses
    and above log(2(N-1)) - 2 / tau, the floor of unweighted Eq. 2, when it scales the logits."""
    embeds = _aligned_batch(torch.Generator().manual_seed(12))
    batch = embeds.shape[0]
    mask = torch.ones(batch, 5, dtype=torch.long)
    everyone = torch.ones(batch, dtype=torch.bool)
    pair_losses = [
        pairwise_contrastive_loss(embeds[:, i], embeds[:, j], everyone, TAU)[0]
        for i in range(5)
        for j in range(i + 1, 5)
    ]
    bound = min(pair_losses).item() if reading == "loss" else math.log(2 * (batch - 1)) - 2 / TAU

    def optimised_loss(mode: str) -> float:
        parameter = torch.ones(5, 5, requires_grad=True)
        optimiser = torch.optim.Adam([parameter], lr=0.3)
        for _ in range(300):
            scores = alignment_scores(embeds, mask, mode, parameter)
            loss = simcl_contrastive_loss(embeds, mask, TAU, alignment=scores, reading=reading)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return loss.item()

    assert optimised_loss("learned") < bound - 10
    assert optimised_loss("bounded") >= bound - 1e-5


@pytest.mark.parametrize("mode", ["bounded", "embedding", "relative"])
@pytest.mark.parametrize("reading", ["loss", "logits"])
def test_a_pure_noise_modality_loses_weight_and_the_informative_pairs_do_not(mode, reading):
    """Linear encoders and S trained together on fresh batches in which audio is pure noise and the other four
    modalities are equally informative: every pair with audio ends below its starting weight 1, every other
    pair above it. (Neither mode can tell noise from a pair that is only hard to align: both move weight away
    from whatever is least aligned, or has the highest loss.)"""
    torch.manual_seed(0)
    encoders = torch.nn.ModuleList(torch.nn.Linear(6, 8) for _ in range(5))
    parameter = torch.ones(5, 5, requires_grad=True)
    optimiser = torch.optim.Adam([*encoders.parameters(), parameter], lr=0.05)
    generator = torch.Generator().manual_seed(13)
    mask = torch.ones(16, 5, dtype=torch.long)

    def encode() -> tuple[torch.Tensor, torch.Tensor]:
        inputs = _aligned_batch(generator, batch=16, noise=(0.2,) * 4)
        embeds = torch.stack([encoder(inputs[:, m]) for m, encoder in enumerate(encoders)], dim=1)
        parameter_or_none = parameter if mode == "bounded" else None
        return embeds, alignment_scores(embeds, mask, mode, parameter_or_none, temperature=TAU)

    for _ in range(60):
        embeds, scores = encode()
        loss = simcl_contrastive_loss(embeds, mask, TAU, alignment=scores, reading=reading)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        scores = encode()[1].mean(0)
    noise_pairs = scores[:4, 4]
    informative_pairs = scores[:4, :4][torch.ones(4, 4, dtype=torch.bool).triu(1)]
    assert noise_pairs.max() < 0.9, scores
    assert informative_pairs.min() > 1.1, scores


def test_sum_reduction_and_s_on_the_losses():
    g = torch.Generator().manual_seed(14)
    embeds = torch.randn(4, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 1], [1, 0, 1, 0, 0], [1, 1, 1, 1, 0]])
    mean = simcl_contrastive_loss(embeds, mask, TAU)
    torch.testing.assert_close(
        simcl_contrastive_loss(embeds, mask, TAU, reduction="sum"), 3 * mean
    )  # 3 pairs

    # S read as a weight: a pair's loss times S; read as a logit scale: a different loss (tau / S)
    twice = torch.full((4, 5, 5), 2.0)
    torch.testing.assert_close(
        simcl_contrastive_loss(embeds, mask, TAU, alignment=twice, reading="loss"), 2 * mean
    )
    torch.testing.assert_close(
        simcl_contrastive_loss(embeds, mask, TAU, alignment=twice, reading="logits"),
        simcl_contrastive_loss(embeds, mask, TAU / 2),
    )
    with pytest.raises(ValueError, match=r"^reduction must be one of .*'max'"):
        simcl_contrastive_loss(embeds, mask, TAU, reduction="max")
    with pytest.raises(ValueError, match=r"^reading must be one of .*'gain'"):
        simcl_contrastive_loss(embeds, mask, TAU, reading="gain")


# ------------------------------------------------------------------------------------------------- processes


def test_gather_is_the_identity_in_a_single_process():
    tensor = torch.randn(3, 2)
    gathered, offset = gather_with_grad(tensor)
    assert gathered is tensor and offset == 0


def _distributed_worker(
    rank: int, world_size: int, port: int, a: torch.Tensor, b: torch.Tensor, results
) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    rows = slice(rank * 2, rank * 2 + 2)
    local_a, local_b = a[rows].clone().requires_grad_(), b[rows].clone().requires_grad_()
    loss, count = pairwise_contrastive_loss(
        local_a, local_b, torch.ones(2, dtype=torch.bool), TAU, "negatives"
    )
    loss.backward()
    results[rank] = (loss.detach(), count, local_a.grad, local_b.grad)
    dist.destroy_process_group()


@pytest.mark.slow
def test_negatives_come_from_every_process_with_gradients():
    """Two gloo processes with 2 samples each = one process with all 4: per-rank losses average to the full
    loss, and each rank's gradient is that of the summed losses (which DDP then averages)."""
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_distributed_worker, args=(2, port, a, b, results), nprocs=2, start_method="spawn")
        results = dict(results)

    full_a, full_b = a.clone().requires_grad_(), b.clone().requires_grad_()
    full, _ = pairwise_contrastive_loss(full_a, full_b, torch.ones(4, dtype=torch.bool), TAU, "negatives")
    full.backward()
    torch.testing.assert_close((results[0][0] + results[1][0]) / 2, full)
    for rank in (0, 1):
        rows = slice(rank * 2, rank * 2 + 2)
        assert results[rank][1] == 2
        torch.testing.assert_close(results[rank][2], 2 * full_a.grad[rows])
        torch.testing.assert_close(results[rank][3], 2 * full_b.grad[rows])


def test_one_usable_pair_is_the_whole_loss_and_defaults_are_eq2_and_feature_s():
    g = torch.Generator().manual_seed(9)
    embeds = torch.randn(3, 5, 8, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 0, 1, 0, 0], [1, 0, 0, 0, 1]])  # only text-image has 2 samples
    expected = reference_eq2(embeds[:, 0], embeds[:, 2], [True, True, False], TAU)
    assert simcl_contrastive_loss(embeds, mask, TAU).item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(alignment_scores(embeds, mask), alignment_scores(embeds, mask, "feature"))


def test_bad_settings_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"^denominator must be one of .*'both'"):
        pairwise_contrastive_loss(torch.eye(2), torch.eye(2), torch.ones(2), TAU, "both")
    with pytest.raises(
        ValueError, match=r'^alignment mode "learned" needs the \(M, M\) alignment_parameter$'
    ):
        alignment_scores(torch.zeros(1, 5, 2), torch.ones(1, 5), "learned")
