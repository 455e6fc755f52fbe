"""The bounded load test: 20 concurrent gradio_client users x 10 searches each against the app on 127.0.0.1,
every query answered with the answer a lone client gets for it; the median and p95 latency are printed
(run with -s or -rA to see them)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest
from app_server import REPO_ROOT, AppServer, tiny_demo_assets

sys.path.insert(0, str(REPO_ROOT / "spaces_demo"))
from load_test import check_loopback, percentile, run_load_test  # noqa: E402

CLIENTS = 20
QUERIES_PER_CLIENT = 10


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile([7.0], 0.95) == 7.0


@pytest.mark.parametrize("url", ["https://huggingface.co/spaces/x/y", "http://192.168.1.5:7860/"])
def test_load_test_refuses_anything_but_loopback(url):
    with pytest.raises(ValueError, match="only targets a local server"):
        check_loopback(url)


@pytest.mark.slow
def test_twenty_concurrent_clients_are_all_answered(tmp_path_factory):
    assets = tiny_demo_assets(tmp_path_factory)
    server = AppServer(assets, tmp_path_factory.mktemp("app_load") / "app.log").wait_until_ready()
    try:
        image = str(sorted((assets.raw_dir / "images").iterdir())[0])
        report = run_load_test(server.url, CLIENTS, QUERIES_PER_CLIENT, images=[image])
    finally:
        server.stop()
    print("load test report:", json.dumps(asdict(report), ensure_ascii=False))
    assert report.failed == 0, report.errors
    assert report.answered == CLIENTS * QUERIES_PER_CLIENT
    assert report.wrong == 0, report.errors  # every client got the answer to its own query
    assert 0 < report.median_ms <= report.p95_ms <= report.max_ms
