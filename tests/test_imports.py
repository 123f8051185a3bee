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


def test_hooks_extra_brings_numpy_so_importing_the_hooks_is_silent() -> None:
    """torch without numpy warns "Failed to initialize NumPy" on every import: the ``hooks``
    extra must bring numpy, and importing the hooks prints nothing."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    hooks = pyproject["project"]["optional-dependencies"]["hooks"]
    assert any(req.split(">")[0].split("=")[0].strip() == "numpy" for req in hooks), hooks
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import trainer_hooks"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stderr == ""
