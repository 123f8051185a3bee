"""Benchmark: ingest latency while notifications are delivered (issue 20).

A real uvicorn serves the app (its delivery worker in the lifespan) on a fresh store; one run
receives single-step POSTs (16 queries each) in three conditions, interleaved over ``--rounds``:

- ``none``: no channel;
- ``healthy``: a channel to a local receiver answering 200 at once, ``--backlog`` notifications
  seeded into the outbox just before the phase (the worker drains them during it);
- ``hanging``: a channel to a local receiver that never answers within the 5 s timeout, with the
  same backlog (the worker's requests hang for the whole phase).

Run:  python benchmarks/bench_notify_ingest.py [--rounds 3] [--steps 60] [--backlog 40]
      python benchmarks/bench_notify_ingest.py --database-url postgresql+psycopg://...
Prints median / p90 / max milliseconds per ingest in each condition, and each median's ratio to
``none``'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scrape import _database

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.notifications.events import alert_event
from service.settings import Settings
from service.storage import outbox

RECEIVED: Counter[str] = Counter()


class _Server(ThreadingHTTPServer):
    # A listen backlog above http.server's 5: the worker opens up to 20 connections at once.
    request_queue_size = 64
    daemon_threads = True


@contextmanager
def _receiver(hang: float) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            RECEIVED["hanging" if hang else "healthy"] += 1
            if hang:
                time.sleep(hang)
            try:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _service(url: str) -> Iterator[str]:
    app = create_app(Settings(database_url=url, notify_timeout=5.0), registry=CollectorRegistry())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _seed(url: str, run_id: int, count: int) -> None:
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        for step in range(count):
            event = alert_event(
                "alert_opened",
                run_id,
                rule="entropy_floor",
                severity="critical",
                step=step,
                observed={"entropy": 0.01},
                thresholds={"entropy": 0.05},
                message="bench",
                action="bench",
                best_step=None,
            )
            outbox.enqueue(session, event)
        session.commit()
    engine.dispose()


def _record(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": 0.5, "success_rate": 0.4, "alpha": 1.0},
        "queries": [
            {"query_id": f"q{i}", "group_size": 8, "successes": (step + i) % 9} for i in range(16)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="ingests per condition and round")
    parser.add_argument("--backlog", type=int, default=40, help="notifications seeded per phase")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the hanging phase's timeouts are expected
    timings: dict[str, list[float]] = {"none": [], "healthy": [], "hanging": []}
    with (
        _database(args.database_url) as url,
        _receiver(0.0) as healthy,
        _receiver(60.0) as hanging,
    ):
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        with _service(url) as base, httpx.Client(base_url=base, timeout=60) as http:
            run = http.post(
                "/api/v1/runs",
                json={"name": "bench", "project": "bench", "group_size": 8, "kl_beta": 0.0},
            ).json()
            step = 0
            for _ in range(args.rounds):
                for condition, target in (
                    ("none", None),
                    ("healthy", healthy),
                    ("hanging", hanging),
                ):
                    for channel in http.get("/api/v1/notifications/channels").json()["items"]:
                        http.delete(f"/api/v1/notifications/channels/{channel['id']}")
                    if target is not None:
                        channel = http.post(
                            "/api/v1/notifications/channels",
                            json={"name": condition, "kind": "slack", "url": target},
                        ).json()
                        http.post(
                            "/api/v1/notifications/subscriptions",
                            json={"channel_id": channel["id"]},
                        )
                        _seed(url, run["id"], args.backlog)
                        time.sleep(1.5)  # the worker's next pass claims the backlog
                    for _ in range(args.steps):
                        start = time.perf_counter()
                        response = http.post(
                            f"/api/v1/runs/{run['id']}/steps", json={"steps": [_record(step)]}
                        )
                        timings[condition].append(time.perf_counter() - start)
                        response.raise_for_status()
                        step += 1
    baseline = statistics.median(timings["none"])
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; store {url.split(':')[0]}; requests received {dict(RECEIVED)}")
    print("| condition | ingests | median ms | p90 ms | max ms | median / none |")
    print("| --- | --- | --- | --- | --- | --- |")
    for condition, values in timings.items():
        ordered = sorted(values)
        median = statistics.median(ordered)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(
            f"| {condition} | {len(values)} | {median * 1e3:.1f} | {p90 * 1e3:.1f} | "
            f"{ordered[-1] * 1e3:.1f} | {median / baseline:.2f} |"
        )


if __name__ == "__main__":
    main()
