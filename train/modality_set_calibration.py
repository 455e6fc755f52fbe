"""Fit SCALE's modality weights (`ScaleModalityWeights`), per-modality-set map (`ScaleModalitySetNorm`)
and SIMCL's alignment reference (`ScaleAlignmentReference`) on the model's own embeddings, without labels.

`train/pretrain.py` runs it after training. For a checkpoint trained before it existed:

    python -m train.modality_set_calibration --model_dir outputs/pretrain --data_dir outputs/m5product

Each product is read and encoded once. A seeded random choice of the pretraining split (each process embeds
its share) is fused from all its modalities and from `num_views` random subsets of them (each modality kept
with probability `keep_probability`, at least one, as the subset-consistency loss draws them); the pooled JCT
states of every view are kept, since the weights and the set map act only after that pooling.

The weights first: for up to `agreement_products` of those products (gathered from every process), each
modality's contrastive features give its cosine similarities between products, and each modality pair's
agreement is the correlation of the two similarity lists over the products having both
(`modality_agreement`, a representational similarity analysis); `ScaleModalityWeights.fit` weighs each
modality by the share of its similarities the others predict. Then the set statistics, those of the weighted
embeddings: for up to `max_products`, the kept states are fused with the fitted weights (the norm still the
identity), and the counts, sums and sums of outer products of the raw embeddings per modality set, and of the
full views alone (the reference: products as a gallery holds them), are summed over every process;
`ScaleModalitySetNorm.fit` turns them into each set's mean, standard deviation and transport onto the
reference's covariance. Products without any readable modality are left out. Kept states take
(products x (num_views + 1) x 5 x hidden) numbers: 315 MB for 8,192 products at the paper's preset in bf16
(629 MB in float32).
In the same pass, the cosines between one product's modality i and the other products' modality j in each
batch give each pair's mean and standard deviation across products (`ScaleAlignmentReference.fit`): the
reference a model in eval mode reads its relative S against. All three are reset first.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_scale import MODALITIES
from modeling_scale.collator_scale import draw_modality_subset
from modeling_scale.modeling_scale import modality_set_codes
from modeling_scale.simcl import cross_product_cosine_sums
from train.data import model_inputs
from train.embeddings import default_device, inference_autocast, product_loader

CALIBRATION_PRODUCTS = 8192  # products fused for the set statistics and the alignment reference
AGREEMENT_PRODUCTS = 2048  # of those, products whose modality agreement fits the weights


def modality_set_name(code: int) -> str:
    """`text+image` for the set whose bits are those of text and image (`modality_set_codes`)."""
    return "+".join(name for index, name in enumerate(MODALITIES) if code >> index & 1) or "none"


def modality_weight_names(model: torch.nn.Module) -> dict[str, float]:
    """`model`'s modality weights by modality name, rounded for logs and summaries."""
    weights = model.base_model.modality_weights.weights.tolist()
    return {name: round(weight, 4) for name, weight in zip(MODALITIES, weights, strict=True)}


