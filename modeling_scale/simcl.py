"""SIMCL (Self-harmonized Inter-Modality Contrastive Learning): alignment matrix S and pairwise losses.

Everything that couples modalities *through the loss* lives here, batched and free of host-device syncs:

- `alignment_scores` builds S (B, M, M) per sample, in the released code's "feature" mode, the paper's
  "learned" mode, or one of three bounded modes ("bounded", "embedding", "relative") whose weights average
  1, with missing modalities excluded before the softmax and their rows/columns zeroed.
- `pairwise_contrastive_loss` is the paper's Eq. 2 (denominator = the 2(N-1) cross-modal negatives only) or
  the standard symmetric InfoNCE, optionally with each sample's logits (Eq. 3's letter) or loss scaled by
  S[i, j].
- `simcl_contrastive_loss` averages (or sums, as Eq. 3) it over the modality pairs that have at least one
  usable sample.
- `multiview_contrastive_loss` (our subset-consistency term, not SIMCL's) is NT-Xent over several views of
  each product.
- `relational_distillation_loss` (ours too) keeps the product embeddings' neighbourhoods those of a frozen
  teacher (the text encoder SCALE starts from).
- `gather_with_grad` brings the negatives of every process into the loss (as FLAVA does), keeping gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist

from .configuration_scale import (
    ALIGNMENT_MODES,
    CONTRASTIVE_DENOMINATORS,
    CONTRASTIVE_REDUCTIONS,
    SIMCL_WEIGHT_READINGS,
)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to `mask`; rows without any allowed entry become all zeros.

    A large finite negative (not -inf) keeps fully masked rows and their gradients finite.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


def _fixed_total_weights(scores: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
    """(B, M, M) scores -> weights that average 1: a softmax over each sample's present pairs (i < j) times
    their number, mirrored below the diagonal, and a softmax over its present modalities times their number
    on the diagonal; zero wherever a modality is missing."""
    present = modality_mask.bool()
    upper = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).triu(1)
    pairs = (present[:, :, None] & present[:, None, :] & upper).flatten(1)
    pair_weights = _masked_softmax(scores.flatten(1), pairs) * pairs.sum(-1, keepdim=True)
    pair_weights = pair_weights.view(scores.shape)
    diagonal = scores.diagonal(dim1=1, dim2=2)
    modality_weights = _masked_softmax(diagonal, present) * present.sum(-1, keepdim=True)
    return pair_weights + pair_weights.transpose(1, 2) + torch.diag_embed(modality_weights)


def cross_product_cosines(features: torch.Tensor, modality_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B, M, P) L2-normalised features -> (M, M, B, B) cosines between sample b's modality i and sample k's
    modality j, and the (M, M, B, B) mask of the pairs with b != k where both modalities are present."""
    present = modality_mask.bool().T  # (M, B)
    cosines = torch.einsum("bip,kjp->ijbk", features, features)
    others = ~torch.eye(features.shape[0], dtype=torch.bool, device=features.device)
    return cosines, present[:, None, :, None] & present[None, :, None, :] & others


def cross_product_cosine_sums(
    modality_embeds: torch.Tensor, modality_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, M) counts, sums and sums of squares (float64) of the cosines between one product's modality i and
    another's modality j over a batch: what `ScaleAlignmentReference.fit` reads."""
    cosines, pairs = cross_product_cosines(F.normalize(modality_embeds.float(), dim=-1), modality_mask)
    cosines = cosines.double() * pairs
    return pairs.sum((-1, -2)).double(), cosines.sum((-1, -2)), cosines.square().sum((-1, -2))


