"""SCALE product search: query an M5Product gallery with any mix of caption, property table, image, video and
audio, and see the closest products.

    python spaces_demo/app.py                       # the main job's checkpoint and gallery (outputs/...)
    python spaces_demo/app.py --checkpoint DIR --dataset DIR_OR_HUB_ID --port 7860

Every flag has an environment variable (SCALE_CHECKPOINT, SCALE_DATASET, ...) so that a Space can be pointed
elsewhere in its settings. The gallery index is built once (progress bar in the log) and cached.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from gallery_index import GalleryHit
from matplotlib.figure import Figure
from query_inputs import QueryError, build_query
from scale_code import MODALITIES, REPO_ROOT, default_checkpoint, first_line, local_or_hub
from search_engine import ProductSearchEngine, SearchResult, load_search_engine

logger = logging.getLogger("scale_demo")

HUB_DATASET_ID = "scale-m5product/m5product-sample"
"""Where the release is published (README.md's `models:` / `datasets:`); used when no local run exists."""
TABLE_HEADERS = ["property", "value"]
RESULT_HEADERS = ["#", "score", "item_id", "category", "modalities", "caption"]
MAX_K = 50
MAX_PICKER_CHOICES = 1000
"""The product picker lists this many gallery products; any other item id can be typed in."""
ALIGNMENT_HELP = """
#### Modality alignment of the query
**S** is SIMCL's modality alignment matrix for this query (paper Eq. 3): the weight SCALE gives each pair of
the query's modalities, {source}. Off-diagonal cells weigh the pairwise contrastive terms, the diagonal the
masked-modelling terms. Modalities the query lacks stay blank.
"""
ALIGNMENT_SOURCES = {
    "feature": 'from how well their features agree (`alignment="feature"`, as the released code computes it)',
    "learned": 'learned in pretraining, the same for every query (`alignment="learned"`, as the paper reads)',
    "bounded": 'learned in pretraining, shared out over the modalities the query has (`alignment="bounded"`)',
    "embedding": "from how well the query's features agree, shared out over its modalities "
    '(`alignment="embedding"`)',
    "relative": "from how much better each pair of a product's features agrees than the same pair does "
    'across products (`alignment="relative"`, read against statistics fitted after pretraining; a '
    "checkpoint without them shows 1 everywhere, as a query alone has no batch to be read against)",
}
CSS = """
#results-table td, #results-table th { font-size: 0.78rem; }
#results-gallery .fixed-height { max-height: none; min-height: 0; }
#results-gallery .grid-container { grid-template-rows: none; grid-auto-rows: auto; }
#results-gallery .thumbnail-item {
    aspect-ratio: auto; height: auto; display: flex; flex-direction: column;
}
#results-gallery .thumbnail-item > img { height: 150px; flex: none; }
#results-gallery .caption-label {
    position: static; max-width: 100%; opacity: 1; white-space: pre-line; overflow-wrap: anywhere;
    border: none; border-top: 1px solid var(--border-color-primary); border-radius: 0; font-size: 0.78rem;
    line-height: 1.25;
}
"""


def alignment_figure(result: SearchResult) -> Figure:
    """Heat map of the query's 5x5 modality alignment matrix S (blank: modality not in the query).

    Built on a bare `Figure` (not pyplot), which is safe to use from concurrent request threads, with fixed
    axes positions and the values written in the cells instead of a colour bar: every search pays the drawing
    time, and those two would double it.
    """
    figure = Figure(figsize=(3.6, 3.4), dpi=100)
    axes = figure.add_axes((0.2, 0.17, 0.76, 0.78))
    finite = result.alignment[np.isfinite(result.alignment)]
    vmin, vmax = min(0.0, float(finite.min(initial=0.0))), max(1.0, float(finite.max(initial=1.0)))
    image = axes.imshow(result.alignment, cmap="viridis", vmin=vmin, vmax=vmax)
    axes.set_xticks(range(len(MODALITIES)), MODALITIES, rotation=30)
    axes.set_yticks(range(len(MODALITIES)), MODALITIES)
    for i, j in zip(*np.nonzero(np.isfinite(result.alignment)), strict=True):
        value = result.alignment[i, j]
        colour = "black" if image.norm(value) > 0.6 else "white"
        axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    return figure


def gallery_caption(hit: GalleryHit) -> str:
    caption = hit.caption if len(hit.caption) <= 48 else hit.caption[:47] + "…"
    return "\n".join(
        [
            f"#{hit.rank} · score {hit.score:.3f}",
            hit.category,
            caption or "(no caption)",
            "has: " + ", ".join(hit.modalities),
        ]
    )


def result_outputs(result: SearchResult) -> tuple[list, pd.DataFrame, Figure, str]:
    gallery = [(hit.thumbnail, gallery_caption(hit)) for hit in result.hits]
    table = pd.DataFrame(
        [
            [hit.rank, f"{hit.score:.3f}", hit.item_id, hit.category, ", ".join(hit.modalities), hit.caption]
            for hit in result.hits
        ],
        columns=RESULT_HEADERS,
    )
    latency = (
        f"**{len(result.hits)} results** in **{result.total_ms:.0f} ms** "
        f"(encoding {result.encode_ms:.0f} ms, index + thumbnails {result.search_ms:.0f} ms) · "
        f"query modalities: {', '.join(result.query_modalities)}"
    )
    return gallery, table, alignment_figure(result), latency


def _readable_input_errors(component: gr.components.Component, what: str) -> gr.components.Component:
    """Gradio decodes some inputs (images with PIL, tables) before our code runs: a missing value means "not
    given" (API callers may send None), and a decoding failure becomes a message naming the input and file."""
    preprocess = component.preprocess

    def checked_preprocess(payload):
        if payload is None:
            return None
        try:
            return preprocess(payload)
        except Exception as error:
            path = getattr(payload, "path", None)
            name = getattr(payload, "orig_name", None) or Path(path or what).name
            reason = first_line(error)  # one line, no FFmpeg internals
            reason = reason.replace(str(path), name) if path else reason  # no server paths shown
            raise gr.Error(f"The {what} '{name}' could not be read ({reason}).") from error

    component.preprocess = checked_preprocess
    return component


def build_demo(
    engine: ProductSearchEngine, title: str = "SCALE product search", description: str = ""
) -> gr.Blocks:
    """The page: query inputs on the left, ranked products, their details and the query's S on the right."""
    index = engine.index
    product_choices = [
        (f"{item_id} — {(caption or '(no caption)')[:50]}", item_id)
        for item_id, caption in index.catalogue(MAX_PICKER_CHOICES)
    ]

    def search(text, table, image, video, audio, search_with, k):
        try:
            query = build_query(search_with, text=text, table=table, image=image, video=video, audio=audio)
            if query.ignored:
                gr.Warning(f"Not searched with {', '.join(query.ignored)}: not ticked under 'Search with'.")
            result = engine.search(query, int(k))
        except QueryError as error:
            raise gr.Error(str(error)) from error
        except Exception as error:  # keep serving: the visitor sees what failed, the log has the traceback
            logger.exception("Search failed")
            raise gr.Error(f"The search failed ({type(error).__name__}: {first_line(error)}).") from error
        return result_outputs(result)

    def load_product(item_id):
        if not item_id:
            raise gr.Error("Pick a gallery product first.")
        try:
            example = index.example(item_id)
        except KeyError as error:
            raise gr.Error(f"No product {item_id!r} in the gallery.") from error
        table = [[pair["key"], pair["value"]] for pair in example.get("table") or []]
        return (
            example.get("caption") or "",
            pd.DataFrame(table or [["", ""]], columns=TABLE_HEADERS),
            index.export_media(item_id, "image"),
            index.export_media(item_id, "video"),
            index.export_media(item_id, "audio"),
        )

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n{description}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=360):
                gr.Markdown("### Query — any mix of modalities")
                text = gr.Textbox(label="Caption", placeholder="e.g. 红色连衣裙 / red summer dress", lines=2)
                table = _readable_input_errors(
                    gr.Dataframe(
                        value=pd.DataFrame([["", ""]] * 3, columns=TABLE_HEADERS),
                        headers=TABLE_HEADERS,
                        datatype="str",
                        column_count=2,
                        interactive=True,
                        label="Property table (edit the cells; add rows with +)",
                        elem_id="query-table",
                    ),
                    "table",
                )
                with gr.Row():
                    image = _readable_input_errors(
                        gr.Image(
                            type="filepath",
                            image_mode=None,
                            sources=["upload", "clipboard"],
                            label="Image",
                            height=180,
                            elem_id="query-image",
                        ),
                        "image",
                    )
                    video = gr.Video(
                        sources=["upload"], label="Video clip", height=180, elem_id="query-video"
                    )
                audio = gr.Audio(
                    sources=["upload"], type="filepath", label="Sound clip", elem_id="query-audio"
                )
                search_with = gr.CheckboxGroup(
                    choices=list(MODALITIES),
                    value=list(MODALITIES),
                    label="Search with",
                    info="Only the ticked modalities of the query are used.",
                    elem_id="search-with",
                )
                k = gr.Slider(
                    1, min(MAX_K, len(index)), value=min(10, len(index)), step=1, label="Results (k)"
                )
                with gr.Row():
                    search_button = gr.Button("Search", variant="primary", elem_id="search-button")
                    clear_button = gr.ClearButton(value="Clear query")
                with gr.Accordion("Use a gallery product as the query", open=False):
                    product = gr.Dropdown(
                        choices=product_choices,
                        value=None,
                        label="Gallery product",
                        filterable=True,
                        allow_custom_value=True,
                        elem_id="product-picker",
                    )
                    load_button = gr.Button("Load into the query", elem_id="load-product")
            with gr.Column(scale=3, min_width=480):
                latency = gr.Markdown(label="Search latency", elem_id="latency")
                results = gr.Gallery(
                    label="Closest products",
                    columns=5,
                    height="auto",
                    object_fit="contain",
                    allow_preview=True,
                    elem_id="results-gallery",
                )
                details = gr.Dataframe(
                    headers=RESULT_HEADERS,
                    column_widths=["5%", "9%", "18%", "26%", "18%", "24%"],
                    max_height=420,
                    label="Result details",
                    interactive=False,
                    wrap=True,
                    elem_id="results-table",
                )
                with gr.Row(equal_height=False):
                    alignment = gr.Plot(
                        label="Modality alignment of the query (S)",
                        show_label=False,
                        format="png",
                        elem_id="alignment-plot",
                        scale=3,
                    )
                    alignment_mode = getattr(engine.model.config, "alignment", "feature")
                    gr.Markdown(
                        ALIGNMENT_HELP.format(source=ALIGNMENT_SOURCES[alignment_mode]),
                        elem_id="alignment-help",
                    )

        clear_button.add([text, table, image, video, audio, product])
        search_button.click(
            search,
            inputs=[text, table, image, video, audio, search_with, k],
            outputs=[results, details, alignment, latency],
            api_name="search",
        )
        text.submit(
            search,
            inputs=[text, table, image, video, audio, search_with, k],
            outputs=[results, details, alignment, latency],
            api_visibility="private",
        )
        load_button.click(
            load_product, inputs=product, outputs=[text, table, image, video, audio], api_name="load_product"
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        default=env("SCALE_CHECKPOINT") or default_checkpoint(),
        help="model folder or Hub id, loaded with AutoModel/AutoProcessor (env SCALE_CHECKPOINT)",
    )
    parser.add_argument(
        "--dataset",
        default=env("SCALE_DATASET") or local_or_hub(REPO_ROOT / "outputs/m5product", HUB_DATASET_ID),
        help="converted M5Product folder or Hub id (env SCALE_DATASET)",
    )
    parser.add_argument(
        "--dataset-config",
        default=env("SCALE_DATASET_CONFIG", "retrieval_coarse"),
        help="dataset config holding the gallery (env SCALE_DATASET_CONFIG)",
    )
    parser.add_argument(
        "--split",
        default=env("SCALE_GALLERY_SPLIT", "gallery"),
        help="split used as the gallery (env SCALE_GALLERY_SPLIT)",
    )
    parser.add_argument(
        "--index-dir",
        default=env("SCALE_INDEX_DIR", str(REPO_ROOT / "outputs/index")),
        help="where gallery indexes are cached (env SCALE_INDEX_DIR)",
    )
    parser.add_argument(
        "--index-factory",
        default=env("SCALE_INDEX_FACTORY"),
        help="FAISS factory string for large galleries, e.g. 'IVF4096,Flat' (default: exact)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=int(env("SCALE_BATCH_SIZE", "16")),
        help="gallery products per model pass when building the index",
    )
    parser.add_argument("--device", default=env("SCALE_DEVICE", "cuda" if _cuda_available() else "cpu"))
    parser.add_argument(
        "--host",
        default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="0.0.0.0 to serve on the network (a Space sets GRADIO_SERVER_NAME)",
    )
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--max-file-size",
        type=_file_size,
        default=env("SCALE_MAX_FILE_SIZE", "20mb"),
        help="largest accepted upload: bytes, or with a unit such as 20mb (gradio launch max_file_size)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=int(env("SCALE_QUEUE_SIZE", "64")),
        help="requests allowed to wait; more are refused with 'queue full'",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(env("SCALE_CONCURRENCY", "2")),
        help="searches running at once (default_concurrency_limit)",
    )
    return parser.parse_args(argv)


