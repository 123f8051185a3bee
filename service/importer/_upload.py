"""Send a mapped run to a sharpwatch service through its REST API, the path a live trainer's
steps take: register (``source: imported``), ingest in batches (the service stores each batch,
then runs the detectors over its new steps in step order, exactly as for a live run), end the
run, and read back what the detectors concluded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from service.importer._mapping import MappedRun
from service.importer._model import LogReadError
from service.schemas.steps import MAX_STEPS_PER_BATCH
from service.wire import RunSource, RunStatus

__all__ = ["RunTarget", "ServiceError", "Uploaded", "upload"]

API = "/api/v1"
ATTEMPTS = 3


class ServiceError(Exception):
    """The service refused or could not be reached; the message says what to do."""


@dataclass(frozen=True, slots=True)
class RunTarget:
    project: str
    name: str
    group_size: int
    kl_beta: float
    config: dict[str, Any]


@dataclass(slots=True)
class Uploaded:
    run: dict[str, Any]
    accepted: int
    duplicates: int
    alerts: list[dict[str, Any]]
    commands: list[dict[str, Any]]
    alpha_decisions: list[dict[str, Any]]


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    for attempt in range(ATTEMPTS):
        try:
            response = client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if attempt + 1 == ATTEMPTS:
                raise ServiceError(
                    f"cannot reach the service at {client.base_url} ({exc}); start it with "
                    "`sharpwatch serve` or pass --url"
                ) from None
            time.sleep(0.5 * (attempt + 1))
            continue
        if response.status_code >= 500 and attempt + 1 < ATTEMPTS:
            time.sleep(0.5 * (attempt + 1))
            continue
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            hint = ""
            if response.status_code in (401, 403):
                hint = " (pass an operator token with --token or SHARPWATCH_TOKEN)"
            raise ServiceError(f"{method} {path}: {response.status_code} {detail}{hint}")
        return response.json()
    raise AssertionError("unreachable")


def _all_pages(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor is not None:
            params["cursor"] = cursor
        page = _call(client, "GET", path, params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None:
            return items


def upload(
    client: httpx.Client,
    target: RunTarget,
    mapped: MappedRun,
    *,
    token: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Uploaded:
    """Register, ingest, end and read back. ``on_batch(n)`` after each batch of ``n`` steps."""
    operator = {"Authorization": f"Bearer {token}"} if token else {}
    run = _call(
        client,
        "POST",
        f"{API}/runs",
        json={
            "name": target.name,
            "project": target.project,
            "group_size": target.group_size,
            "kl_beta": target.kl_beta,
            "config": target.config,
            "source": RunSource.IMPORTED,
        },
        headers=operator,
    )
    if run.get("source") != RunSource.IMPORTED:
        raise LogReadError(
            f"project {target.project!r} already has a live run named {target.name!r}; "
            "import under another --name"
        )
    run_id = run["id"]
    writer = {"Authorization": f"Bearer {run['ingest_token']}"} if run.get("ingest_token") else {}
    accepted = duplicates = 0
    for start in range(0, len(mapped.steps), MAX_STEPS_PER_BATCH):
        batch = mapped.steps[start : start + MAX_STEPS_PER_BATCH]
        result = _call(
            client, "POST", f"{API}/runs/{run_id}/steps", json={"steps": batch}, headers=writer
        )
        accepted += len(result["accepted"])
        duplicates += len(result["duplicates"])
        if on_batch is not None:
            on_batch(len(batch))
    if run["status"] == RunStatus.RUNNING:
        _call(
            client,
            "PATCH",
            f"{API}/runs/{run_id}",
            json={"status": RunStatus.FINISHED},
            headers=writer or operator,
        )
    reader = operator or writer
    client.headers.update(reader)
    try:
        return Uploaded(
            run=_call(client, "GET", f"{API}/runs/{run_id}"),
            accepted=accepted,
            duplicates=duplicates,
            alerts=_all_pages(client, f"{API}/runs/{run_id}/alerts"),
            commands=_all_pages(client, f"{API}/runs/{run_id}/commands/history"),
            alpha_decisions=_call(client, "GET", f"{API}/runs/{run_id}/alpha-decisions"),
        )
    finally:
        for key in reader:
            client.headers.pop(key, None)