def _batch_relative_agreement(
    features: torch.Tensor,
    modality_mask: torch.Tensor,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, M, P) L2-normalised features -> (B, M, M): how many standard deviations a sample's cosine between
    its modalities i and j stands above the cosines of its modality i with the batch's other products'
    modality j (averaged with the j-to-i direction): the confidence with which the pair tells its own product
    from the others, free of the cosine level the pair has for every product. 0 where fewer than two other
    products have the modality. The batch is this process's: S stays a per-process quantity.

    With `reference` ((M, M) mean and standard deviation of the pairs' cosines across products, fitted on
    many products: `ScaleAlignmentReference`), the cosine is read against it instead of the batch, so a
    product's S no longer depends on the products batched with it (a lone query gets its own)."""
    if reference is not None:
        mean, std = reference
        own = torch.einsum("bip,bjp->bij", features, features)
        present = modality_mask.bool()
        relative = (own - mean.to(own.dtype)) / std.to(own.dtype).clamp(min=1e-6)
        return relative * (present[:, :, None] & present[:, None, :])
    cosines, negatives = cross_product_cosines(features, modality_mask)
    count = negatives.sum(-1)
    mean = (cosines * negatives).sum(-1) / count.clamp(min=1)
    spread = ((cosines - mean[..., None]).square() * negatives).sum(-1) / count.clamp(min=1)
    relative = (cosines.diagonal(dim1=2, dim2=3) - mean) / spread.sqrt().clamp(min=1e-6)
    relative = relative.masked_fill(count < 2, 0.0)
    return (0.5 * (relative + relative.transpose(0, 1))).permute(2, 0, 1)


def alignment_scores(
    modality_embeds: torch.Tensor,
    modality_mask: torch.Tensor,
    mode: str = "feature",
    alignment_parameter: torch.Tensor | None = None,
    temperature: float = 1.0,
    reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    relative_temperature: float = 1.0,
) -> torch.Tensor:
    """The modality alignment matrix S of SIMCL, one (M, M) matrix per sample.

    Args:
        modality_embeds: (B, M, P) pooled per-modality features (rows of missing modalities are ignored).
        modality_mask: (B, M) 1 where the sample has the modality.
        mode: `"feature"` — as the authors' released code: S = cos(f_i, f_j) per sample,
            S <- S * softmax(S, -1), rows L2-normalised. `"learned"` — as the paper's text: a free (M, M)
            parameter S, S <- S * softmax(S, -1), multiplied by the number k of modalities present in the
            row, so that the all-ones initialisation (`ScalePreTrainedModel._init_weights`) weights every term
            by exactly 1. The paper's zero initialisation makes S * softmax(S) = 0, which zeroes every logit:
            the encoders get no gradient and S only drifts on noise until it leaves 0. Nothing bounds it: S
            trained on the loss it weights lowers that loss by scaling aligned pairs' logits up (Eq. 2 is
            unbounded below) and switching unaligned pairs off.
            The two bounded modes replace S * softmax(S) by a softmax alone, over each sample's present pairs
            (i < j, mirrored) and, separately, over its present modalities (the diagonal), times their number:
            the weights are >= 0 and average 1, so S cannot scale every term up or switch every term off.
            `"bounded"` — the softmax of the symmetrised free parameter (the paper's learned S; any constant
            start is the unweighted loss). Trained on the loss it weights, it still moves weight to the
            lowest-loss terms, but, with every pair present, the mean of the weighted pair losses stays >= the
            lowest pair loss when S multiplies the losses, and >= log(2(N-1)) - 2 / tau, the floor of the
            unweighted Eq. 2, when S scales the logits (each unit of weight lowers an anchor's Eq. 2 term by
            at most 2 / tau). `"embedding"` — the abstract's "importance of each modality learned directly
            from the modality embeddings", as the released code but bounded: the softmax of each sample's
            cos(f_i, f_j) / `temperature` over its present pairs, and on the diagonal of each modality's mean
            cosine with the sample's other modalities. It is computed from detached features, so the loss
            never rewards the encoders for misaligning a pair to shrink its weight; a pair the encoders cannot
            align (a noisy modality) falls behind the aligned ones, by a factor e per `temperature` of cosine.
            `"relative"` — the same softmaxes over how many standard deviations each sample's cosine between
            two modalities stands above that modality pair's cosines with the batch's other products (no
            temperature: the unit is the spread). Cosines carry a level shared by every product of a pair
            (on the noisy sample, caption-table pairs sat higher than caption-photo ones for every listing),
            which the embedding S follows; the relative score cancels it, so the weight moves away from the
            pairs that do not tell this product from the others: an unrelated table, a modality that is noise.
        alignment_parameter: (M, M) learnable scores, required for `"learned"` and `"bounded"`.
        temperature: divides the cosines of `"embedding"` before its softmaxes (the model passes the InfoNCE
            tau, the scale at which the loss reads the same cosines).
        reference: `"relative"` only: (M, M) mean and standard deviation of each pair's cosines across
            products to read a sample's cosines against, instead of the batch's other products.
        relative_temperature: `"relative"` only: divides the scores (standard deviations) before the
            softmaxes; below 1 it widens the gap between pairs that tell the product apart and those that do
            not (a pair 1 standard deviation behind gets e^(-1 / relative_temperature) of the weight).

    Returns:
        (B, M, M) S in float32; rows and columns of missing modalities are zero, and a missing modality never
        enters another modality's softmax.
    """
    pair_mask = modality_mask.bool()[:, :, None] & modality_mask.bool()[:, None, :]
    if mode == "feature":
        features = F.normalize(modality_embeds.float(), dim=-1)
        scores = features @ features.transpose(1, 2)
        harmonised = scores * _masked_softmax(scores, pair_mask)
        return F.normalize(harmonised, dim=-1)
    if mode in ("embedding", "relative"):
        features = F.normalize(modality_embeds.detach().float(), dim=-1)
        if mode == "relative":
            scores = _batch_relative_agreement(features, modality_mask, reference) / relative_temperature
        else:
            scores = features @ features.transpose(1, 2) / temperature
        others = pair_mask & ~torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)
        agreement = (scores * others).sum(-1) / others.sum(-1).clamp(min=1)
        scores = scores.diagonal_scatter(agreement, dim1=1, dim2=2)
        return _fixed_total_weights(scores, modality_mask)
    if mode in ("learned", "bounded"):
        if alignment_parameter is None:
            raise ValueError(f'alignment mode "{mode}" needs the (M, M) alignment_parameter')
        if mode == "bounded":
            symmetric = 0.5 * (alignment_parameter + alignment_parameter.T)
            return _fixed_total_weights(symmetric.float().expand(pair_mask.shape), modality_mask)
        scores = alignment_parameter.float().expand(pair_mask.shape)
        present = pair_mask.sum(dim=-1, keepdim=True)
        return scores * _masked_softmax(scores, pair_mask) * present
    raise ValueError(f"alignment mode must be one of {ALIGNMENT_MODES}, got {mode!r}")


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate `tensor` (batch first) from every process, gradients flowing back to each process's part.

    Returns the gathered tensor and the offset of this process's rows in it. Without an initialised process
    group of more than one process, it is the identity (offset 0). All processes must pass the same batch
    size.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0), dist.get_rank() * tensor.shape[0]


