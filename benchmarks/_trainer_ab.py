"""The training thread's share of ``Monitor.step``, two trees of the code side by side.

``python benchmarks/bench_hooks.py --trainer-vs REF``: the ``trainer_hooks`` (and ``service``)
of git ``REF`` ("before") and of the working tree ("after") each run in a child process of
this script with the client attached (write-ahead log in a temporary directory, an in-process
``httpx.MockTransport`` service answering 200). The parent asks the two children for one step
at a time, alternating which goes first, with a pause between steps (a GPU trainer's
forward/backward, when the GIL is free), so load drifts on a shared machine hit both alike.
Reported: median and p90 of the wall time and of the training thread's CPU time of ``step()``.

Then, for the working tree only, the cost of each metric section of a step
(``trainer_hooks._sections.SECTIONS``), of the one device-to-host copy and of the host side
after it: the answer to "which reduction costs what".

``python benchmarks/bench_hooks.py --record-vs REF`` (:func:`record_report`): the client's writer
thread's work for one monitor record of B = 512 queries (build the per-query part, sanitise,
serialise to the JSON line the log holds and the service receives), ``REF``'s code against the
working tree's, interleaved in the same two children; and the JSON bytes of that record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("full", "no_tokens")


def export_tree(ref: str, into: Path) -> Path:
    """``trainer_hooks`` and ``service`` of git ``ref``, extracted under ``into``."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "trainer_hooks", "service"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


class _Child:
    def __init__(self, tree: Path, label: str) -> None:
        env = dict(os.environ, BENCH_HOOKS_TREE=str(tree))
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bench_hooks.py")), "--trainer-child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.ask("ready") == "ready", label

    def ask(self, line: str) -> Any:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(line + "\n")
        stdin.flush()
        return json.loads(stdout.readline())

    def close(self) -> None:
        self.ask("quit")
        self.proc.communicate(timeout=120)  # closes the pipes


def child_main() -> None:
    """The child's loop: one JSON line answered per command line."""
    import torch
    from bench_hooks import _client, _full_inputs, _no_token_inputs

    from trainer_hooks import Monitor

    full, g = _full_inputs()
    inputs = {
        "full": full,
        "no_tokens": _no_token_inputs(full),
    }
    with tempfile.TemporaryDirectory() as directory:
        clients = {name: _client(os.path.join(directory, name), True) for name in CONFIGS}
        monitors = {
            name: Monitor(group_size=g, kl_beta=0.04, sender=clients[name]) for name in CONFIGS
        }
        for name in CONFIGS:
            for _ in range(3):
                monitors[name].step(inputs[name])
        # Without a sender the step's record stays unbuilt (a DeferredRecord): each "record"
        # command builds a fresh copy of it the way the client's writer thread does. Made on
        # first use: trees older than the deferred record (5d621b3) have none.
        unbuilt: dict[str, Any] = {}
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "ready":
                print(json.dumps("ready"), flush=True)
            elif cmd == "threads":
                torch.set_num_threads(int(arg))
                print(json.dumps(torch.get_num_threads()), flush=True)
            elif cmd == "step":
                c0, t0 = time.thread_time(), time.perf_counter()
                monitors[arg].step(inputs[arg])
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
            elif cmd == "record":
                if arg not in unbuilt:
                    unbuilt[arg] = Monitor(group_size=g, kl_beta=0.04).step(inputs[arg])._record
                record = unbuilt[arg]
                fresh = record.with_metrics(dict(record.metrics), list(record.non_finite))
                c0, t0 = time.thread_time(), time.perf_counter()
                (line,), _ = clients[arg]._serialise([fresh])
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                print(json.dumps({"wall": wall, "cpu": cpu, "bytes": len(line)}), flush=True)
            elif cmd == "lock":
                import _client_lock

                name, _, count = arg.partition(" ")
                print(json.dumps(_client_lock.burst(name, int(count))), flush=True)
            elif cmd == "quit":
                if "_client_lock" in sys.modules:
                    sys.modules["_client_lock"].close()
                for client in clients.values():
                    assert client.flush(timeout=120)
                    client.close()
                print(json.dumps("bye"), flush=True)
                return


