"""A lost dependency is logged once with its cause, then with backoff (not once per request)."""

from __future__ import annotations

import logging

import pytest

from service.log_throttle import OutageLog


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_failure_is_logged_with_its_cause_then_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    outage = OutageLog(logging.getLogger("t"), "db down", clock=clock)
    logged = []
    with caplog.at_level("WARNING", logger="t"):
        for tick in range(600):  # 10 requests a second for 60 s
            clock.now = tick / 10
            logged.append(outage.failure(ConnectionRefusedError("port 5432 refused")))
    times = [i / 10 for i, was in enumerate(logged) if was]
    assert times[:5] == [0.0, 1.0, 3.0, 7.0, 15.0]  # 1, 2, 4, 8 s apart
    assert len(times) == 6
    first = caplog.records[0]
    assert first.__dict__["cause"] == "ConnectionRefusedError: port 5432 refused"
    assert sum(r.__dict__["failures_since_last_log"] for r in caplog.records) == len(
        [t for t in range(600) if t / 10 <= times[-1]]
    )


def test_a_quiet_period_starts_afresh() -> None:
    clock = _Clock()
    outage = OutageLog(logging.getLogger("t"), "db down", reset_after=30, clock=clock)
    assert outage.failure("x")
    clock.now = 0.5
    assert not outage.failure("x")
    clock.now = 100.0
    assert outage.failure("x")


def test_a_database_outage_is_logged_once_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from service.app import create_app
    from service.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/gone"
    app = create_app(Settings(database_url=url), registry=CollectorRegistry())
    with (
        caplog.at_level("WARNING", logger="service.app"),
        TestClient(app, base_url="http://localhost") as client,
    ):
        codes = {client.get("/api/v1/runs").status_code for _ in range(15)}
    assert codes == {503}
    lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(lines) == 1
    assert "refused" in lines[0].__dict__["cause"].lower()
