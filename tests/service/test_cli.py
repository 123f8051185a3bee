"""The command line as a newcomer meets it: every option has help text, and every start-up
failure is one line that names the setting, its value and the fix, with exit code 2."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from service.cli import build_parser


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:  # argparse has no public walk of its actions
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_cli_option_and_argument_has_help_text() -> None:
    bare = [
        f"{path}: {action.dest}"
        for path, action in _actions(build_parser(), "sharpwatch")
        if not action.help
    ]
    assert bare == []


def _serve(
    env: dict[str, str], *args: str, prelude: str = "pass"
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SHARPWATCH_")}
    code = f"{prelude}; from service.cli import main; raise SystemExit(main(['serve', *{args!r}]))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_naming(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "serving" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_missing_sqlite_directory_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nowhere/sharpwatch.db"
    line = _one_line_naming(
        _serve({"SHARPWATCH_DATABASE_URL": url}), "SHARPWATCH_DATABASE_URL", url, "mkdir"
    )
    assert "does not exist" in line


def test_postgres_url_without_the_driver_names_the_extra() -> None:
    line = _one_line_naming(
        _serve(
            {"SHARPWATCH_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test"},
            prelude="import sys; sys.modules['psycopg'] = None",
        ),
        "SHARPWATCH_DATABASE_URL",
    )
    assert 'pip install "sharpwatch[postgres]"' in line


def test_unreachable_postgres_is_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    _one_line_naming(
        _serve({"SHARPWATCH_DATABASE_URL": url}), "SHARPWATCH_DATABASE_URL", "cannot connect"
    )


def test_port_in_use_fails_before_claiming_to_serve(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _serve(
            {"SHARPWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}, "--port", str(port)
        )
    line = _one_line_naming(result, "SHARPWATCH_PORT", str(port), "already in use")
    assert "--port" in line


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    line = _one_line_naming(
        _serve(
            {
                "SHARPWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
                "SHARPWATCH_REDIS_URL": "redis://127.0.0.1:1/0",
            }
        ),
        "SHARPWATCH_REDIS_URL",
        "redis://127.0.0.1:1/0",
    )
    assert "unset it" in line


def test_invalid_setting_value_is_one_line(tmp_path: Path) -> None:
    _one_line_naming(
        _serve({"SHARPWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/s.db", "SHARPWATCH_PORT": "x"}),
        "SHARPWATCH_PORT",
        "'x'",
    )


def test_unsafe_combination_is_one_line(tmp_path: Path) -> None:
    _one_line_naming(
        _serve(
            {"SHARPWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/s.db", "SHARPWATCH_WORKERS": "2"}
        ),
        "SHARPWATCH_WORKERS=2",
        "SHARPWATCH_REDIS_URL",
    )
