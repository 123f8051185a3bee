"""An import into a service with authentication on: an operator token registers and reads, the
run's own ingest token sends the steps and ends the run; without a token the error says what
to pass. Also the progress callback behind the progress bar."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.db.engine import make_engine, make_session_factory
from service.db.migrate import upgrade
from service.importer import run_import
from service.importer._upload import ServiceError
from service.settings import Settings
from service.storage import tokens as token_store
from tests._servers import ServerThread
from tests.service.importer._logs import write_summary_writer_run


def test_import_with_authentication(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        _, operator = token_store.issue(session, "operator", "importer")
        _, reader = token_store.issue(session, "read", "grafana")
    engine.dispose()
    write_summary_writer_run(tmp_path / "tb" / "secured", steps=50)
    app = create_app(Settings(database_url=url, auth=True), registry=CollectorRegistry())
    with ServerThread(app) as server:
        with pytest.raises(ServiceError, match=r"401.*--token or SHARPWATCH_TOKEN"):
            run_import([tmp_path / "tb"], url=server.url)
        with pytest.raises(ServiceError, match="403"):
            run_import([tmp_path / "tb"], url=server.url, token=reader)
        seen: list[tuple[int, int]] = []
        (report,) = run_import(
            [tmp_path / "tb"],
            url=server.url,
            token=operator,
            progress=lambda done, total: seen.append((done, total)),
        )
        again = run_import([tmp_path / "tb"], url=server.url, token=operator)[0]
    assert (report.accepted, report.duplicates) == (50, 0)
    # The first import ended the run (and its ingest token); the re-registration issues another.
    assert (again.run_id, again.accepted, again.duplicates) == (report.run_id, 0, 50)
    floor = report.first_alert("entropy_floor")
    assert floor is not None
    assert floor.first_step == 46
    assert seen == [(0, 50), (50, 50)]  # read and mapped, then one batch of 50 steps


def test_progress_bar_on_a_terminal(sqlite_server: ServerThread, tmp_path: Path) -> None:
    """On a terminal (a pseudo-terminal here) stderr shows the reading spinner and the bar."""
    import os
    import pty
    import subprocess
    import sys

    write_summary_writer_run(tmp_path / "tb" / "bar", steps=30)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "import",
            str(tmp_path / "tb"),
            "--url",
            sqlite_server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=dict(os.environ, COLUMNS="100", TERM="xterm"),
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    assert proc.returncode == 0
    assert b"importing steps" in shown
    assert b"30/30" in shown
    assert b"30 new, 0 already stored" in out  # the report itself goes to stdout
