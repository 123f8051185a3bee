"""The wire contract loads with pydantic alone: no torch, FastAPI or SQLAlchemy (issue 15)."""

from __future__ import annotations

import subprocess
import sys

import service.wire
from service.wire import CommandKind, Verdict


def test_importing_the_wire_pulls_in_neither_side() -> None:
    probe = (
        "import sys, service.wire\n"
        "heavy = sorted(m for m in ('torch', 'fastapi', 'sqlalchemy', 'starlette', 'httpx')"
        " if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"service.wire imported {out}"


def test_enum_members_are_their_wire_strings() -> None:
    assert CommandKind.EARLY_STOP == "early_stop"
    assert [v.value for v in Verdict] == ["healthy", "warning", "critical", "stopped", "failed"]
    assert sorted(service.wire.__all__) == list(service.wire.__all__)
