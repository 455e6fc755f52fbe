"""spaces_demo/gallery_index.py: the gallery's FAISS index (datasets), its on-disk cache, result details."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Audio, ClassLabel, Dataset, Features, Image, List, Value, Video
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spaces_demo"))
from gallery_index import INDEX_NAME, GalleryIndex, load_or_build_index, product_modalities  # noqa: E402

NUM_PRODUCTS = 6


def jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (300, 200), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def gallery() -> Dataset:
    """Products 0-5; even ones have an image, product 1 a sound clip, product 5 nothing but a table."""
    features = Features(
        item_id=Value("string"),
        caption=Value("string"),
        table=List({"key": Value("string"), "value": Value("string")}),
        image=Image(),
        video=Video(),
        audio=Audio(),
        label=ClassLabel(names=["dress", "teapot"]),
    )
    rows = [
        {
            "item_id": f"item{row}",
            "caption": None if row == 5 else f"product {row}",
            "table": [{"key": "材质", "value": "纯棉"}] if row in (0, 5) else [],
            "image": {"bytes": jpeg_bytes((40 * row, 0, 0)), "path": None} if row % 2 == 0 else None,
            "video": None,
            "audio": {"bytes": b"RIFF fake wav", "path": None} if row == 1 else None,
            "label": row % 2,
        }
        for row in range(NUM_PRODUCTS)
    ]
    return Dataset.from_list(rows, features=features)


def one_hot_embeddings(products: Dataset) -> np.ndarray:
    """Product i embeds as 2 * e_i: orthogonal; once normalised, query e_i finds product i with cosine 1."""
    return 2 * np.eye(len(products), 8, dtype=np.float32)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "scale", "hidden_size": 32}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def counting(embed):
    def wrapped(products):
        wrapped.calls += 1
        return embed(products)

    wrapped.calls = 0
    return wrapped


def test_search_goes_through_the_datasets_faiss_index(gallery, tmp_path):
    index = GalleryIndex(gallery, one_hot_embeddings(gallery), tmp_path)
    assert index.gallery.list_indexes() == [INDEX_NAME]
    queries = np.eye(2, 8, k=3, dtype=np.float32)  # e_3 and e_4
    first, second = index.search(queries, k=3)
    assert [hit.item_id for hit in first][0] == "item3" and first[0].score == pytest.approx(1.0)
    assert second[0].item_id == "item4" and [hit.rank for hit in second] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(first, first[1:], strict=False))
    assert len(index.search(queries[:1], k=50)[0]) == NUM_PRODUCTS  # k is capped at the gallery size


def test_hits_carry_caption_category_modalities_and_a_thumbnail(gallery, tmp_path):
    index = GalleryIndex(gallery, one_hot_embeddings(gallery), tmp_path)
    hits = {hit.item_id: hit for hit in index.search(np.ones((1, 8), np.float32), k=NUM_PRODUCTS)[0]}
    assert hits["item0"].modalities == ("text", "table", "image") and hits["item0"].category == "dress"
    assert hits["item1"].modalities == ("text", "audio") and hits["item1"].category == "teapot"
    assert hits["item5"].modalities == ("table",) and hits["item5"].caption == ""
    with PILImage.open(hits["item0"].thumbnail) as thumbnail:
        assert max(thumbnail.size) <= 256 and thumbnail.getpixel((10, 10))[0] < 20  # product 0's black photo
    with PILImage.open(hits["item5"].thumbnail) as card:  # no image, no video: a neutral card
        assert card.size == (256, 256)
    assert product_modalities({"caption": "", "table": [], "image": {"bytes": b"", "path": None}}) == ()


def test_gallery_media_are_exported_for_the_query_widgets(gallery, tmp_path):
    index = GalleryIndex(gallery, one_hot_embeddings(gallery), tmp_path)
    audio = index.export_media("item1", "audio")
    assert Path(audio).read_bytes() == b"RIFF fake wav" and audio.endswith(".wav")
    assert PILImage.open(index.export_media("item2", "image")).size == (300, 200)
    assert index.export_media("item1", "image") is None
    with pytest.raises(KeyError, match="no product 'item9'"):
        index.example("item9")


def test_index_is_built_once_then_loaded_from_the_cache(gallery, checkpoint, tmp_path):
    embed = counting(one_hot_embeddings)
    built = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    loaded = load_or_build_index(gallery, embed, str(checkpoint.resolve()), tmp_path / "index")
    assert embed.calls == 1
    assert loaded.cache_dir == built.cache_dir
    assert {"embeddings.npy", "index.faiss", "meta.json"} <= {p.name for p in built.cache_dir.iterdir()}
    np.testing.assert_allclose(np.linalg.norm(loaded.embeddings, axis=1), 1.0, rtol=1e-6)
    query = np.eye(1, 8, k=2, dtype=np.float32)
    assert loaded.search(query, 1)[0][0].item_id == built.search(query, 1)[0][0].item_id == "item2"


def test_a_new_checkpoint_or_gallery_gets_a_new_index(gallery, checkpoint, tmp_path):
    embed = counting(one_hot_embeddings)
    first = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "scale", "hidden_size": 64}))
    retrained = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    smaller = load_or_build_index(gallery.select(range(4)), embed, checkpoint, tmp_path / "index")
    assert embed.calls == 3
    assert len({first.cache_dir, retrained.cache_dir, smaller.cache_dir}) == 3
    assert len(smaller) == 4


def test_an_interrupted_build_is_not_reused(gallery, checkpoint, tmp_path):
    embed = counting(one_hot_embeddings)
    index = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    (index.cache_dir / "meta.json").unlink()  # meta.json is written last: without it the build never finished
    load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    assert embed.calls == 2


def test_an_approximate_faiss_index_can_be_asked_for(gallery, tmp_path):
    index = GalleryIndex(gallery, one_hot_embeddings(gallery), tmp_path, index_factory="IVF2,Flat")
    faiss_index = index.gallery.get_index(INDEX_NAME).faiss_index
    assert type(faiss_index).__name__ == "IndexIVFFlat"
    assert faiss_index.nprobe == 16  # SEARCH_PARAMETERS, not FAISS's single probed list
    assert index.search(np.eye(1, 8, k=4, dtype=np.float32), k=1)[0][0].item_id == "item4"


def test_retrained_weights_with_the_same_config_get_a_new_index(gallery, checkpoint, tmp_path):
    """A checkpoint retrained in place keeps its config.json: the weights file alone must change the key."""
    embed = counting(one_hot_embeddings)
    first = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    (checkpoint / "model.safetensors").write_bytes(b"retrained weights")
    retrained = load_or_build_index(gallery, embed, checkpoint, tmp_path / "index")
    assert embed.calls == 2
    assert retrained.cache_dir != first.cache_dir
