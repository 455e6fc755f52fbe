"""The searchable gallery: product embeddings in a FAISS index attached to the gallery `Dataset`.

Embedding a gallery is the slow part (one model pass per product), so it runs once per (checkpoint, gallery)
pair and its result is cached on disk: the L2-normalised embeddings (`embeddings.npy`), the FAISS index
(`index.faiss`) and `meta.json`, which records what they were computed from so that a stale cache is rebuilt
rather than silently reused. Search goes through `datasets`' own FAISS integration
(`add_faiss_index_from_external_arrays` / `get_nearest_examples_batch`), so a larger gallery can switch to an
approximate index (`index_factory`, e.g. "IVF4096,Flat") or a GPU without touching the app.

Media columns are kept undecoded (bytes + path): a search only decodes the thumbnails of its k hits, and only
the first time each one is shown.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Audio, Dataset, Video
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw
from scale_code import MODALITIES

logger = logging.getLogger(__name__)

INDEX_NAME = "product_embeds"
CACHE_FORMAT_VERSION = 1
THUMBNAIL_SIZE = 256
MAX_TRAIN_SIZE = 262_144
"""Products an approximate FAISS index (`index_factory`, e.g. IVF) is trained on."""
SEARCH_PARAMETERS = {"IVF": "nprobe=16", "HNSW": "efSearch=64"}
"""FAISS's defaults (1 IVF list probed) miss a third of the exact top 10; these keep recall@10 >= 0.95 at
1.18 M products (train/benchmark_retrieval.py)."""
DEFAULT_SUFFIXES = {"image": ".jpg", "video": ".mp4", "audio": ".wav"}
MEDIA_COLUMNS = {
    "image": ImageFeature(decode=False),
    "video": Video(decode=False),
    "audio": Audio(decode=False),
}


@dataclass
class GalleryHit:
    """One search result, with everything the results page shows about it."""

    rank: int
    item_id: str
    score: float
    caption: str
    category: str
    modalities: tuple[str, ...]
    thumbnail: str


def product_modalities(example: dict) -> tuple[str, ...]:
    """Which of the five modalities a gallery row has (undecoded media: None or no bytes/path = missing)."""

    def present(modality: str) -> bool:
        value = example.get(modality)
        if modality == "text":
            return bool(example.get("caption"))
        if modality == "table":
            return bool(value)
        return value is not None and bool(value.get("bytes") or value.get("path"))

    return tuple(m for m in MODALITIES if present(m))


def checkpoint_fingerprint(checkpoint: str | Path) -> str:
    """Changes whenever the checkpoint's configs (content) or weight files (size, mtime) change."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():  # a Hub id: fingerprint the snapshot that from_pretrained downloaded
        from transformers.utils import cached_file

        checkpoint = Path(cached_file(str(checkpoint), "config.json")).parent
    digest = hashlib.sha256()
    for path in sorted(checkpoint.iterdir()):
        if path.suffix == ".json":
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _placeholder_thumbnail(modalities: tuple[str, ...]) -> Image.Image:
    """A neutral card for products without an image or video: says what the product does have."""
    card = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (236, 239, 244))
    draw = ImageDraw.Draw(card)
    lines = ["no image", "", *(modalities or ("no media",))]
    y = THUMBNAIL_SIZE // 2 - 10 * len(lines)
    for line in lines:
        width = draw.textlength(line)
        draw.text(((THUMBNAIL_SIZE - width) / 2, y), line, fill=(90, 98, 112))
        y += 20
    return card


