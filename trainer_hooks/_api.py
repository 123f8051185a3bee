"""The service's endpoints as the trainer calls them: every path comes from
:class:`service.wire.paths.ApiPaths`, every call goes through :class:`ServiceApi`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from service.wire.paths import ApiPaths

__all__ = ["ServiceApi"]


class ServiceApi:
    """One HTTP connection pool to the service (``http``: base URL, headers and timeouts set by
    its owner). Each method is one request; transport errors raise ``httpx.HTTPError`` and every
    answer, error statuses included, is returned for the caller to read."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def close(self) -> None:
        self.http.close()

    def register_run(self, spec: Mapping[str, Any]) -> httpx.Response:
        return self.http.post(ApiPaths.runs(), json=spec)

    def update_run(self, run_id: int, change: Mapping[str, Any]) -> httpx.Response:
        return self.http.patch(ApiPaths.run(run_id), json=change)

    def post_steps(self, run_id: int, body: bytes) -> httpx.Response:
        """A batch already serialised (``{"steps": [...]}``, see ``_spool.encode_body``)."""
        return self.http.post(
            ApiPaths.steps(run_id), content=body, headers={"content-type": "application/json"}
        )

    def collapse(self, run_id: int, *, timeout: float) -> httpx.Response:
        return self.http.get(ApiPaths.collapse(run_id), timeout=timeout)

    def poll_commands(self, run_id: int, *, wait: float) -> httpx.Response:
        return self.http.get(ApiPaths.commands(run_id), params={"wait": wait})

    def ack_command(self, run_id: int, command_id: int, body: Mapping[str, Any]) -> httpx.Response:
        return self.http.post(ApiPaths.command_ack(run_id, command_id), json=body)
