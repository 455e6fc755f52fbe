"""A bounded load test of a running app: N concurrent gradio_client users, each sending M searches.

    python spaces_demo/load_test.py --url http://127.0.0.1:7860/ --clients 20 --queries 10 --image a.jpg

Loopback only, on purpose: it is for measuring your own local server, never for loading a public Space.
Prints one JSON report (answered, failed and wrong counts, client-side median and p95 latency, throughput)
and exits non-zero when a query went unanswered or got an answer other than a lone client gets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CAPTIONS = (
    "red cotton dress",
    "蓝色 音箱 官方",
    "ceramic teapot gift",
    "wooden puzzle for kids",
    "metal charger fast",
    "真丝 衬衫 新款",
    "glass cup classic",
    "plush doll 玩偶",
)


@dataclass
class LoadReport:
    clients: int
    queries_per_client: int
    answered: int = 0
    failed: int = 0
    wrong: int = 0
    """Answers that differ from what a lone client got for the same query (e.g. another client's results)."""
    wall_s: float = 0.0
    median_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    throughput_qps: float | None = None
    errors: list[str] = field(default_factory=list)
    """The first few failure messages (all failures are counted in `failed`)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (the value below which `fraction` of the sorted values lie)."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil(fraction * n), at least 1
    return ordered[rank - 1]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"refusing to load {host!r}: this load test only targets a local server ({LOOPBACK_HOSTS})"
        )


def run_load_test(
    url: str,
    clients: int = 20,
    queries_per_client: int = 10,
    images: Sequence[str] = (),
    k: int = 10,
) -> LoadReport:
    """Every client has its own connection and sends its queries one after another, all clients at once.

    Queries alternate between caption-only and caption + image (when `images` are given), so both the text
    and the image paths of the model are under load. Each distinct query is first sent by a lone client;
    under load, every answer must be exactly that one (same ranked products and scores), or it counts as
    `wrong`.
    """
    from gradio_client import Client, handle_file

    check_loopback(url)
    report = LoadReport(clients=clients, queries_per_client=queries_per_client)
    latencies: list[float] = []
    lock = threading.Lock()
    # connected before the clock starts; result files (thumbnails) are not downloaded: the latency measured is
    # the search's, as a browser sees it before it fetches the pictures
    connections = [Client(url, verbose=False, download_files=False) for _ in range(clients)]

    def query_of(number: int, position: int) -> tuple[str, str | None]:
        caption = CAPTIONS[(number + position) % len(CAPTIONS)]
        image = images[(number + position) % len(images)] if images and position % 2 else None
        return caption, image

    def ask(client, caption: str, image: str | None) -> list[list]:
        """The ranked (rank, score, item id) rows of one search."""
        _, details, _, _ = client.predict(
            caption, None, handle_file(image) if image else None, None, None,
            ["text", "image"], k, api_name="/search",
        )  # fmt: skip
        return [row[:3] for row in details["data"]]

    expected = {}
    for number, position in itertools.product(range(clients), range(queries_per_client)):
        query = query_of(number, position)
        if query not in expected:
            try:
                expected[query] = ask(connections[0], *query)
            except Exception:  # nothing to compare with; the loaded run counts and reports the failure
                expected[query] = None

    def one_client(number: int) -> None:
        client = connections[number]
        for position in range(queries_per_client):
            query = query_of(number, position)
            began = time.perf_counter()
            try:
                answer = ask(client, *query)
            except Exception as error:  # counted, reported, and the other queries go on
                with lock:
                    report.failed += 1
                    if len(report.errors) < 5:
                        report.errors.append(
                            f"client {number} query {position}: {type(error).__name__}: {error}"
                        )
                continue
            with lock:
                latencies.append(1000 * (time.perf_counter() - began))
                report.answered += 1
                if expected[query] is not None and answer != expected[query]:
                    report.wrong += 1
                    if len(report.errors) < 5:
                        report.errors.append(f"client {number} query {position}: not the answer to {query}")

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(one_client, number) for number in range(clients)]:
            future.result()
    report.wall_s = round(time.perf_counter() - began, 2)
    if latencies:
        report.median_ms = round(statistics.median(latencies), 1)
        report.p95_ms = round(percentile(latencies, 0.95), 1)
        report.max_ms = round(max(latencies), 1)
        report.throughput_qps = round(report.answered / report.wall_s, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--queries", type=int, default=10, help="queries per client")
    parser.add_argument("--image", action="append", default=[], help="image(s) to mix into the queries")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)
    report = run_load_test(args.url, args.clients, args.queries, args.image, args.k)
    print(json.dumps(asdict(report), indent=1, ensure_ascii=False))
    return 0 if report.failed == 0 and report.wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