@contextmanager
def _atomic_file(path: Path) -> Iterator[Path]:
    """A private temporary name to write to, renamed onto `path` at the end: concurrent searches that need the
    same thumbnail never read half a file or write over each other's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=path.suffix)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _first_video_frame(video: dict) -> Image.Image:
    from torchcodec.decoders import VideoDecoder

    source = video.get("bytes") or video["path"]
    frame = VideoDecoder(source)[0]  # (3, H, W) uint8
    return Image.fromarray(frame.permute(1, 2, 0).numpy())


class GalleryIndex:
    """A gallery `Dataset` (media undecoded) with a FAISS index over its product embeddings.

    Args:
        gallery: the gallery split, as `load_dataset(...)` returns it.
        embeddings: (len(gallery), D) product embeddings; L2-normalised here, so scores are cosines.
        cache_dir: where thumbnails and exported media of this gallery live.
        index_file: a saved FAISS index to load instead of building one from `embeddings`.
        index_factory: FAISS factory string (None = exact inner-product search); an IVF or HNSW index searches
            with `SEARCH_PARAMETERS`.
        device: GPU id(s) for FAISS when faiss-gpu is installed (None = CPU).
    """

    def __init__(
        self,
        gallery: Dataset,
        embeddings: np.ndarray,
        cache_dir: str | Path,
        index_file: str | Path | None = None,
        index_factory: str | None = None,
        device: int | list[int] | None = None,
    ):
        if len(gallery) == 0:
            raise ValueError("the gallery is empty: nothing to search")
        if len(embeddings) != len(gallery):
            raise ValueError(f"{len(embeddings)} embeddings for a gallery of {len(gallery)} products")
        import faiss

        embeddings = np.asarray(embeddings, dtype=np.float32)
        norms = np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        self.embeddings = np.ascontiguousarray(embeddings / norms)  # inner product = cosine
        self.cache_dir = Path(cache_dir)
        self.category_names = gallery.features["label"].names if "label" in gallery.features else None
        self._catalogue = gallery.select_columns(["item_id", "caption"])  # a view; FAISS attaches elsewhere
        self._row_of_item = {item_id: row for row, item_id in enumerate(self._catalogue["item_id"])}
        for name, feature in MEDIA_COLUMNS.items():
            if name in gallery.column_names:
                gallery = gallery.cast_column(name, feature)
        self.gallery = gallery
        if index_file is not None:
            self.gallery.load_faiss_index(INDEX_NAME, str(index_file), device=device)
        else:
            self.gallery.add_faiss_index_from_external_arrays(
                self.embeddings,
                INDEX_NAME,
                device=device,
                string_factory=index_factory,
                train_size=min(len(self.embeddings), MAX_TRAIN_SIZE) if index_factory else None,
                metric_type=faiss.METRIC_INNER_PRODUCT,
            )
        for kind, parameters in SEARCH_PARAMETERS.items():
            if index_factory and kind in index_factory and device is None:  # GPU indexes: GpuParameterSpace
                index = self.gallery.get_index(INDEX_NAME).faiss_index
                faiss.ParameterSpace().set_index_parameters(index, parameters)

    def __len__(self) -> int:
        return len(self.gallery)

    def catalogue(self, limit: int) -> list[tuple[str, str | None]]:
        """(item_id, caption) of the first `limit` gallery products, for a product picker."""
        first = self._catalogue.select(range(min(limit, len(self))))
        return list(zip(first["item_id"], first["caption"], strict=True))

    def save(self, index_dir: str | Path, meta: dict) -> None:
        index_dir = Path(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        np.save(index_dir / "embeddings.npy", self.embeddings)
        self.gallery.save_faiss_index(INDEX_NAME, str(index_dir / "index.faiss"))
        (index_dir / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    def search(self, query_embeds: np.ndarray, k: int) -> list[list[GalleryHit]]:
        """The k nearest gallery products of each query row, best first."""
        k = max(1, min(int(k), len(self)))
        queries = np.ascontiguousarray(query_embeds, dtype=np.float32)
        all_scores, all_examples = self.gallery.get_nearest_examples_batch(INDEX_NAME, queries, k=k)
        results = []
        for scores, examples in zip(all_scores, all_examples, strict=True):
            rows = [
                dict(zip(examples, values, strict=True)) for values in zip(*examples.values(), strict=True)
            ]
            results.append(
                [
                    GalleryHit(
                        rank=rank,
                        item_id=example["item_id"],
                        score=float(score),
                        caption=example.get("caption") or "",
                        category=self.category_name(example.get("label")),
                        modalities=product_modalities(example),
                        thumbnail=self.thumbnail(example),
                    )
                    for rank, (score, example) in enumerate(zip(scores, rows, strict=True), start=1)
                ]
            )
        return results

    def category_name(self, label: int | None) -> str:
        if label is None or label < 0:
            return ""
        return self.category_names[label] if self.category_names else str(label)

    def example(self, item_id: str) -> dict:
        """The undecoded gallery row of a product."""
        if item_id not in self._row_of_item:
            raise KeyError(f"no product {item_id!r} in the gallery")
        return self.gallery[self._row_of_item[item_id]]

    def thumbnail(self, example: dict) -> str:
        """Path of a cached JPEG thumbnail: the product image, else its video's first frame, else a card."""
        path = self.cache_dir / "thumbnails" / f"{hashlib.md5(example['item_id'].encode()).hexdigest()}.jpg"
        if path.exists():
            return str(path)
        modalities = product_modalities(example)
        try:
            if "image" in modalities:
                image = example["image"]
                picture = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
            elif "video" in modalities:
                picture = _first_video_frame(example["video"])
            else:
                picture = _placeholder_thumbnail(modalities)
            picture = picture.convert("RGB")
        except Exception as error:  # a damaged gallery file must not break a search
            logger.warning("Thumbnail of gallery product %s failed: %s", example["item_id"], error)
            picture = _placeholder_thumbnail(modalities)
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        with _atomic_file(path) as temporary:
            picture.save(temporary, format="JPEG", quality=85)
        return str(path)

    def export_media(self, item_id: str, modality: str) -> str | None:
        """Path of a gallery product's image, video or audio (written out when stored as bytes)."""
        media = self.example(item_id).get(modality)
        if not media or not (media.get("bytes") or media.get("path")):
            return None
        if not media.get("bytes"):
            return media["path"]
        suffix = Path(media.get("path") or "").suffix or DEFAULT_SUFFIXES[modality]
        path = self.cache_dir / "media" / f"{hashlib.md5(item_id.encode()).hexdigest()}_{modality}{suffix}"
        if not path.exists():
            with _atomic_file(path) as temporary:
                temporary.write_bytes(media["bytes"])
        return str(path)


