"""Real processes for fault and load tests: ``sharpwatch serve``, a private redis-server and a
private PostgreSQL cluster, each on an ephemeral loopback port, each killable and restartable.
Every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests._servers import unavailable

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout} s")


def _answers(url: str, status: int = 200) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == status
    except httpx.HTTPError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServiceProcess:
    """``sharpwatch serve`` as a subprocess in its own process group (so SIGKILL takes the
    workers too), restartable on the same port."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 1,
        redis_url: str | None = None,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SHARPWATCH_DATABASE_URL": database_url,
            "SHARPWATCH_HOST": "127.0.0.1",
            "SHARPWATCH_PORT": str(self.port),
            "SHARPWATCH_WORKERS": str(workers),
            "SHARPWATCH_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        self.env.pop("SHARPWATCH_REDIS_URL", None)
        if redis_url:
            self.env["SHARPWATCH_REDIS_URL"] = redis_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(f"sharpwatch on {self.url}", lambda: self._up(), timeout)
        return self

    def _up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"sharpwatch exited with {self.process.returncode}: "
                + self.log_path.read_text(errors="replace")[-2000:]
            )
        return _answers(f"{self.url}/healthz")

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, no flush."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        wait_until("the port to close", lambda: not _port_open(self.port), 30)

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


class RedisProcess:
    """A private redis-server (no persistence) on an ephemeral port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", "not on PATH")
        assert binary is not None
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until("redis-server", lambda: _port_open(self.port), 20)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=20)
        self.process = None
        wait_until("redis port to close", lambda: not _port_open(self.port), 20)


class PostgresCluster:
    """A private PostgreSQL cluster: initdb into a fresh directory, pg_ctl start/stop on an
    ephemeral port. initdb refuses to run as root, so as root it runs as the ``postgres`` OS
    user (via ``runuser``)."""

    def __init__(self) -> None:
        self.initdb = _pg_binary("initdb")
        self.pg_ctl = _pg_binary("pg_ctl")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="sharpwatch-pg-"))
        self.data = self.directory / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("PostgreSQL cluster", "running as root and no 'postgres' OS user")
            runuser = shutil.which("runuser") or shutil.which("su")
            if runuser is None:
                unavailable("PostgreSQL cluster", "running as root and no runuser/su")
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self.user = "postgres"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command: list[str] = list(argv)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): "
                f"{result.stdout.decode(errors='replace')[-1500:]}"
                f"{result.stderr.decode(errors='replace')[-1500:]}"
            )

    def init(self) -> PostgresCluster:
        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        return self

    def start(self) -> PostgresCluster:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _pg_binary(name: str) -> str:
    candidate = PG_BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        unavailable("PostgreSQL binaries", f"{name} not found in {PG_BIN} or on PATH")
    assert found is not None
    return found


def stored_steps(url: str, run_id: int) -> list[dict[str, Any]]:
    """Every stored step of the run, in order, read page by page over HTTP."""
    steps: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = httpx.get(
            f"{url}/api/v1/runs/{run_id}/steps",
            params={"from": start, "limit": 10000, "metrics": "entropy"},
            timeout=60,
        ).json()
        steps.extend(page["items"])
        start = None if page["next_cursor"] is None else int(page["next_cursor"])
    return steps
