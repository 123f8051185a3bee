"""The trainer hooks call the service only through ``ServiceApi``, whose paths come from
``service.wire.paths.ApiPaths``; every one of them is a route of the service (issue 15)."""

from __future__ import annotations

import json
import re
import threading

import httpx
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from service.wire.paths import ApiPaths
from tests._routes import api_routes
from trainer_hooks import CommandPoller, SharpwatchClient
from trainer_hooks._api import ServiceApi

CALLS = {
    ("POST", ApiPaths.runs()),
    ("PATCH", ApiPaths.run(7)),
    ("POST", ApiPaths.steps(7)),
    ("GET", ApiPaths.collapse(7)),
    ("GET", ApiPaths.commands(7)),
    ("POST", ApiPaths.command_ack(7, 3)),
}


def test_every_client_path_is_a_route_of_the_service() -> None:
    app = create_app(Settings(database_url="sqlite://"), registry=CollectorRegistry())
    routes = [
        (method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", route.path) + "$"))
        for route in api_routes(app)
        for method in route.methods
    ]
    for method, path in CALLS:
        assert any(m == method and pattern.match(path) for m, pattern in routes), (method, path)


class _Recorder:
    """A fake service: answers each call and records (method, path)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls.append((request.method, request.url.path))
        path = request.url.path
        if path == ApiPaths.runs():
            run = {"id": 7, "name": "r", "project": "p", "group_size": 4, "kl_beta": 0.0}
            return httpx.Response(201, json={**run, "status": "running"})
        if path == ApiPaths.steps(7):
            steps = [s["step"] for s in json.loads(request.content)["steps"]]
            return httpx.Response(200, json={"accepted": steps, "duplicates": []})
        if path == ApiPaths.commands(7):
            return httpx.Response(200, json=[])
        return httpx.Response(200, json={})


def test_the_client_and_the_poller_call_the_wire_paths() -> None:
    recorder = _Recorder()
    transport = httpx.MockTransport(recorder)
    with SharpwatchClient("http://sw", transport=transport, spool_dir=False) as client:
        client.register_run("r", project="p", group_size=4)
        client.submit({"step": 0, "metrics": {"entropy": 0.5}})
        assert client.flush(5.0)
        assert client.update_run({"status": "finished"}).status_code == 200
        assert client.collapse_status().status_code == 200
    poller = CommandPoller("http://sw", 7, _Target(), transport=transport, wait=0.01)
    assert poller._post_ack(3, {"status": "applied", "step": 0})
    poller.start()
    try:
        for _ in range(200):
            with recorder.lock:
                if ("GET", ApiPaths.commands(7)) in recorder.calls:
                    break
            threading.Event().wait(0.01)
    finally:
        poller.close()
    called = set(recorder.calls)
    assert called == CALLS


def test_service_api_builds_each_request_from_the_paths() -> None:
    recorder = _Recorder()
    api = ServiceApi(httpx.Client(base_url="http://sw", transport=httpx.MockTransport(recorder)))
    api.register_run({"name": "r"})
    api.update_run(7, {"status": "failed"})
    api.post_steps(7, b'{"steps":[{"step":1}]}')
    api.collapse(7, timeout=1.0)
    api.poll_commands(7, wait=0.5)
    api.ack_command(7, 3, {"status": "applied"})
    api.close()
    assert set(recorder.calls) == CALLS


class _Target:
    last_step = None

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: object = None) -> None:
        pass

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        pass
