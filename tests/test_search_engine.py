"""spaces_demo/search_engine.py (and the page's S plot): a query encodes exactly its own modalities, and S is
blanked for the modalities the query lacks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_m5product import tiny_demo_model_parts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "spaces_demo"))
from query_inputs import ProductQuery  # noqa: E402
from search_engine import ProductSearchEngine  # noqa: E402

from modeling_scale import MODALITIES, ScaleModel  # noqa: E402


@pytest.fixture(scope="module")
def engine() -> ProductSearchEngine:
    # alignment "feature": an S that depends on the query's features
    processor, config = tiny_demo_model_parts(alignment="feature")
    torch.manual_seed(0)
    return ProductSearchEngine(ScaleModel(config), processor, index=None)


QUERY = ProductQuery(
    text="red cotton dress",
    table=[("材质", "纯棉")],
    image=Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)),
)


def test_the_query_encodes_exactly_its_modalities(engine):
    embeds, _ = engine.encode(QUERY)
    inputs = engine.processor(
        text=[QUERY.text], tables=[QUERY.table], images=[QUERY.image], return_tensors="pt"
    )
    with torch.no_grad():
        expected = torch.nn.functional.normalize(engine.model(**inputs).product_embeds, dim=-1)
    np.testing.assert_allclose(embeds, expected.numpy(), atol=1e-5)
    text_only, _ = engine.encode(ProductQuery(text=QUERY.text))
    assert not np.allclose(text_only, embeds, atol=1e-3)


def test_s_is_blank_exactly_where_the_query_lacks_a_modality(engine):
    _, alignment = engine.encode(QUERY)
    given = [MODALITIES.index(m) for m in ("text", "table", "image")]
    missing = [MODALITIES.index(m) for m in ("video", "audio")]
    assert np.isfinite(alignment[np.ix_(given, given)]).all()
    assert np.isnan(alignment[missing]).all() and np.isnan(alignment[:, missing]).all()
    assert not np.allclose(alignment[np.ix_(given, given)], 0)


@pytest.mark.slow  # imports the page (gradio): ~20 s on 2 busy cores
def test_the_s_plot_writes_values_only_in_the_querys_cells(engine):
    from app import alignment_figure
    from search_engine import SearchResult

    _, alignment = engine.encode(QUERY)
    result = SearchResult([], alignment, QUERY.modalities, 0.0, 0.0)
    texts = alignment_figure(result).axes[0].texts
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in texts}
    given = [MODALITIES.index(m) for m in QUERY.modalities]
    assert set(cells) == {(i, j) for i in given for j in given}
    assert all(cells[i, j] == f"{alignment[i, j]:.2f}" for i, j in cells)


def test_the_page_explains_every_alignment_mode():
    import app

    from modeling_scale.configuration_scale import ALIGNMENT_MODES

    assert set(app.ALIGNMENT_SOURCES) == set(ALIGNMENT_MODES)