def compare(ref: str, steps: int, gap: float, threads: int) -> dict[str, dict[str, list[float]]]:
    """Per configuration: before/after wall and CPU times, steps interleaved."""
    out: dict[str, dict[str, list[float]]] = {
        name: {"before": [], "after": [], "cpu_before": [], "cpu_after": []} for name in CONFIGS
    }
    with tempfile.TemporaryDirectory() as tmp:
        children = {
            "before": _Child(export_tree(ref, Path(tmp)), "before"),
            "after": _Child(ROOT, "after"),
        }
        try:
            for child in children.values():
                child.ask(f"threads {threads}")
            for i in range(steps):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for name in CONFIGS:
                    for label in order:
                        res = children[label].ask(f"step {name}")
                        out[name][label].append(res["wall"])
                        out[name][f"cpu_{label}"].append(res["cpu"])
                        time.sleep(gap)
        finally:
            for child in children.values():
                child.close()
    return out


def compare_record(ref: str, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per configuration: the writer thread's build + sanitise + serialise of one B = 512
    record, before/after (wall, CPU, JSON bytes), interleaved record by record."""
    keys = ("before", "after", "cpu_before", "cpu_after", "bytes_before", "bytes_after")
    out: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        children = {
            "before": _Child(export_tree(ref, Path(tmp)), "before"),
            "after": _Child(ROOT, "after"),
        }
        try:
            for i in range(repeats):
                order = ("before", "after") if i % 2 == 0 else ("after", "before")
                for name in CONFIGS:
                    for label in order:
                        res = children[label].ask(f"record {name}")
                        out[name][label].append(res["wall"])
                        out[name][f"cpu_{label}"].append(res["cpu"])
                        out[name][f"bytes_{label}"].append(res["bytes"])
        finally:
            for child in children.values():
                child.close()
    return out


def record_report(ref: str, repeats: int = 200) -> None:
    print(f"load average at start: {os.getloadavg()}")
    res = compare_record(ref, repeats)
    labels = {
        "full": "every query column (T=1024 entropy given + keys, oracle, ref log-probs)",
        "no_tokens": "no per-token input (no entropy or length column)",
    }
    print(f"\nbefore = {ref}, after = working tree; {repeats} records each, interleaved")
    print("| writer thread, one B=512 record: build + sanitise + JSON "
          "| before (median / p90) | after (median / p90) | after / before (medians) "
          "| JSON bytes before → after |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for name, label in labels.items():
        r = res[name]
        size = f"{r['bytes_before'][0]:,.0f} → {r['bytes_after'][0]:,.0f}"
        for kind, prefix in (("wall", ""), ("CPU", "cpu_")):
            b, a = r[prefix + "before"], r[prefix + "after"]
            print(f"| {label}, {kind} | {_ms(b, 0.5):.3f} / {_ms(b, 0.9):.3f} ms "
                  f"| {_ms(a, 0.5):.3f} / {_ms(a, 0.9):.3f} ms "
                  f"| {_ms(a, 0.5) / _ms(b, 0.5):.2f} | {size} |")  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()}")


def sections(steps: int, gap: float = 0.02) -> dict[str, list[float]]:
    """The working tree's cost per metric section, the copy and the host side (full inputs):
    CPU time of the training thread (``time.thread_time``), so neither other processes nor
    the client's threads holding the GIL count."""
    import bench_hooks

    import trainer_hooks._monitor as monitor_mod
    import trainer_hooks._sections as sections_mod
    from trainer_hooks import Monitor

    full, g = bench_hooks._full_inputs()
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                times.setdefault(name, []).append(time.thread_time() - c0)

        return run

    saved = (sections_mod.SECTIONS, sections_mod.to_host, monitor_mod.measure)
    sections_mod.SECTIONS = tuple(timed(s.__name__, s) for s in saved[0])
    sections_mod.to_host = timed("one device-to-host copy (to_host)", saved[1])
    monitor_mod.measure = timed("measure (all sections + copy)", saved[2])
    try:
        with tempfile.TemporaryDirectory() as directory:
            client = bench_hooks._client(directory, True)
            monitor = Monitor(group_size=g, kl_beta=0.04, sender=client)
            for _ in range(3):
                monitor.step(full)
            times.clear()
            for _ in range(steps):
                c0 = time.thread_time()
                monitor.step(full)
                times.setdefault("step() total", []).append(time.thread_time() - c0)
                time.sleep(gap)
            assert client.flush(timeout=120)
            client.close()
    finally:
        sections_mod.SECTIONS, sections_mod.to_host, monitor_mod.measure = saved
    assert full.token_entropy is not None
    assert full.mask is not None
    floor: dict[str, list[float]] = {"hot": [], "paused": []}
    for i in range(2 * steps):  # the least any masked mean must do: read both [N, T] inputs once
        paused = i % 2 == 0
        if paused:  # as between the steps above: other threads and processes run meanwhile
            time.sleep(gap)
        c0 = time.thread_time()
        full.token_entropy.sum(dim=-1)
        full.mask.sum(dim=-1)
        floor["paused" if paused else "hot"].append(time.thread_time() - c0)
    times["reference: one plain row sum over the entropy and one over the mask, after a pause"] = (
        floor["paused"]
    )
    times["same, at once again (inputs in the cache)"] = floor["hot"]
    total, measured = times["step() total"], times["measure (all sections + copy)"]
    times["host side after the copy (metrics, record, senders)"] = [
        t - m for t, m in zip(total, measured, strict=True)
    ]
    return times


def _ms(xs: list[float], q: float) -> float:
    srt = sorted(xs)
    return srt[min(len(srt) - 1, int(q * len(srt)))] * 1e3


def report(ref: str, steps: int = 40, gap: float = 0.02) -> None:
    import torch

    print(f"load average at start: {os.getloadavg()}")
    labels = {
        "full": "T=1024 entropy given + keys, oracle, ref log-probs, IAC",
        "no_tokens": "no per-token input: keys, oracle, ref log-probs, IAC",
    }
    for threads in (torch.get_num_threads(), 1):
        res = compare(ref, steps, gap, threads)
        print(f"\ntorch threads: {threads}; before = {ref}, after = working tree")
        print("| `Monitor.step`, B=512 x G=16, client attached | before (median / p90) "
              "| after (median / p90) | after / before (medians) |")  # fmt: skip
        print("| --- | --- | --- | --- |")
        for name, label in labels.items():
            for kind, prefix in (("wall", ""), ("CPU of the training thread", "cpu_")):
                b, a = res[name][prefix + "before"], res[name][prefix + "after"]
                print(f"| {label}, {kind} | {_ms(b, 0.5):.2f} / {_ms(b, 0.9):.2f} ms "
                      f"| {_ms(a, 0.5):.2f} / {_ms(a, 0.9):.2f} ms "
                      f"| {_ms(a, 0.5) / _ms(b, 0.5):.2f} |")  # fmt: skip
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        times = sections(steps, gap)
        print(f"\ntorch threads: {threads}; working tree, full inputs, per part of a step, "
              "CPU time of the training thread")  # fmt: skip
        print("| part of `Monitor.step` | median | p90 | min |")
        print("| --- | --- | --- | --- |")
        for name, xs in times.items():
            print(f"| {name} | {_ms(xs, 0.5):.2f} ms | {_ms(xs, 0.9):.2f} ms "
                  f"| {min(xs) * 1e3:.2f} ms |")  # fmt: skip
    print(f"\nload average at end: {os.getloadavg()}")
