"""Fit SCALE's modality weights (`ScaleModalityWeights`), per-modality-set map (`ScaleModalitySetNorm`)
and SIMCL's alignment reference (`ScaleAlignmentReference`) on the model's own embeddings, without labels.

`train/pretrain.py` runs it after training. For a checkpoint trained before it existed:

    python -m train.modality_set_calibration --model_dir outputs/pretrain --data_dir outputs/m5product

First the weights: for up to `agreement_products` products (a seeded random choice; each process embeds its
share and the features are gathered), each modality's contrastive features give its cosine similarities
between products, and each modality pair's agreement is the correlation of the two similarity lists over the
products having both (`modality_agreement`, a representational similarity analysis);
`ScaleModalityWeights.fit` weighs each modality by the share of its similarities the others predict. The set
statistics are those of the weighted embeddings, so they come second: with the norm reset to the identity,
each product of the pretraining split (up to `max_products`, a seeded random choice) is fused from all its
modalities and from `num_views` random subsets of them (each modality kept with probability
`keep_probability`, at least one, as the subset-consistency loss draws them); the counts, sums and sums of
outer products of the raw embeddings per modality set, and of the full views alone (the reference: products
as a gallery holds them), are summed over every process and `ScaleModalitySetNorm.fit` turns them into each
set's mean, standard deviation and transport onto the reference's covariance. Products without any readable
modality are left out.
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
def fit_modality_weights(
    model: torch.nn.Module, batches, device: torch.device, accelerator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit `model`'s `ScaleModalityWeights` on the collated `batches` (their contrastive features and
    presence, gathered from every process); returns the (5, 5) agreement and measured mask."""
    base = model.base_model
    features, present = [], []
    for batch in batches:
        with inference_autocast(device):
            encoding = base._encode(**model_inputs(batch, device))
        features.append(encoding.modality_embeds.float())
        present.append(encoding.modality_mask)
    if features:  # a process may get no products when there are fewer than processes
        features, present = torch.cat(features), torch.cat(present).to(device)
    else:
        features = torch.zeros(0, len(MODALITIES), base.config.projection_dim, device=device)
        present = torch.zeros(0, len(MODALITIES), dtype=torch.bool, device=device)
    if accelerator is not None and accelerator.num_processes > 1:
        # padded rows have no modality present, so they join no pair; gloo gathers no bool tensors
        padded = accelerator.pad_across_processes([features, present.float()], dim=0)
        features, present = accelerator.gather(padded)
        present = present.bool()
    agreement, measured = modality_agreement(features, present)
    base.modality_weights.fit(agreement, measured)
    return agreement, measured


@torch.no_grad()
def modality_set_sums(
    model: torch.nn.Module,
    batches,
    num_views: int,
    keep_probability: float,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Over the collated `batches`, the statistics `ScaleModalitySetNorm.fit` reads (float64): per modality
    set, the (num_sets,) counts, (num_sets, H) sums and (num_sets, H, H) sums of outer products of `model`'s
    `product_embeds`, each product fused from all its modalities and `num_views` subsets; then the same
    counts and sums by set and the (H, H) sum of outer products of the full views alone (the reference);
    and the (5, 5) counts, sums and sums of squares of the cross-product cosines of its modality features."""
    base = model.base_model
    num_sets, hidden = base.modality_set_norm.mean.shape
    counts = torch.zeros(num_sets, dtype=torch.float64, device=device)
    sums = torch.zeros(num_sets, hidden, dtype=torch.float64, device=device)
    products = torch.zeros(num_sets, hidden, hidden, dtype=torch.float64, device=device)
    reference_counts, reference_sums = torch.zeros_like(counts), torch.zeros_like(sums)
    reference_products = torch.zeros(hidden, hidden, dtype=torch.float64, device=device)
    pairs = [
        torch.zeros(len(MODALITIES), len(MODALITIES), dtype=torch.float64, device=device) for _ in range(3)
    ]
    for batch in batches:
        inputs = model_inputs(batch, device)
        views = batch["modality_mask"].bool()[:, None].expand(-1, num_views, -1)
        subsets = draw_modality_subset(views, keep_probability, generator)
        with inference_autocast(device):
            encoding = base._encode(**inputs)  # once for both statistics (`get_subset_product_embeddings`)
            embeds, sets = base._product_views(encoding, subsets.to(device))
        batch_pairs = cross_product_cosine_sums(encoding.modality_embeds, encoding.modality_mask)
        pairs = [total + new for total, new in zip(pairs, batch_pairs, strict=True)]
        full, full_codes = embeds[:, 0].double(), modality_set_codes(sets[:, 0])
        full = full[full_codes > 0]
        full_codes = full_codes[full_codes > 0]
        reference_counts.index_add_(0, full_codes, torch.ones_like(full_codes, dtype=torch.float64))
        reference_sums.index_add_(0, full_codes, full)
        reference_products += full.T @ full
        embeds, codes = embeds.flatten(0, 1).double(), modality_set_codes(sets.flatten(0, 1))
        has_any = codes > 0
        embeds, codes = embeds[has_any], codes[has_any]
        counts.index_add_(0, codes, torch.ones_like(codes, dtype=torch.float64))
        sums.index_add_(0, codes, embeds)
        for code in codes.unique().tolist():
            members = embeds[codes == code]
            products[code] += members.T @ members
    statistics = (counts, sums, products, reference_counts, reference_sums, reference_products)
    return statistics, tuple(pairs)


def calibrate_modality_sets(
    model: torch.nn.Module,
    processor,
    dataset,
    modalities: Sequence[str] = MODALITIES,
    max_products: int = 8192,
    agreement_products: int = 2048,
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
    then its `ScaleModalitySetNorm` and `ScaleAlignmentReference` on up to `max_products` rows (module
    docstring).

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
    base = model.base_model
    was_training = base.training
    base.eval().to(device)
    base.modality_weights.reset()
    if agreement_products > 0:
        for_weights = order[:agreement_products].sort().values.tolist()
        loader = product_loader(
            dataset.select(for_weights[rank::world]), processor, modalities, batch_size, num_workers
        )
        progress = tqdm(loader, desc="modality weights", disable=not show_progress)
        fit_modality_weights(model, progress, device, accelerator)
    chosen = order[:max_products].sort().values.tolist()
    loader = product_loader(
        dataset.select(chosen[rank::world]), processor, modalities, batch_size, num_workers
    )
    base.modality_set_norm.reset()
    base.alignment_reference.reset()
    progress = tqdm(loader, desc="modality-set statistics", disable=not show_progress)
    sets, pairs = modality_set_sums(model, progress, num_views, keep_probability, generator, device)
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
    parser.add_argument("--max_products", type=int, default=8192)
    parser.add_argument("--agreement_products", type=int, default=2048, help="0 keeps the plain mean")
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
