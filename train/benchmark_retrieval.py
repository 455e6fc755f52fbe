"""Retrieval at the paper's scale: 24,054 queries against 1,179,613 products, exact and approximate.

Synthetic embeddings stand in for the model's (same dimension, L2-normalised, clustered like products of
`--categories` categories: a random centre per category plus per-product noise, so that an approximate index
meets the kind of structure it exploits; uniform random vectors would be its worst case). For each method
the script reports build time, search time for all queries, resident memory, and recall@k against the
exact search:

- `exact faiss`: `IndexFlatIP`, exact, blocked BLAS (the evaluation's CPU back-end);
- `exact torch`: `train.retrieval.torch_top_k`, exact, blocks of queries x gallery with a running top-k
  (the evaluation's GPU back-end; here on the CPU, also as a correctness check against FAISS);
- each `--indexes` factory string through `build_faiss_index` (IVF / SQ / PQ / HNSW).

Exact search over all queries costs Q x G x D multiply-adds (21.8 TFLOP at D = 384); with `--query_fraction`
below 1 the exact methods run on that share of the queries and their time is extrapolated linearly (exact
search time is linear in the number of queries), which the output says. Recall is always measured on the
queries the exact search ran on.

    python train/benchmark_retrieval.py --dim 384 --query_fraction 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from train.retrieval import build_faiss_index, faiss_top_k, recall_at_k, torch_top_k

PAPER_GALLERY = 1_179_613
PAPER_QUERIES = 24_054


def resident_gib() -> float:
    """Current resident memory of this process (GiB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def clustered_embeddings(
    count: int, dim: int, centres: np.ndarray, spread: float, rng: np.random.Generator, chunk: int = 131072
) -> np.ndarray:
    """`count` unit vectors, each a random category centre plus Gaussian noise, built in chunks."""
    output = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        rows = centres[rng.integers(0, len(centres), size)] + spread * rng.standard_normal(
            (size, dim), dtype=np.float32
        )
        output[start : start + size] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return output


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gallery", type=int, default=PAPER_GALLERY)
    parser.add_argument("--queries", type=int, default=PAPER_QUERIES)
    parser.add_argument("--dim", type=int, default=384, help="384: the sample config; 768: the paper's")
    parser.add_argument("--categories", type=int, default=6000)
    parser.add_argument("--spread", type=float, default=0.03, help="per-dimension noise around a centre")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--query_fraction", type=float, default=0.05, help="share of queries the exact searches run on"
    )
    parser.add_argument(
        "--indexes",
        nargs="*",
        default=["IVF1024,Flat:nprobe=16", "IVF1024,SQ8:nprobe=16", "IVF1024,PQ48:nprobe=16"],
        help="FAISS factory strings, optionally followed by ':search parameters'",
    )
    parser.add_argument("--train_size", type=int, default=65536)
    parser.add_argument("--skip_torch", action="store_true", help="skip the exact torch search")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="FAISS / torch threads (1: a per-core figure; OpenMP threads spin badly on a shared machine)",
    )
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    base = resident_gib()
    centres = rng.standard_normal((args.categories, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    gallery, generated = timed(clustered_embeddings, args.gallery, args.dim, centres, args.spread, rng)
    queries = clustered_embeddings(args.queries, args.dim, centres, args.spread, rng)
    sampled = max(1, round(args.queries * args.query_fraction))
    sample = queries[:sampled]
    scale = args.queries / sampled
    threads = faiss.omp_get_max_threads()
    print(
        f"Retrieval of {args.queries:,} queries in {args.gallery:,} products, {args.dim}-d float32 "
        f"({gallery.nbytes / 2**30:.2f} GiB gallery, generated in {generated:.0f} s), k={args.k}, "
        f"{os.cpu_count()} cores ({threads} FAISS threads, {torch.get_num_threads()} torch), "
        f"load average {os.getloadavg()[0]:.1f}; exact searches on {sampled:,} queries, times x{scale:.1f}"
    )
    rows = []

    def report(name, build_s, search_s, extrapolated, memory_gib, recall):
        rows.append(
            {
                "method": name,
                "build_s": build_s,
                "search_s_all_queries": search_s,
                "extrapolated": extrapolated,
                "memory_gib": memory_gib,
                "recall_at_k": recall,
            }
        )
        note = " (extrapolated)" if extrapolated else ""
        print(
            f"  {name:<28} build {build_s:7.1f} s  search {search_s:8.1f} s{note:<15} "
            f"memory {memory_gib:5.2f} GiB  recall@{args.k} {recall:.3f}",
            flush=True,
        )

    before = resident_gib()
    (exact_scores, exact_indices), seconds = timed(faiss_top_k, sample, gallery, args.k)
    report("exact faiss IndexFlatIP", 0.0, seconds * scale, scale > 1, resident_gib() - before, 1.0)
    if not args.skip_torch:
        before = resident_gib()
        (torch_scores, torch_indices), seconds = timed(torch_top_k, sample, gallery, args.k, device="cpu")
        np.testing.assert_allclose(torch_scores, exact_scores, atol=1e-4)  # same ranking up to ties
        report(
            "exact torch chunked top-k",
            0.0,
            seconds * scale,
            scale > 1,
            resident_gib() - before,
            recall_at_k(torch_indices, exact_indices, args.k),
        )
    for spec in args.indexes:
        factory, _, parameters = spec.partition(":")
        before = resident_gib()
        index, build_s = timed(
            build_faiss_index,
            gallery,
            factory,
            train_size=args.train_size,
            search_parameters=parameters or None,
        )
        memory = resident_gib() - before
        (_, approximate), _ = timed(faiss_top_k, sample, None, args.k, index=index)
        _, search_s = timed(faiss_top_k, queries, None, args.k, index=index)
        name = factory + (f" ({parameters})" if parameters else "")
        report(name, build_s, search_s, False, memory, recall_at_k(approximate, exact_indices, args.k))
        del index
    print(
        f"  process: {resident_gib() - base:.2f} GiB resident over the start (gallery + queries included), "
        f"peak {peak_gib():.2f} GiB"
    )
    if args.output:
        Path(args.output).write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
