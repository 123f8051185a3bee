"""Peak memory of the service per request body (issue 14, "limits before parsing").

Serves each source tree given with ``sharpwatch serve`` (SQLite, auth on, one worker) and
reports, from the process's VmHWM (reset just before each measurement):

- flood: three 31 MB bodies of tiny JSON objects (``{"steps": [{}, {}, ...]}``) sent at once
  with no token or a wrong one; peak RSS growth in MiB;
- accepted: one ingest body of about ``--body-mb`` MB of realistic step records (2000 queries
  per step, ids like ``gsm8k/train/000017``) with the run's own token; peak RSS growth as a
  multiple of the body's size, and the request's wall time.

    python benchmarks/bench_request_memory.py --source /tmp/before --source .
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_peers import free_port, stop, wait_http  # noqa: E402
from tests.reliability.test_request_memory import (  # noqa: E402
    _flood,
    realistic_body,
    tiny_objects,
)


def _status(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


@contextlib.contextmanager
def serve(source: Path, directory: Path) -> Iterator[tuple[str, int, str]]:
    """(url, pid, operator token) of ``sharpwatch serve`` run from ``source``."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        SHARPWATCH_DATABASE_URL=f"sqlite:///{directory / 'sw.db'}",
        SHARPWATCH_HOST="127.0.0.1",
        SHARPWATCH_PORT=str(port),
        SHARPWATCH_AUTH="true",
        SHARPWATCH_LOG_LEVEL="warning",
        PYTHONPATH=str(source),
    )
    created = subprocess.run(
        [sys.executable, "-m", "service.cli", "tokens", "create", "--name", "bench"],
        env=env,
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc=proc)
        yield url, proc.pid, token
    finally:
        stop(proc)


def measure(source: Path, body_mb: float) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as directory,
        serve(source, Path(directory)) as (
            url,
            pid,
            operator,
        ),
    ):
        ops = {"authorization": f"Bearer {operator}"}
        run = httpx.post(
            f"{url}/api/v1/runs",
            json={"project": "bench", "name": "memory", "group_size": 8, "kl_beta": 0.0},
            headers=ops,
        ).json()
        ingest = {"authorization": f"Bearer {run['ingest_token']}"}
        httpx.post(f"{url}/api/v1/runs/{run['id']}/steps", json={"steps": []}, headers=ingest)

        flood = tiny_objects(31_000_000)
        before = _status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        answers: list[bytes] = []
        senders = [
            threading.Thread(target=_flood, args=(url, run["id"], token, flood, answers))
            for token in (None, "swi_wrong-token-wrong-token-wrong", None)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(300)
        flood_growth = _status(pid, "VmHWM") - before
        del flood

        body = realistic_body(body_mb)
        time.sleep(1.0)
        before = _status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        start = time.perf_counter()
        answer = httpx.post(
            f"{url}/api/v1/runs/{run['id']}/steps",
            content=body,
            headers={**ingest, "content-type": "application/json"},
            timeout=600,
        )
        seconds = time.perf_counter() - start
        assert answer.status_code == 200, answer.text[:300]
        accepted_growth = _status(pid, "VmHWM") - before
    return {
        "flood_peak_growth_mib": flood_growth / 2**20,
        "body_mb": len(body) / 1e6,
        "accepted_peak_growth_x_body": accepted_growth / len(body),
        "accepted_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, action="append", required=True)
    parser.add_argument("--body-mb", type=float, default=31.0)
    args = parser.parse_args()
    for source in args.source:
        result = measure(source.resolve(), args.body_mb)
        print(json.dumps({"source": str(source), **{k: round(v, 2) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
