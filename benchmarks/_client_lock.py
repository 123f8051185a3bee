"""What the training thread waits for in ``SharpwatchClient.submit_deferred`` (issue 21).

``python benchmarks/bench_hooks.py --lock`` (the working tree) or ``--lock-vs REF`` (git
``REF``'s ``trainer_hooks`` against the working tree's, each in a child process of
``_trainer_ab.py``, blocks of steps alternating between the two). The client is attached to a
write-ahead log in a temporary directory and an in-process ``httpx.MockTransport`` service
answering 200; each step submits a fresh copy of one unbuilt B = 512 monitor record, as
``Monitor.step`` does, then sleeps (a trainer's forward/backward). Measured without a profiler:
the wall time of ``submit_deferred`` and, within it, of acquiring the client's lock (``_cond``,
timed by a wrapper around its ``RLock``), and how long the client's writer and sender threads
held that lock at a time (the longest holds are what the training thread can meet).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import types
from pathlib import Path
from typing import Any

# name: (the log's compaction threshold in bytes, None = the default 4 MiB; seconds between steps)
CONFIGS: dict[str, tuple[int | None, float]] = {
    "default": (None, 0.02),
    "compact": (256 << 10, 0.02),
    "compact_5ms": (256 << 10, 0.005),
}
LABELS = {
    "default": "default log (compacted at 4 MiB, ~every 100 steps), steps 20 ms apart",
    "compact": "log compacted at 256 KiB (~every 6 steps), steps 20 ms apart",
    "compact_5ms": "log compacted at 256 KiB, steps 5 ms apart",
}


class TimedRLock:
    """An ``RLock`` for ``threading.Condition`` that times the acquires of one thread and how
    long each thread holds it (until release, or until a ``wait`` releases it)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.watched = threading.get_ident()
        self.waits: list[float] = []
        self.holds: dict[str, list[float]] = {}
        self._since = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        t0 = time.perf_counter()
        ok = self._lock.acquire(blocking, timeout)
        now = time.perf_counter()
        if threading.get_ident() == self.watched:
            self.waits.append(now - t0)
        if ok:
            self._since.t = now
        return ok

    __enter__ = acquire

    def _held(self) -> None:
        since = getattr(self._since, "t", None)
        if since is not None:
            name = threading.current_thread().name
            self.holds.setdefault(name, []).append(time.perf_counter() - since)
            self._since.t = None

    def release(self) -> None:
        self._held()
        self._lock.release()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # Condition.wait's protocol, forwarded to the RLock
    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def _release_save(self) -> Any:
        self._held()
        return self._lock._release_save()  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        self._lock._acquire_restore(state)  # type: ignore[attr-defined]
        self._since.t = time.perf_counter()


class _Setup:
    def __init__(self, directory: str, compact_bytes: int | None) -> None:
        import bench_hooks

        import trainer_hooks._client as client_mod
        from trainer_hooks import Monitor
        from trainer_hooks._record import DeferredRecord

        self.lock = TimedRLock()
        shim = types.ModuleType("threading")
        shim.__dict__.update(threading.__dict__)
        timed: Any = self.lock
        shim.Condition = lambda lock=None: threading.Condition(timed)  # type: ignore[attr-defined]
        client_mod.threading = shim  # type: ignore[attr-defined]
        try:
            self.client = bench_hooks._client(directory, True)
        finally:
            client_mod.threading = threading  # type: ignore[attr-defined]
        wal = self.client._wal
        assert wal is not None
        if compact_bytes is not None:
            wal.compact_bytes = compact_bytes
        full, g = bench_hooks._full_inputs()
        record = Monitor(group_size=g, kl_beta=0.04).step(full)._record
        assert isinstance(record, DeferredRecord)  # no sender: the record stays unbuilt
        self.record = record
        self.step = 0


_SETUPS: dict[str, _Setup] = {}
_DIRECTORY: list[str] = []