def modality_agreement(
    features: torch.Tensor, present: torch.Tensor, min_products: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(5, 5) agreement of each modality pair and (5, 5) bool: whether it was measured, from (N, 5, D)
    per-modality `features` and the (N, 5) `present` mask.

    Over the products having both modalities (at least `min_products`), each modality's features are
    centred and their cosine similarities between every two products listed; the agreement is the Pearson
    correlation of the two lists: 1 when the modalities see the same neighbourhoods, about 0 when one of them
    is noise, whatever the spaces they live in."""
    size = features.shape[1]
    agreement = torch.zeros(size, size, dtype=torch.float64)
    measured = torch.zeros(size, size, dtype=torch.bool)
    present = present.bool().cpu()
    for first, second in itertools.combinations(range(size), 2):
        both = present[:, first] & present[:, second]
        if int(both.sum()) < min_products:
            continue
        pairs = torch.triu_indices(int(both.sum()), int(both.sum()), offset=1)
        similarities = []
        for modality in (first, second):
            own = features[both, modality].double().cpu()
            own = F.normalize(own - own.mean(dim=0), dim=-1)
            similarities.append((own @ own.T)[pairs[0], pairs[1]])
        correlation = torch.corrcoef(torch.stack(similarities))[0, 1]
        if torch.isfinite(correlation):
            agreement[first, second] = agreement[second, first] = correlation
            measured[first, second] = measured[second, first] = True
    return agreement, measured


@torch.no_grad()
def encode_calibration_products(
    model: torch.nn.Module,
    batches,
    for_weights: torch.Tensor,
    for_sets: torch.Tensor,
    num_views: int,
    keep_probability: float,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """One pass of the encoders and the JCT over the collated `batches`, whose rows are flagged in order by
    `for_weights` and `for_sets` (N,) bool. Returns the contrastive features (n, 5, D) and presence (n, 5) of
    the rows for the weights; the pooled JCT states (n, V + 1, 5, H), kept modalities and modality sets
    (n, V + 1, 5) of the rows for the set statistics, each fused from all its modalities and `num_views`
    subsets; and over those rows, the (5, 5) counts, sums and sums of squares of the cross-product cosines of
    the modality features within each batch. The weights and the set map act after the JCT's pooling, so
    nothing here depends on them: the weights are fitted on this pass's output and the statistics are then
    read from the stored states, without encoding the products again."""
    base = model.base_model
    features, present, views = [], [], []
    pairs = [
        torch.zeros(len(MODALITIES), len(MODALITIES), dtype=torch.float64, device=device) for _ in range(3)
    ]
    offset = 0
    for batch in batches:
        size = len(batch["modality_mask"])
        rows_for_weights = for_weights[offset : offset + size].to(device)
        rows_for_sets = for_sets[offset : offset + size].to(device)
        offset += size
        subsets = draw_modality_subset(
            batch["modality_mask"].bool()[:, None].expand(-1, num_views, -1), keep_probability, generator
        )
        with inference_autocast(device):
            encoding = base._encode(**model_inputs(batch, device))
            pooled, kept, sets = base._pooled_views(encoding, subsets.to(device))
        features.append(encoding.modality_embeds[rows_for_weights].float())
        present.append(encoding.modality_mask[rows_for_weights])
        views.append((pooled[rows_for_sets], kept[rows_for_sets], sets[rows_for_sets]))
        batch_pairs = cross_product_cosine_sums(
            encoding.modality_embeds[rows_for_sets], encoding.modality_mask[rows_for_sets]
        )
        pairs = [total + new for total, new in zip(pairs, batch_pairs, strict=True)]
    if features:  # a process may get no products when there are fewer than processes
        weight_rows = torch.cat(features), torch.cat(present)
        views = tuple(torch.cat(parts) for parts in zip(*views, strict=True))
    else:
        hidden, dim = base.config.hidden_size, base.config.projection_dim
        weight_rows = (
            torch.zeros(0, len(MODALITIES), dim, device=device),
            torch.zeros(0, len(MODALITIES), dtype=torch.bool, device=device),
        )
        kept = torch.zeros(0, num_views + 1, len(MODALITIES), dtype=torch.bool, device=device)
        views = (torch.zeros(0, num_views + 1, len(MODALITIES), hidden, device=device), kept, kept)
    return weight_rows, views, tuple(pairs)


@torch.no_grad()
def fit_modality_weights(
    model: torch.nn.Module, features: torch.Tensor, present: torch.Tensor, accelerator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit `model`'s `ScaleModalityWeights` on per-modality contrastive `features` (N, 5, D) and their
    `present` mask (N, 5), gathered from every process; returns the (5, 5) agreement and measured mask."""
    if accelerator is not None and accelerator.num_processes > 1:
        # padded rows have no modality present, so they join no pair; gloo gathers no bool tensors
        padded = accelerator.pad_across_processes([features, present.float()], dim=0)
        features, present = accelerator.gather(padded)
        present = present.bool()
    agreement, measured = modality_agreement(features, present)
    model.base_model.modality_weights.fit(agreement, measured)
    return agreement, measured


@torch.no_grad()
def modality_set_sums(
    model: torch.nn.Module,
    pooled: torch.Tensor,
    kept: torch.Tensor,
    sets: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
) -> tuple[torch.Tensor, ...]:
    """The statistics `ScaleModalitySetNorm.fit` reads (float64), from the pooled views of
    `encode_calibration_products` fused into `model`'s `product_embeds` (with its current weights): per
    modality set, the (num_sets,) counts, (num_sets, H) sums and (num_sets, H, H) sums of outer products of
    every view; then the same counts and sums by set and the (H, H) sum of outer products of the full views
    alone (the reference)."""
    base = model.base_model
    num_sets, hidden = base.modality_set_norm.mean.shape
    counts = torch.zeros(num_sets, dtype=torch.float64, device=device)
    sums = torch.zeros(num_sets, hidden, dtype=torch.float64, device=device)
    products = torch.zeros(num_sets, hidden, hidden, dtype=torch.float64, device=device)
    reference_counts, reference_sums = torch.zeros_like(counts), torch.zeros_like(sums)
    reference_products = torch.zeros(hidden, hidden, dtype=torch.float64, device=device)
    for start in range(0, len(pooled), batch_size):
        chunk = slice(start, start + batch_size)
        with inference_autocast(device):
            embeds = base._product_embeds(pooled[chunk].flatten(0, 1), kept[chunk].flatten(0, 1))
        embeds = embeds.unflatten(0, kept[chunk].shape[:2])
        full, full_codes = embeds[:, 0].double(), modality_set_codes(sets[chunk, 0])
        full = full[full_codes > 0]
        full_codes = full_codes[full_codes > 0]
        reference_counts.index_add_(0, full_codes, torch.ones_like(full_codes, dtype=torch.float64))
        reference_sums.index_add_(0, full_codes, full)
        reference_products += full.T @ full
        embeds, codes = embeds.flatten(0, 1).double(), modality_set_codes(sets[chunk].flatten(0, 1))
        has_any = codes > 0
        embeds, codes = embeds[has_any], codes[has_any]
        counts.index_add_(0, codes, torch.ones_like(codes, dtype=torch.float64))
        sums.index_add_(0, codes, embeds)
        for code in codes.unique().tolist():
            members = embeds[codes == code]
            products[code] += members.T @ members
    return counts, sums, products, reference_counts, reference_sums, reference_products


def calibrate_modality_sets(
    model: torch.nn.Module,
    processor,
    dataset,
    modalities: Sequence[str] = MODALITIES,
    max_products: int = CALIBRATION_PRODUCTS,
    agreement_products: int = AGREEMENT_PRODUCTS,
    num_views: int = 4,
    keep_probability: float = 0.5,
    batch_size: int = 64,
    num_workers: int = 0,
    prior_count: float = 16.0,
    transport: bool = True,
    seed: int = 0,
    accelerator=None,
    show_progress: bool = True,
) -> dict[str, int]:
    """Fit `model`'s `ScaleModalityWeights` on up to `agreement_products` rows of `dataset` (0: plain mean),
    then its `ScaleModalitySetNorm` and `ScaleAlignmentReference` on up to `max_products` rows, reading and
    encoding each product once (module docstring).

    Args:
        model: a `ScaleModel` or any `ScaleFor*` head model (unwrapped); it is left in the mode it was in.
        transport: move each set onto the full views' distribution (`ScaleModalitySetNorm`); False only
            standardises each set.
        accelerator: when given, each process embeds its share of the products on its device and the sums
            are added over processes; otherwise one process on `default_device()`.

    Returns:
        The number of embeddings per modality set (by name) the statistics were fitted on.
    """
    device = accelerator.device if accelerator is not None else default_device()
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)
    drawn = torch.empty_like(order)
    drawn[order] = torch.arange(len(order))  # each row's place in the seeded draw
    chosen = order[: max(max_products, agreement_products)].sort().values[rank::world]
    base = model.base_model
    was_training = base.training
    base.eval().to(device)
    for module in (base.modality_weights, base.modality_set_norm, base.alignment_reference):
        module.reset()
    loader = product_loader(dataset.select(chosen.tolist()), processor, modalities, batch_size, num_workers)
    progress = tqdm(loader, desc="calibration products", disable=not show_progress)
    (features, present), views, pairs = encode_calibration_products(
        model,
        progress,
        drawn[chosen] < agreement_products,
        drawn[chosen] < max_products,
        num_views,
        keep_probability,
        generator,
        device,
    )
    if agreement_products > 0:
        fit_modality_weights(model, features, present, accelerator)
    sets = modality_set_sums(model, *views, device)
    if accelerator is not None and world > 1:
        sets, pairs = ([accelerator.reduce(t, reduction="sum") for t in group] for group in (sets, pairs))
    counts, sums, products, *reference = sets
    base.modality_set_norm.fit(
        counts, sums, products, reference if transport else None, prior_count=prior_count
    )
    base.alignment_reference.fit(*pairs)
    base.train(was_training)
    return {modality_set_name(code): int(n) for code, n in enumerate(counts.tolist()) if n > 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="saved SCALE folder (any head), updated in place")
    parser.add_argument("--data_dir", required=True, help="converted M5Product folder")
    parser.add_argument("--max_products", type=int, default=CALIBRATION_PRODUCTS)
    parser.add_argument(
        "--agreement_products", type=int, default=AGREEMENT_PRODUCTS, help="0 keeps the plain mean"
    )
    parser.add_argument("--num_views", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--no_transport", action="store_true", help="only standardise each modality set (no transport map)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoConfig, AutoProcessor

    import modeling_scale.modeling_scale as modeling
    from train.components import load_split

    args = parse_args(argv)
    architecture = (AutoConfig.from_pretrained(args.model_dir).architectures or ["ScaleModel"])[0]
    model = getattr(modeling, architecture).from_pretrained(args.model_dir)
    processor = AutoProcessor.from_pretrained(args.model_dir)
    counts = calibrate_modality_sets(
        model,
        processor,
        load_split(args.data_dir, "pretrain", "train"),
        max_products=args.max_products,
        agreement_products=args.agreement_products,
        num_views=args.num_views,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        transport=not args.no_transport,
        seed=args.seed,
    )
    model.save_pretrained(args.model_dir)
    print(f"modality weights: {modality_weight_names(model)}")
    print(f"modality-set statistics fitted on {sum(counts.values())} embeddings: {counts}")


if __name__ == "__main__":
    main()
