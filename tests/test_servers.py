"""The test server helper: a real uvicorn serves requests concurrently, so it refuses an app
whose sessions share one database connection (the bench smoke test's intermittent ingest 500:
the fixture's, not the service's), and a pooled app answers a long-poll racing an ingest."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests._servers import ServerThread
from trainer_hooks._commands import CommandPoller

_STOP_STEP = {
    "steps": [{"step": 0, "metrics": {"entropy": 1.5, "loss": None}, "non_finite": ["loss"]}]
}


def test_server_thread_refuses_sessions_on_one_connection(app: FastAPI) -> None:
    with pytest.raises(RuntimeError, match="share one database connection"), ServerThread(app):
        pass


class _Trainer:
    """The command target: notes that the early_stop arrived."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.last_step: int | None = 0

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        self.stopped.set()

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: Any = None) -> None:
        pass


def _ingest_racing_the_poll(url: str, index: int, statuses: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=30.0) as client:
        run = client.post("/api/v1/runs", json={"name": f"race-{index}", "group_size": 8})
        run.raise_for_status()
        run_id = run.json()["id"]
        trainer = _Trainer()
        poller = CommandPoller(url, run_id, trainer, wait=20.0).start()
        try:
            # No pause: the poll's first look at the store races the ingest and its detection.
            statuses.append(
                client.post(f"/api/v1/runs/{run_id}/steps", json=_STOP_STEP).status_code
            )
            assert trainer.stopped.wait(10.0), f"run {run_id}: the early_stop never arrived"
        finally:
            poller.close(timeout=1.0)


def test_ingests_racing_long_polls_answer_200(server: ServerThread) -> None:
    statuses: list[int] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for round_ in range(3):
                _ingest_racing_the_poll(server.url, index * 10 + round_, statuses)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert statuses == [200] * 12
