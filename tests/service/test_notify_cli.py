"""``sharpwatch notify channels add/list/delete`` on a real SQLite database."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from service.cli import main

URL = "https://hooks.slack.com/services/T000/B000/cli-secret-token"


def test_add_list_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHARPWATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setattr("sys.stdin", io.StringIO(URL + "\n"))
    args = ["notify", "channels", "add", "--name", "oncall", "--kind", "slack", "--url", "-"]
    assert main([*args, "--severity", "critical", "--event", "alert_opened"]) == 0
    assert "created slack channel 1 (oncall) → https://hooks.slack.com/…" in capsys.readouterr().out
    hook = ["notify", "channels", "add", "--name", "hook", "--kind", "webhook", "--url", URL]
    assert main(hook) == 0
    created = capsys.readouterr().out
    assert "signing secret, shown only once" in created
    secret = created.strip().splitlines()[-1]
    assert main(["notify", "channels", "list"]) == 0
    listing = capsys.readouterr().out
    assert "oncall" in listing
    assert "severities=critical" in listing
    assert "events=alert_opened" in listing
    assert "cli-secret-token" not in listing
    assert secret not in listing
    assert main(["notify", "channels", "delete", "1"]) == 0
    assert main(["notify", "channels", "list"]) == 0
    assert "oncall" not in capsys.readouterr().out.split("deleted channel 1")[-1]
    assert main(["notify", "channels", "delete", "1"]) == 1
    assert "channel 1 does not exist" in capsys.readouterr().err
    bad = ["notify", "channels", "add", "--name", "x", "--kind", "slack", "--url", "ftp://x"]
    assert main(bad) == 2
    assert "url" in capsys.readouterr().err
