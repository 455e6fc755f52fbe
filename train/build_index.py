"""Build the demo's gallery index ahead of time, with the demo's own code, so `python spaces_demo/app.py`
starts without embedding the gallery.

    python -m train.build_index --checkpoint outputs/pretrain --dataset outputs/m5product \
        --index_dir outputs/index

The index is cached by the demo as INDEX_DIR/<key>/{embeddings.npy, index.faiss, meta.json}: L2-normalised
`product_embeds` of the gallery split (`retrieval_coarse/gallery` by default), a FAISS inner-product index
saved with `datasets`' `save_faiss_index`, and what they were computed from (the key hashes checkpoint path
and fingerprint, gallery fingerprint and index type, so pass the same absolute paths the app uses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(REPO_ROOT / "outputs" / "pretrain"))
    parser.add_argument("--dataset", default=str(REPO_ROOT / "outputs" / "m5product"))
    parser.add_argument("--dataset_config", default="retrieval_coarse")
    parser.add_argument("--split", default="gallery")
    parser.add_argument("--index_dir", default=str(REPO_ROOT / "outputs" / "index"))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(REPO_ROOT / "spaces_demo"))
    from search_engine import load_search_engine

    engine = load_search_engine(
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        dataset_config=args.dataset_config,
        split=args.split,
        index_root=args.index_dir,
        batch_size=args.batch_size,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    print(f"gallery index of {len(engine.index)} products in {engine.index.cache_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
