"""A real trainer process (``trainer_hooks.watch``) killed at random moments during service
outages (issue 14, failure 2), then restarted under the same name, over and over: SIGKILL,
SIGTERM with Python's default action, SIGTERM with the trainer's own handler, SIGINT.

The promise checked with exact accounting: every step whose ``step()`` returned more than the
fsync interval (1 s) before the kill is stored exactly once, with the content that incarnation
produced; nothing is stored that no incarnation produced; the stored steps are 0..N-1 with no
gap and no step twice (a restarted trainer numbers after its unsent spool); each signal still has
its usual effect (the exit status), and the trainer's own handler still runs.

The service is a real ``sharpwatch serve`` on SQLite, killed and restarted on one port; the
random moments come from a seed printed on failure (``SHARPWATCH_KILL_SEED`` replays one).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.reliability._procs import ServiceProcess, stored_steps, wait_until
from tests.reliability._trainer import entropy_of

ROOT = Path(__file__).resolve().parents[2]
FSYNC_INTERVAL = 1.0  # the client's default
NAME = "killed-trainer"


@dataclass
class Trainer:
    url: str
    incarnation: int
    env: dict[str, str]
    log_path: Path
    own_handler: bool = False
    steps: list[tuple[int, float, float]] = field(default_factory=list)  # step, time, entropy
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def start(self, total_steps: int = 100_000, pace: float = 0.02) -> Trainer:
        argv = [
            sys.executable,
            "-m",
            "tests.reliability._trainer",
            self.url,
            NAME,
            str(self.incarnation),
            str(total_steps),
            str(pace),
        ]
        if self.own_handler:
            argv.append("own-handler")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
            )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        with self.process.stdout as stdout:
            for line in stdout:
                self.lines.append(line.strip())
                parts = line.split()
                if parts and parts[0] == "step":
                    self.steps.append((int(parts[1]), float(parts[2]), float(parts[3])))

    def wait_steps(self, count: int, timeout: float = 60.0) -> None:
        target = len(self.steps) + count
        wait_until(f"trainer {self.incarnation}: {count} more steps", self._has(target), timeout)

    def _has(self, count: int):  # type: ignore[no-untyped-def]
        def check() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"trainer exited early ({self.process.returncode}): "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            return len(self.steps) >= count

        return check

    def kill(self, signum: int) -> tuple[float, int]:
        assert self.process is not None
        moment = time.time()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        time.sleep(0.1)  # let the reader thread take the last lines
        return moment, code


@pytest.mark.slow
@pytest.mark.parametrize(
    "compact_bytes", [None, 1], ids=["default-log", "log-compacted-whenever-drained"]
)
def test_a_trainer_killed_during_outages_keeps_every_promised_step_exactly_once(
    tmp_path: Path, compact_bytes: int | None
) -> None:
    seed = int(os.environ.get("SHARPWATCH_KILL_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    database_url = f"sqlite:///{tmp_path / 'sharpwatch.db'}"
    service = ServiceProcess(database_url, log_path=tmp_path / "service.log").start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SHARPWATCH_SPOOL_DIR": str(tmp_path / "spool"),
        "SHARPWATCH_TEST_COMPACT_BYTES": "" if compact_bytes is None else str(compact_bytes),
    }
    # signal, the trainer's own SIGTERM handler?, trainer starts while the service is down?
    plan = [
        (signal.SIGKILL, False, False),
        (signal.SIGTERM, False, True),
        (signal.SIGTERM, True, False),
        (signal.SIGINT, False, True),
        (signal.SIGKILL, False, True),
    ]
    trainers: list[Trainer] = []
    kills: list[tuple[float, int]] = []
    service_up = True
    try:
        for incarnation, (signum, own, start_down) in enumerate(plan):
            if start_down and service_up:
                service.kill()
                service_up = False
            if not start_down and not service_up:
                service.start()
                service_up = True
            trainer = Trainer(
                service.url, incarnation, env, tmp_path / f"trainer{incarnation}.log", own
            ).start()
            trainers.append(trainer)
            trainer.wait_steps(rng.randint(2, 10))
            if not service_up:  # up for a while (late registration, the spool drains), then down
                service.start()
                service_up = True
                trainer.wait_steps(rng.randint(2, 10))
            service.kill()  # the outage during which the trainer dies
            service_up = False
            time.sleep(rng.uniform(0.1, 2.0))
            moment, code = trainer.kill(signum)
            kills.append((moment, code))
            expected = {
                signal.SIGKILL: -signal.SIGKILL,
                signal.SIGTERM: 3 if own else -signal.SIGTERM,
                signal.SIGINT: 130,
            }[signum]
            assert code == expected, (seed, incarnation, trainer.lines[-3:])
            if own:
                assert "own handler" in trainer.lines, seed
            if signum == signal.SIGINT:
                assert "interrupted" in trainer.lines, seed
        # The last incarnation runs to its end with the service up.
        service.start()
        service_up = True
        final = Trainer(service.url, len(plan), env, tmp_path / "trainer-final.log").start(
            total_steps=20, pace=0.01
        )
        trainers.append(final)
        assert final.process is not None
        assert final.process.wait(timeout=120) == 0, final.log_path.read_text()[-2000:]
        time.sleep(0.1)
        assert "done" in final.lines

        # What was promised: killed incarnations' steps older than the fsync interval at the
        # kill, and every step of the incarnation that ended normally.
        promised: dict[int, float] = {}
        allowed: dict[int, set[float]] = {}
        for trainer, (moment, _) in zip(trainers, [*kills, (float("inf"), 0)], strict=True):
            for step, returned, entropy in trainer.steps:
                assert step not in promised, f"seed {seed}: promised step {step} produced again"
                allowed.setdefault(step, set()).add(entropy)
                if returned < moment - FSYNC_INTERVAL or trainer is final:
                    promised[step] = entropy
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                run_id = connection.execute(
                    text("SELECT id FROM runs WHERE name = :n"), {"n": NAME}
                ).scalar_one()
                rows, distinct = connection.execute(
                    text("SELECT count(*), count(DISTINCT step) FROM steps WHERE run_id = :r"),
                    {"r": run_id},
                ).one()
        finally:
            engine.dispose()
        stored = {s["step"]: s["metrics"]["entropy"] for s in stored_steps(service.url, run_id)}
        last = final.steps[-1][0]
        assert sorted(stored) == list(range(last + 1)), f"seed {seed}"
        assert rows == distinct == len(stored), f"seed {seed}"
        for step, entropy in promised.items():
            assert stored.get(step) == entropy, f"seed {seed}: promised step {step}"
        for step, entropy in stored.items():
            # Produced by some incarnation: printed after step() returned, or the step a
            # killed incarnation was inside when it died (it reached the log, step() had not
            # returned): that incarnation's next value.
            in_flight = {
                entropy_of(t.incarnation, len(t.steps))
                for t in trainers[:-1]
                if not t.steps or t.steps[-1][0] + 1 == step
            }
            assert entropy in allowed.get(step, set()) | in_flight, f"seed {seed}: step {step}"
        produced = {step for t in trainers for step, _, _ in t.steps}
        print(
            f"seed {seed}: {len(produced)} step numbers produced, {len(promised)} promised, "
            f"{len(stored)} stored, {len(produced - set(stored))} unpromised lost"
        )
        assert not [p for p in (tmp_path / "spool").glob("*.jsonl") if p.stat().st_size]
    finally:
        for trainer in trainers:
            if trainer.process is not None and trainer.process.poll() is None:
                trainer.process.kill()
                trainer.process.wait(timeout=30)
        service.stop()