def load_or_build_index(
    gallery: Dataset,
    embed_gallery: Callable[[Dataset], np.ndarray],
    checkpoint: str | Path,
    index_root: str | Path,
    index_factory: str | None = None,
    device: int | list[int] | None = None,
) -> GalleryIndex:
    """The cached index of (checkpoint, gallery) under `index_root`, built with `embed_gallery` when missing.

    The cache folder's name hashes what the index depends on (the checkpoint's and the gallery's contents, not
    the paths they were reached by), so a new checkpoint or gallery gets its own folder; `meta.json` is
    written last, so an interrupted build is never mistaken for a finished one.
    """
    depends_on = {
        "format": CACHE_FORMAT_VERSION,
        "checkpoint_fingerprint": checkpoint_fingerprint(checkpoint),
        "gallery_fingerprint": gallery._fingerprint,
        "num_products": len(gallery),
        "index_factory": index_factory,
    }
    key = hashlib.sha256(json.dumps(depends_on, sort_keys=True).encode()).hexdigest()[:16]
    index_dir = Path(index_root) / key
    meta_file = index_dir / "meta.json"
    if meta_file.exists() and json.loads(meta_file.read_text())["depends_on"] == depends_on:
        logger.info("Loading the cached gallery index %s", index_dir)
        embeddings = np.load(index_dir / "embeddings.npy")
        return GalleryIndex(
            gallery,
            embeddings,
            index_dir,
            index_file=index_dir / "index.faiss",
            index_factory=index_factory,
            device=device,
        )
    logger.info(
        "Embedding %d gallery products into %s (once; later starts reuse it)", len(gallery), index_dir
    )
    index = GalleryIndex(
        gallery, embed_gallery(gallery), index_dir, index_factory=index_factory, device=device
    )
    index.save(
        index_dir,
        {"depends_on": depends_on, "checkpoint": str(checkpoint), "gallery": gallery.info.config_name},
    )
    return index
