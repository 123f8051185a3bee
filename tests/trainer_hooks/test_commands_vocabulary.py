"""The trainer's command poller speaks the wire's command vocabulary (issue 15): it acts on each
``CommandKind``, rejects any other kind, and every ack it posts is a valid ``CommandAck`` whose
status is a ``CommandStatus`` value."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from service.schemas.commands import CommandAck
from service.wire import CommandKind, CommandStatus
from trainer_hooks._commands import CommandPoller
from trainer_hooks._types import AlphaChange

RUN_ID = 7
LAST_STEP = 41


class _Target:
    last_step = LAST_STEP

    def set_alpha(self, new_alpha: float, reason: str = "", *, on_applied: Any = None) -> None:
        on_applied(AlphaChange(new_alpha, reason, LAST_STEP, LAST_STEP + 1))

    def request_stop(self, reason: str, best_step: int | None = None) -> None:
        pass


def test_each_kind_is_acted_on_and_every_ack_is_a_command_ack() -> None:
    commands = [
        {"id": 1, "kind": CommandKind.ADJUST_ALPHA.value, "alpha": 0.5, "reason": "r"},
        {"id": 2, "kind": "rewind", "reason": "not a kind"},
        {"id": 3, "kind": CommandKind.EARLY_STOP.value, "reason": "r", "best_step": 30},
    ]
    acks: dict[int, dict[str, Any]] = {}
    all_acked = threading.Event()
    polls = 0

    def serve(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.method == "GET":
            polls += 1
            return httpx.Response(200, json=commands if polls == 1 else [])
        acks[int(request.url.path.split("/")[-2])] = json.loads(request.content)
        if len(acks) == len(commands):
            all_acked.set()
        return httpx.Response(200, json={})

    poller = CommandPoller(
        "http://sharpwatch.test", RUN_ID, _Target(), transport=httpx.MockTransport(serve)
    ).start()
    try:
        assert all_acked.wait(10), acks
    finally:
        poller.close()

    assert acks == {
        1: {"status": "applied", "step": LAST_STEP + 1},
        2: {"status": "rejected", "detail": "unknown kind 'rewind'"},
        3: {"status": "applied", "step": LAST_STEP},
    }
    for body in acks.values():
        ack = CommandAck.model_validate(body)
        assert ack.status in {CommandStatus.APPLIED, CommandStatus.REJECTED}