def burst(name: str, steps: int) -> dict[str, list[float]]:
    """``steps`` submissions of configuration ``name`` (its client made on first use): wall
    time of each ``submit_deferred``, of its lock acquire, and the lock holds meanwhile."""
    compact_bytes, gap = CONFIGS[name]
    if not _DIRECTORY:
        _DIRECTORY.append(tempfile.mkdtemp(prefix="bench-lock-"))
    if name not in _SETUPS:
        _SETUPS[name] = _Setup(os.path.join(_DIRECTORY[0], name), compact_bytes)
    setup = _SETUPS[name]
    lock, client, record = setup.lock, setup.client, setup.record
    lock.waits.clear()
    lock.holds.clear()
    submit = []
    for _ in range(steps):
        fresh = record.with_metrics(dict(record.metrics), list(record.non_finite))
        fresh.step = setup.step
        setup.step += 1
        t0 = time.perf_counter()
        client.submit_deferred(fresh)
        submit.append(time.perf_counter() - t0)
        time.sleep(gap)
    waits = list(lock.waits)
    assert client.flush(timeout=120), client.flush_error
    holds = {k: list(v) for k, v in lock.holds.items()}
    return {
        "submit": submit,
        "acquire": waits[: len(submit)],
        "writer_hold": holds.get("sharpwatch-writer", []),
        "sender_hold": holds.get("sharpwatch-sender", []),
    }


def close() -> None:
    for setup in _SETUPS.values():
        setup.client.close()
    _SETUPS.clear()


KEYS = ("submit", "acquire", "writer_hold", "sender_hold")


def compare(ref: str | None, steps: int, block: int) -> dict[str, dict[str, list[float]]]:
    """Per configuration and tree (``before`` = ``ref``, ``after`` = the working tree; only
    ``after`` without ``ref``): the lists of :func:`burst`, blocks of ``block`` steps
    alternating between the trees."""
    import _trainer_ab

    labels = ("after",) if ref is None else ("before", "after")
    out: dict[str, dict[str, list[float]]] = {
        name: {f"{k}_{lb}": [] for k in KEYS for lb in labels} for name in CONFIGS
    }
    with tempfile.TemporaryDirectory() as tmp:
        children = {"after": _trainer_ab._Child(_trainer_ab.ROOT, "after")}
        if ref is not None:
            tree = _trainer_ab.export_tree(ref, Path(tmp))
            children["before"] = _trainer_ab._Child(tree, "before")
        try:
            for i in range(-(-steps // block)):
                order = labels if i % 2 == 0 else labels[::-1]
                n = min(block, steps - i * block)
                for name in CONFIGS:
                    for label in order:
                        res = children[label].ask(f"lock {name} {n}")
                        for k in KEYS:
                            out[name][f"{k}_{label}"].extend(res[k])
        finally:
            for child in children.values():
                child.close()
    return out


def _ms(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    srt = sorted(xs)
    return srt[min(len(srt) - 1, int(q * len(srt)))] * 1e3


def report(ref: str | None, steps: int = 300, block: int = 25) -> None:
    print(f"load average at start: {os.getloadavg()}")
    res = compare(ref, steps, block)
    labels = ("after",) if ref is None else ("before", "after")
    trees = "the working tree" if ref is None else f"before = {ref}, after = the working tree"
    print(f"\n{trees}; {steps} steps per configuration, blocks of {block} alternating")
    print("| B=512 record, client with its log | tree | `submit_deferred` p50 / p90 / p99 / max "
          "| its lock acquire p50 / p99 / max | writer's hold of the lock p99 / max "
          "| sender's hold p99 / max |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name in CONFIGS:
        for label in labels:
            r = {k: res[name][f"{k}_{label}"] for k in KEYS}
            s, a = r["submit"], r["acquire"]
            w, h = r["writer_hold"], r["sender_hold"]
            print(f"| {LABELS[name]} | {label} "
                  f"| {_ms(s, .5):.3f} / {_ms(s, .9):.3f} / {_ms(s, .99):.3f} / {_ms(s, 1):.3f} ms "
                  f"| {_ms(a, .5):.3f} / {_ms(a, .99):.3f} / {_ms(a, 1):.3f} ms "
                  f"| {_ms(w, .99):.3f} / {_ms(w, 1):.3f} ms "
                  f"| {_ms(h, .99):.3f} / {_ms(h, 1):.3f} ms |")  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()}")
