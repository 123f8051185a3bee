"""SIGTERM and SIGINT with the client's write-ahead log (issue 14, failure 2), each in a fresh
Python process: what a step submitted before the signal leaves on disk, and that the handlers
chain to what was installed before (the signal keeps its usual effect) and leave when the
client closes. The full kill-and-restart accounting against a real service is in
tests/reliability/test_trainer_kill.py."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from tests._servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _python(code: str, spool: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    url = url or f"http://127.0.0.1:{_free_port()}"  # by default nothing listens: service down
    prelude = f"""
        import os, signal, sys, threading, time
        from trainer_hooks import SharpwatchClient
        URL = {url!r}
        SPOOL = {str(spool)!r}
        def record(step):
            return {{"step": step, "metrics": {{"entropy": 1.0}}, "queries": []}}
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(code)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _logged_steps(spool: Path) -> list[int]:
    (log,) = spool.glob("*.jsonl")
    return [json.loads(line)["step"] for line in log.read_text().splitlines()]


def test_sigterm_with_the_default_action_leaves_every_step_in_the_spool(tmp_path: Path) -> None:
    result = _python(
        """
        client = SharpwatchClient(URL, spool_dir=SPOOL, max_backoff=0.2)
        client.open_run("sigterm", group_size=4)
        for step in range(200):
            client.submit(record(step))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("still alive")
        """,
        tmp_path,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]  # the default action
    assert "still alive" not in result.stdout
    assert _logged_steps(tmp_path) == list(range(200))


def test_sigterm_with_the_service_up_sends_what_is_unsent_before_the_process_ends(
    tmp_path: Path, sqlite_server: ServerThread
) -> None:
    result = _python(
        """
        client = SharpwatchClient(URL, spool_dir=SPOOL, flush_interval=0.3, batch_size=10)
        run = client.register_run("sigterm-up", group_size=4)
        print(run.id, flush=True)
        for step in range(60):
            client.submit(record(step))
        os.kill(os.getpid(), signal.SIGTERM)  # most of the 60 are not sent yet
        time.sleep(30)
        """,
        tmp_path,
        url=sqlite_server.url,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    run_id = int(result.stdout.split()[0])
    steps = httpx.get(
        f"{sqlite_server.url}/api/v1/runs/{run_id}/steps", params={"limit": 1000}
    ).json()["items"]
    assert [s["step"] for s in steps] == list(range(60))


def test_sigint_raises_keyboard_interrupt_and_the_spool_holds_every_step(tmp_path: Path) -> None:
    result = _python(
        """
        client = SharpwatchClient(URL, spool_dir=SPOOL, max_backoff=0.2)
        client.open_run("sigint", group_size=4)
        try:
            for step in range(100):
                client.submit(record(step))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        os._exit(0)  # no close(), no atexit: only what the signal did
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "interrupted"
    assert _logged_steps(tmp_path) == list(range(100))


def test_the_trainers_own_handler_still_runs_and_is_restored_on_close(tmp_path: Path) -> None:
    result = _python(
        """
        from trainer_hooks import _exit
        calls = []
        def mine(signum, frame):
            calls.append(signum)
        signal.signal(signal.SIGTERM, mine)
        client = SharpwatchClient(URL, spool_dir=SPOOL, max_backoff=0.2)
        client.open_run("own", group_size=4)
        assert _exit.installed()[signal.SIGTERM] is mine
        assert signal.getsignal(signal.SIGTERM) is not mine  # ours, chaining to it
        for step in range(10):
            client.submit(record(step))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        print("calls", calls)
        client.close(timeout=0.2)
        print("restored", signal.getsignal(signal.SIGTERM) is mine)
        print("sigint", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:3] == [
        f"calls [{int(signal.SIGTERM)}]",
        "restored True",
        "sigint True",
    ]
    assert _logged_steps(tmp_path) == list(range(10))


def test_no_handler_is_installed_from_another_thread(tmp_path: Path) -> None:
    result = _python(
        """
        from trainer_hooks import _exit
        before = signal.getsignal(signal.SIGTERM)
        clients = []
        thread = threading.Thread(target=lambda: clients.append(
            SharpwatchClient(URL, spool_dir=SPOOL)))
        thread.start()
        thread.join()
        print(signal.getsignal(signal.SIGTERM) is before, _exit.installed() == {})
        clients[0].close(timeout=0.1)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True True"
