"""Import isolation: the service needs no torch, the hooks need no web stack."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(statement: str, modules: list[str]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_service_does_not_import_torch() -> None:
    assert _loaded_after("import service.app, service.cli", ["torch"]) == []


def test_trainer_hooks_does_not_import_web_or_sql() -> None:
    assert _loaded_after("import trainer_hooks", ["fastapi", "sqlalchemy", "starlette"]) == []
