"""The Space driven in headless Chromium (Debian's, through Playwright; no browser download): a caption and an
image give k results on the page, and bad uploads give a readable message while the page keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_server import AppServer, richest_gallery_product, tiny_demo_assets

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"Debian's chromium is not installed at {CHROMIUM} (bash install.sh --dev installs it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAX_FILE_SIZE = 1024 * 1024
TIMEOUT_MS = 30_000
DEFAULT_K = 10  # the slider's initial value (the test gallery is larger)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return tiny_demo_assets(tmp_path_factory)


@pytest.fixture(scope="module")
def server(assets, tmp_path_factory):
    log = tmp_path_factory.mktemp("app_browser") / "app.log"
    app = AppServer(assets, log, "--max-file-size", str(MAX_FILE_SIZE)).wait_until_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        sync_api.expect.set_options(timeout=TIMEOUT_MS)  # a loaded CI machine answers in seconds, not 5 s
        yield context
        context.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#search-button")
    yield page
    page.close()


@pytest.fixture(scope="module")
def sample_image(assets) -> Path:
    return sorted((assets.raw_dir / "images").iterdir())[0]


def upload(page, component: str, path: Path) -> None:
    page.set_input_files(f"#{component} input[type=file]", str(path))


def expect_toast(page, text: str) -> None:
    sync_api.expect(page.locator(".toast-body").filter(has_text=text).first).to_be_visible()


def test_caption_and_image_give_k_results(page, sample_image, tmp_path):
    page.get_by_label("Caption").fill("red cotton dress 红色 连衣裙")
    upload(page, "query-image", sample_image)
    page.wait_for_selector("#query-image img")
    page.click("#search-button")

    thumbnails = page.locator("#results-gallery .thumbnail-item img")
    sync_api.expect(thumbnails).to_have_count(DEFAULT_K)
    latency = page.locator("#latency")
    sync_api.expect(latency).to_contain_text(f"{DEFAULT_K} results")
    sync_api.expect(latency).to_contain_text("query modalities: text, image")
    # the table is virtualised (not every row is in the DOM); its grid announces header + k rows
    sync_api.expect(page.locator("#results-table [role=grid]")).to_have_attribute(
        "aria-rowcount", str(DEFAULT_K + 1)
    )
    sync_api.expect(page.locator("#alignment-plot img")).to_be_visible()
    # every result thumbnail is served and decodes in the browser
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results-gallery .thumbnail-item img')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
    )
    captions = page.locator("#results-gallery .caption-label").all_inner_texts()
    assert captions[0].startswith("#1 · score") and "has: " in captions[0]
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)


def test_unticked_modality_is_ignored_with_a_warning(page, sample_image):
    page.get_by_label("Caption").fill("red cotton dress")
    upload(page, "query-image", sample_image)
    page.wait_for_selector("#query-image img")
    page.locator("#search-with").get_by_label("text").uncheck()
    page.click("#search-button")
    expect_toast(page, "Not searched with text")
    sync_api.expect(page.locator("#latency")).to_contain_text("query modalities: image")


def test_gallery_product_as_the_query_finds_itself(page, assets):
    item_id = richest_gallery_product(assets)  # has all five modalities
    page.get_by_text("Use a gallery product as the query").click()
    page.locator("#product-picker input").press_sequentially(item_id)
    page.get_by_role("option", name=item_id).click()
    page.click("#load-product")
    sync_api.expect(page.get_by_label("Caption")).not_to_have_value("")
    sync_api.expect(page.locator("#query-video video")).to_have_count(1)
    page.click("#search-button")
    sync_api.expect(page.locator("#latency")).to_contain_text(
        "query modalities: text, table, image, video, audio"
    )
    captions = page.locator("#results-gallery .caption-label")
    sync_api.expect(captions).to_have_count(DEFAULT_K)
    scores = {text.split("\n")[2]: text.split("\n")[0] for text in captions.all_inner_texts()}
    caption = page.get_by_label("Caption").input_value()
    assert scores[caption].endswith("score 1.000")  # its own gallery embedding


def test_corrupt_image_shows_a_readable_error(page, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg")
    upload(page, "query-image", corrupt)
    page.click("#search-button")
    expect_toast(page, "The image 'corrupt.jpg' could not be read")


def test_oversized_upload_shows_a_readable_error(page, tmp_path):
    huge = tmp_path / "huge.wav"
    huge.write_bytes(b"\x00" * (MAX_FILE_SIZE + 1024))
    upload(page, "query-audio", huge)
    expect_toast(page, "exceed the maximum allowed size")


def test_empty_query_shows_a_readable_error_and_the_page_keeps_working(page):
    page.click("#search-button")
    expect_toast(page, "Empty query")
    page.get_by_label("Caption").fill("blue speaker")
    page.click("#search-button")
    sync_api.expect(page.locator("#results-gallery .thumbnail-item img")).to_have_count(DEFAULT_K)