def pairwise_contrastive_loss(
    embeds_a: torch.Tensor,
    embeds_b: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
    denominator: str = "negatives",
    logit_scale: torch.Tensor | None = None,
    loss_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive loss of one modality pair (a, b) over the samples that have both.

    With sim = cosine / tau and sample i's row scaled by `logit_scale[i]` (S[i, a, b] of Eq. 3's letter):

    - `"negatives"` (paper Eq. 2): loss_i = -sim(a_i, b_i) + log( sum_{k != i} exp sim(a_i, b_k)
      + sum_{k != i} exp sim(b_i, a_k) ), i.e. one loss per positive pair whose denominator holds only the
      2(N-1) cross-modal negatives.
    - `"all"` (standard symmetric InfoNCE, as CLIP): loss_i = 1/2 [CE(a_i -> b) + CE(b_i -> a)], each softmax
      over the positive and the N-1 negatives.

    Negatives come from every process (`gather_with_grad`); samples lacking a or b are neither anchors nor
    negatives. An anchor needs at least one negative, so a pair with fewer than two usable samples gives 0.
    `loss_weight[i]` multiplies anchor i's loss (S[i, a, b] read as a weight of the term rather than a scale
    of its logits).

    Returns:
        (mean loss over the usable local anchors in float32, number of those anchors as a float tensor).
    """
    if denominator not in CONTRASTIVE_DENOMINATORS:
        raise ValueError(f"denominator must be one of {CONTRASTIVE_DENOMINATORS}, got {denominator!r}")
    valid = valid.bool()
    a = F.normalize(embeds_a.float(), dim=-1)
    b = F.normalize(embeds_b.float(), dim=-1)
    all_a, offset = gather_with_grad(a)
    all_b, _ = gather_with_grad(b)
    all_valid = gather_with_grad(valid.float())[0].bool()

    local = torch.arange(a.shape[0], device=a.device)
    positive_column = F.one_hot(local + offset, all_a.shape[0]).bool()  # (B, G)
    scale = 1.0 if logit_scale is None else logit_scale.float()[:, None]
    logits_ab = scale * (a @ all_b.T) / temperature  # a_i against every b_k
    logits_ba = scale * (b @ all_a.T) / temperature  # b_i against every a_k
    positive = (logits_ab * positive_column).sum(dim=-1)

    candidates = all_valid[None, :]
    negatives = candidates & ~positive_column
    very_negative = torch.finfo(logits_ab.dtype).min
    if denominator == "negatives":
        denominator_logits = torch.cat(
            [
                logits_ab.masked_fill(~negatives, very_negative),
                logits_ba.masked_fill(~negatives, very_negative),
            ],
            -1,
        )
        per_anchor = torch.logsumexp(denominator_logits, dim=-1) - positive
    else:
        log_z_ab = torch.logsumexp(logits_ab.masked_fill(~candidates, very_negative), dim=-1)
        log_z_ba = torch.logsumexp(logits_ba.masked_fill(~candidates, very_negative), dim=-1)
        per_anchor = 0.5 * (log_z_ab + log_z_ba) - positive
    if loss_weight is not None:
        per_anchor = per_anchor * loss_weight.float()

    usable = valid & (all_valid.sum() >= 2)
    count = usable.sum().float()
    loss = torch.where(usable, per_anchor, 0.0).sum() / count.clamp(min=1.0)
    return loss, count


def multiview_contrastive_loss(views: torch.Tensor, valid: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) over V views of each product, e.g. its embedding fused from all its modalities and
    from random subsets of them.

    Each view is an anchor; its positives are the same product's other V - 1 views (the loss is their mean
    -log softmax), its candidates every view of every usable product but itself. Views of the same kind
    belong to the negatives too (another product's caption-only view against this one's), so a view's
    modality set cannot tell products apart: a symmetric InfoNCE between the full and one subset view never
    puts two subset views side by side.

    Args:
        views: (B, V, D) embeddings, V >= 2; negatives come from every process (`gather_with_grad`).
        valid: (B,) products that take part (neither anchors nor negatives otherwise).

    Returns:
        The mean over the usable local anchors (float32); 0 with fewer than two usable products.
    """
    batch_size, num_views = views.shape[:2]
    if num_views < 2:
        raise ValueError(f"multiview_contrastive_loss needs at least 2 views per product, got {num_views}")
    valid = valid.bool()
    z = F.normalize(views.float(), dim=-1)
    all_z, offset = gather_with_grad(z)
    all_valid = gather_with_grad(valid.float())[0].bool()
    logits = torch.einsum("bvd,gwd->bvgw", z, all_z) / temperature  # (B, V, G, V)

    rows = torch.arange(batch_size, device=z.device) + offset
    same_product = F.one_hot(rows, all_z.shape[0]).bool()[:, None, :, None]
    same_view = torch.eye(num_views, dtype=torch.bool, device=z.device)[None, :, None, :]
    itself = same_product & same_view
    candidates = all_valid[None, None, :, None] & ~itself
    positives = same_product & ~itself
    log_z = torch.logsumexp(logits.masked_fill(~candidates, torch.finfo(logits.dtype).min), dim=(-2, -1))
    positive_logits = (logits * positives).sum(dim=(-2, -1)) / (num_views - 1)
    per_anchor = log_z - positive_logits  # (B, V)

    usable = valid & (all_valid.sum() >= 2)
    count = usable.sum().float() * num_views
    return torch.where(usable[:, None], per_anchor, 0.0).sum() / count.clamp(min=1.0)


