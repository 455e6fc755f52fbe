"""The Space's API, called with gradio_client like any remote user would: each modality alone and combined,
a gallery product as the query, and bad input answered with a readable error while the app keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_server import AppServer, gallery_size, richest_gallery_product, tiny_demo_assets

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.slow  # one app server for the module (~15 s to start on 2 cores)

MODALITIES = ("text", "table", "image", "video", "audio")
K = 5
MAX_FILE_SIZE = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return tiny_demo_assets(tmp_path_factory)


@pytest.fixture(scope="module")
def server(assets, tmp_path_factory):
    log = tmp_path_factory.mktemp("app_api") / "app.log"
    app = AppServer(assets, log, "--max-file-size", str(MAX_FILE_SIZE)).wait_until_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def query_inputs(assets) -> dict:
    """One value per modality: media files from the generated sample, a property table, a caption."""
    raw = assets.raw_dir
    return {
        "text": "red cotton dress 红色 连衣裙",
        "table": {"headers": ["property", "value"], "data": [["材质", "纯棉"], ["颜色", "红色"]]},
        "image": handle_file(str(sorted((raw / "images").iterdir())[0])),
        "video": handle_file(str(sorted((raw / "videos").iterdir())[0])),
        "audio": handle_file(str(sorted((raw / "audios").iterdir())[0])),
    }


def search(client: Client, search_with=MODALITIES, k: int = K, **given):
    arguments = {"text": "", "table": None, "image": None, "video": None, "audio": None}
    arguments.update(given)
    return client.predict(**arguments, search_with=list(search_with), k=k, api_name="/search")


def check_results(outputs, k: int, query_modalities) -> list[list]:
    gallery, details, plot, latency = outputs
    assert len(gallery) == k
    assert all(Path(item["image"]).is_file() and item["caption"].startswith("#") for item in gallery)
    rows = details["data"]
    assert [row[0] for row in rows] == list(range(1, k + 1))
    scores = [float(row[1]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0001 <= score <= 1.0001 for score in scores)  # cosine similarities
    assert all(row[4] for row in rows)  # every product has at least one modality
    assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
    assert f"query modalities: {', '.join(query_modalities)}" in latency
    assert " ms" in latency
    return rows


@pytest.mark.parametrize("modality", MODALITIES)
def test_each_modality_alone(client, query_inputs, modality):
    outputs = search(client, **{modality: query_inputs[modality]})
    check_results(outputs, K, [modality])


def test_all_modalities_combined(client, query_inputs):
    outputs = search(client, k=8, **query_inputs)
    check_results(outputs, 8, MODALITIES)


def test_search_with_keeps_only_the_ticked_modalities(client, query_inputs):
    image_only = search(client, image=query_inputs["image"])
    ticked_image = search(
        client, search_with=["image"], text=query_inputs["text"], image=query_inputs["image"]
    )
    rows = check_results(ticked_image, K, ["image"])
    assert rows == image_only[1]["data"]


def test_gallery_product_as_query_finds_itself(client, assets):
    item_id = richest_gallery_product(assets)  # has all five modalities
    text, table, image, video, audio = client.predict(item_id, api_name="/load_product")
    assert text and table["data"] and image and video and audio
    # the whole gallery: the random model ranks near-ties arbitrarily, so check the score, not the rank
    whole_gallery = gallery_size(assets)
    outputs = search(
        client,
        k=whole_gallery,
        text=text,
        table=table,
        image=handle_file(image),
        video=handle_file(video),
        audio=handle_file(audio),
    )
    rows = check_results(outputs, whole_gallery, MODALITIES)
    own_score = next(float(row[1]) for row in rows if row[2] == item_id)
    assert own_score >= 0.999  # its own gallery embedding: identical inputs, cosine 1


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {
        "corrupt.jpg": b"this is not a jpeg",
        "corrupt.mp4": b"\x00\x00\x00\x18ftypmp42 definitely not a video",
        "notes.txt": b"a text file is no sound clip",
        "huge.wav": b"\x00" * (MAX_FILE_SIZE + 1024),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "Empty query"),
        ({"text": "   "}, "Empty query"),
        ({"text": "dress", "search_with": []}, "Tick at least one modality"),
        ({"image": "corrupt.jpg"}, "The image 'corrupt.jpg' could not be read"),
        ({"video": "corrupt.mp4"}, "The video file 'corrupt.mp4' could not be decoded"),
        ({"audio": "notes.txt"}, "The audio file 'notes.txt' has an unsupported format '.txt'"),
        (
            {"table": {"headers": ["property", "value"], "data": [["颜色", ""]]}},
            "Table row 1: value is empty",
        ),
    ],
    ids=[
        "nothing",
        "blank-caption",
        "nothing-ticked",
        "corrupt-image",
        "corrupt-video",
        "txt-audio",
        "half-row",
    ],
)
def test_bad_input_gets_a_readable_error(client, bad_files, given, message):
    given = {
        name: handle_file(str(bad_files[value])) if isinstance(value, str) and value in bad_files else value
        for name, value in given.items()
    }
    with pytest.raises(AppError, match=message) as error:
        search(client, **given)
    assert "/tmp/" not in str(error.value)  # no server paths leak into the message


def test_oversized_upload_is_refused(client, bad_files):
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        search(client, audio=handle_file(str(bad_files["huge.wav"])))


def test_the_server_itself_refuses_an_oversized_upload(server, bad_files):
    """gradio_client refuses first (above); a client that skips that check meets the server's own limit."""
    import httpx

    upload = server.url + "gradio_api/upload"
    with open(bad_files["huge.wav"], "rb") as handle:
        refused = httpx.post(upload, files={"files": ("huge.wav", handle, "audio/wav")}, timeout=60)
    assert refused.status_code == 413, refused.text
    accepted = httpx.post(upload, files={"files": ("small.wav", b"RIFF small", "audio/wav")}, timeout=60)
    assert accepted.status_code == 200, accepted.text  # the same route takes a file under the limit


def test_app_keeps_serving_after_bad_input(client, query_inputs):
    check_results(search(client, text=query_inputs["text"]), K, ["text"])