def _file_size(value: str) -> int | str:
    """Plain digits are bytes; anything else ("20mb", "1gb") is left to gradio's parser."""
    return int(value) if value.strip().isdigit() else value


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "faiss.loader"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    args = parse_args(argv)
    try:
        engine = load_search_engine(
            checkpoint=args.checkpoint,
            dataset=args.dataset,
            dataset_config=args.dataset_config,
            split=args.split,
            index_root=args.index_dir,
            index_factory=args.index_factory,
            batch_size=args.batch_size,
            device=args.device,
        )
    except (OSError, ValueError) as error:  # a missing folder, an unknown Hub id, a bad dataset config
        raise SystemExit(
            f"Cannot load checkpoint {args.checkpoint!r} / gallery {args.dataset!r} "
            f"({args.dataset_config}/{args.split}): {error}\n"
            "Run the main job first (train/main_job.py), or pass --checkpoint and --dataset."
        ) from error
    description = (
        f"Model `{args.checkpoint}` · gallery `{args.dataset}` ({args.dataset_config}/{args.split}, "
        f"{len(engine.index)} products). Scores are cosine similarities of the fused product embeddings."
    )
    demo = build_demo(engine, description=description)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=args.concurrency)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=args.max_file_size,
        css=CSS,
        footer_links=["api"],
        allowed_paths=[args.index_dir],  # thumbnails and gallery media are served from the index cache
    )


if __name__ == "__main__":
    main()