def relational_distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) between each product's softmax over its cosine similarities to the batch's other
    products, as seen by a frozen teacher and by the model (relational knowledge distillation, as in SEED /
    CompRess).

    Only the relations are matched, never the vectors, so the teacher's width and space need not be the
    model's, and the other modalities stay free to add what the teacher does not know. Every student view of
    a product (e.g. its full and subset `product_embeds`) is held to the same teacher row.

    Args:
        student: (B, V, D) or (B, D) embeddings; (B, D) is one view.
        teacher: (B, Dt) frozen embeddings (no gradient flows into them).
        valid: (B,) products the teacher saw (e.g. those with a caption); the others are neither rows nor
            columns.

    Returns:
        The mean over the usable local products and views (float32); 0 with fewer than two usable products.
    """
    views = student if student.dim() == 3 else student[:, None]
    valid = valid.bool()
    z = F.normalize(views.float(), dim=-1)
    target = F.normalize(teacher.detach().float(), dim=-1)
    all_z, offset = gather_with_grad(z)
    all_target = gather_with_grad(target)[0]
    all_valid = gather_with_grad(valid.float())[0].bool()

    rows = torch.arange(z.shape[0], device=z.device) + offset
    columns = all_valid[None, :] & ~F.one_hot(rows, all_z.shape[0]).bool()  # (B, G)
    fill = torch.finfo(torch.float32).min
    with torch.autocast(z.device.type, enabled=False):  # float32 under bf16 mixed precision too
        teacher_logits = (target @ all_target.T / temperature).masked_fill(~columns, fill)
        teacher_log_probs = torch.log_softmax(teacher_logits, dim=-1)
        student_logits = torch.einsum("bvd,gvd->bvg", z, all_z) / temperature
        student_log_probs = torch.log_softmax(student_logits.masked_fill(~columns[:, None], fill), dim=-1)
    divergence = teacher_log_probs.exp()[:, None] * (teacher_log_probs[:, None] - student_log_probs)
    per_row = torch.where(columns[:, None], divergence, 0.0).sum(dim=-1)  # (B, V)

    usable = valid & (all_valid.sum() >= 2)
    count = usable.sum().float() * views.shape[1]
    return torch.where(usable[:, None], per_row, 0.0).sum() / count.clamp(min=1.0)


def simcl_contrastive_loss(
    modality_embeds: torch.Tensor,
    modality_mask: torch.Tensor,
    temperature: float,
    denominator: str = "negatives",
    alignment: torch.Tensor | None = None,
    reduction: str = "mean",
    reading: str = "logits",
) -> torch.Tensor:
    """SIMCL's inter-modality term: `pairwise_contrastive_loss` over the M(M-1)/2 modality pairs.

    Args:
        modality_embeds: (B, M, P) contrastive features of every modality.
        modality_mask: (B, M) which modalities each sample has.
        alignment: (B, M, M) S; pair (i, j) with i < j is weighted by S[:, i, j]. `None` gives the unweighted
            loss (the `use_simcl=False` ablation).
        reduction: `"mean"` over the usable pairs, or `"sum"` as Eq. 3 writes it.
        reading: `"logits"` scales each sample's logits by S (Eq. 3's letter), `"loss"` its loss.

    Pairs without any usable sample (in this process) are left out; 0 when no pair is usable.
    """
    if reduction not in CONTRASTIVE_REDUCTIONS:
        raise ValueError(f"reduction must be one of {CONTRASTIVE_REDUCTIONS}, got {reduction!r}")
    if reading not in SIMCL_WEIGHT_READINGS:
        raise ValueError(f"reading must be one of {SIMCL_WEIGHT_READINGS}, got {reading!r}")
    num_modalities = modality_embeds.shape[1]
    pair_losses, pair_used = [], []
    for i in range(num_modalities):
        for j in range(i + 1, num_modalities):
            weight = None if alignment is None else alignment[:, i, j]
            loss, count = pairwise_contrastive_loss(
                modality_embeds[:, i],
                modality_embeds[:, j],
                modality_mask[:, i].bool() & modality_mask[:, j].bool(),
                temperature,
                denominator,
                weight if reading == "logits" else None,
                weight if reading == "loss" else None,
            )
            pair_losses.append(loss)
            pair_used.append((count > 0).float())
    used = torch.stack(pair_used)
    total = (torch.stack(pair_losses) * used).sum()
    return total if reduction == "sum" else total / used.sum().clamp(min=1.0)


__all__ = [
    "alignment_scores",
    "gather_with_grad",
    "multiview_contrastive_loss",
    "pairwise_contrastive_loss",
    "simcl_contrastive_loss",
]
