"""Benchmarks of trainer_hooks (run: ``python benchmarks/bench_hooks.py``).

1. One ``Monitor.step`` with every metric whose inputs are cheap: B = 512 queries × G = 16,
   per-token entropy given (T = 1024), answer keys, oracle rewards, ref log-probs, IAC on;
   median wall time over repeated steps on CPU.
2. Token entropy from bf16 logits [8 × 1024 × 32000]: chunked (``token_entropy``) vs the naive
   formulation (fp32 softmax and log_softmax over the whole tensor). Peak extra memory is the
   growth of the process's peak RSS (``ru_maxrss``) during the call, each variant measured in a
   fresh subprocess after the logits exist (torch's CPU allocator returns big blocks to the OS, so
   RSS is an honest view of what the call needed).
3. The client's write-ahead log, per step of the B = 512 record (~43 KB of JSON, its queries as
   columns): the time ``SharpwatchClient.submit`` takes in the training thread, the CPU all
   threads spend per step (serialise, write, fsync, read back, post), and ``Monitor.step`` with
   the client attached; each with the log (the default) against ``spool_dir=False`` (memory
   only, no durability).
   The service is an in-process ``httpx.MockTransport`` answering 200 at once, so the numbers
   are the client's own; the log lives in a temporary directory on the local disk.
4. ``--trainer`` (issue 21): the training thread's share of ``Monitor.step`` with the client
   attached, B = 512 × G = 16, before and after in one run: ``Monitor._defer_records = False``
   builds the per-query record and sanitises it in the training thread (the path before issue
   21), ``True`` (the default) hands it unbuilt to the client's writer thread. Configurations
   alternate step by step so load drifts hit both alike; median and p90 of the wall time of
   ``step()``. Also the answer-key hashing of 8,192 keys: the per-key comprehension it replaced
   against ``assign_modes``' ``map(hash)`` pass.
5. ``--trainer-vs REF``: ``Monitor.step``'s training-thread cost, git ``REF``'s code against the
   working tree's, interleaved in one run, then the working tree's cost per metric section
   (``_trainer_ab.py``).
6. ``--record-vs REF`` (issue 21): the client's writer thread's build + sanitise + serialise of
   one B = 512 monitor record and its JSON bytes, git ``REF``'s code against the working
   tree's, interleaved in one run (``_trainer_ab.py``).
7. ``--lock`` / ``--lock-vs REF`` (issue 21): the wall time the training thread spends in
   ``SharpwatchClient.submit_deferred`` and in acquiring the client's lock within it, and how
   long the writer and sender threads hold that lock, B = 512 records 20 ms (or 5 ms) apart,
   the log compacted at its default size or often (``_client_lock.py``); with ``REF``, its code
   against the working tree's in alternating blocks.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import torch

# BENCH_HOOKS_TREE: another checkout's code (``--trainer-vs``' "before" child)
sys.path.insert(
    0,
    os.environ.get(
        "BENCH_HOOKS_TREE", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ),
)

from trainer_hooks import (
    Monitor,
    SharpwatchClient,
    StepInputs,
    grpo_advantages,
    token_entropy,
)

SHAPE = (8, 1024, 32000)


def _full_inputs() -> tuple[StepInputs, int]:
    b, g, t = 512, 16, 1024
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(b, g, generator=gen) < torch.rand(b, 1, generator=gen)).float()
    adv = grpo_advantages(rewards)
    ent = torch.rand(b, g, t, generator=gen)
    mask = torch.ones(b, g, t)
    keys = [str(int(k)) for k in torch.randint(0, 6, (b * g,), generator=gen)]
    inputs = StepInputs(
        rewards=rewards,
        advantages=adv,
        token_entropy=ent,
        mask=mask,
        answer_keys=keys,
        oracle_rewards=rewards,
        ref_logprobs=-torch.rand(b, g, generator=gen) * 5,
        loss=torch.tensor(0.1),
        grad_norm=1.0,
        kl=0.01,
    )
    return inputs, g


def bench_step(repeats: int = 30) -> dict[str, float]:
    inputs, g = _full_inputs()
    rewards, adv = inputs.rewards, inputs.advantages
    ent, mask, keys = inputs.token_entropy, inputs.mask, inputs.answer_keys
    lean = StepInputs(rewards=rewards, advantages=adv, token_entropy=ent, mask=mask)
    no_tokens = StepInputs(
        rewards=rewards,
        advantages=adv,
        answer_keys=keys,
        oracle_rewards=rewards,
        ref_logprobs=inputs.ref_logprobs,
    )
    out = {}
    for name, inp in (("full", inputs), ("lean", lean), ("no_tokens", no_tokens)):
        m = Monitor(group_size=g, kl_beta=0.04)
        for _ in range(3):
            m.step(inp)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m.step(inp)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) * 1e3
    return out


def _service(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/v1/runs":
        return httpx.Response(
            201,
            json={
                "id": 1,
                "name": "bench",
                "project": "default",
                "group_size": 16,
                "kl_beta": 0.04,
                "status": "running",
            },
        )
    return httpx.Response(200, json={"accepted": [], "duplicates": []})


def _client(directory: str, wal: bool) -> SharpwatchClient:
    client = SharpwatchClient(
        "http://bench.invalid",
        transport=httpx.MockTransport(_service),
        spool_dir=os.path.join(directory, "spool") if wal else False,
    )
    client.register_run("bench", group_size=16, kl_beta=0.04)
    return client


def bench_wal(steps: int = 200, repeats: int = 30) -> dict[str, dict[str, float]]:
    inputs, g = _full_inputs()
    record: Any = Monitor(group_size=g, kl_beta=0.04).step(inputs).record
    size = len(json.dumps(record))
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name in ("memory", "wal", "memory", "wal"):  # interleaved: the 2nd pair is kept
            client = _client(directory, name == "wal")
            submit = []
            cpu0 = time.process_time()
            for i in range(steps):
                t0 = time.perf_counter()
                client.submit(record | {"step": i})
                submit.append(time.perf_counter() - t0)
                time.sleep(0.002)  # a trainer does other work between steps
            assert client.flush(timeout=120), client.flush_error
            cpu = (time.process_time() - cpu0) / steps
            client.close()
            sender = _client(directory, name == "wal")
            monitor = Monitor(group_size=g, kl_beta=0.04, sender=sender)
            for _ in range(3):
                monitor.step(inputs)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                monitor.step(inputs)
                times.append(time.perf_counter() - t0)
            sender.close()
            out[name] = {
                "submit_us": statistics.median(submit) * 1e6,
                "submit_p99_us": sorted(submit)[int(0.99 * len(submit))] * 1e6,
                "cpu_ms": cpu * 1e3,
                "step_ms": statistics.median(times) * 1e3,
                "bytes": float(size),
            }
    return out


class _TimedMonitor(Monitor):
    """Times the host side after the step's one copy (metrics, hand-off to the senders)."""

    host_times: list[float] = []  # noqa: RUF012 (replaced per instance after warm-up)

    def _host_metrics(self, *args: Any, **kwargs: Any) -> Any:
        self._t0 = time.perf_counter()
        return super()._host_metrics(*args, **kwargs)

    def _deliver(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._deliver(*args, **kwargs)
        finally:
            self.host_times.append(time.perf_counter() - self._t0)


def _no_token_inputs(full: StepInputs) -> StepInputs:
    """The full step's inputs without the per-token ones (no entropy, mask or token ids)."""
    return StepInputs(
        rewards=full.rewards,
        advantages=full.advantages,
        answer_keys=full.answer_keys,
        oracle_rewards=full.oracle_rewards,
        ref_logprobs=full.ref_logprobs,
        loss=full.loss,
        grad_norm=1.0,
        kl=0.01,
    )


def bench_trainer(steps: int = 60, gap: float = 0.02) -> dict[str, dict[str, list[float]]]:
    full, g = _full_inputs()
    no_tokens = _no_token_inputs(full)
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, inputs in (("full", full), ("no_tokens", no_tokens)):
            monitors, clients = {}, {}
            for mode in ("before", "after"):
                client = _client(os.path.join(directory, f"{name}-{mode}"), True)
                m = _TimedMonitor(group_size=g, kl_beta=0.04, sender=client)
                clients[mode] = client
                m._defer_records = mode == "after"
                for _ in range(3):
                    m.step(inputs)
                m.host_times = []
                monitors[mode] = m
            times: dict[str, list[float]] = {"before": [], "after": [], "cpu_before": []}
            times["cpu_after"] = []
            for _ in range(steps):
                for mode, m in monitors.items():
                    c0, t0 = time.thread_time(), time.perf_counter()
                    m.step(inputs)
                    times[mode].append(time.perf_counter() - t0)
                    times[f"cpu_{mode}"].append(time.thread_time() - c0)
                    time.sleep(gap)  # forward/backward: a GPU trainer waits, the GIL is free
            for client in clients.values():
                assert client.flush(timeout=120)
                client.close()
            times["host_before"] = monitors["before"].host_times
            times["host_after"] = monitors["after"].host_times
            out[name] = times
    keys = list(full.answer_keys or [])
    salt = 0x5DEECE66D
    hashing: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(50):
        t0 = time.perf_counter()
        _ = [hash((salt, i)) if k is None else hash(k) for i, k in enumerate(keys)]
        _ = [k is None for k in keys]
        hashing["before"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _ = list(map(hash, keys))
        _ = None in keys
        hashing["after"].append(time.perf_counter() - t0)
    out["hashing"] = hashing
    return out


def _pct(xs: list[float], q: float) -> float:
    srt = sorted(xs)
    return srt[min(len(srt) - 1, int(q * len(srt)))] * 1e3


def _print_trainer() -> None:
    res = bench_trainer()
    print("\n| training thread, B=512 x G=16, client attached | before (median / p90) "
          "| after (median / p90) | median saved |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    labels = {
        "full": "`Monitor.step`, T=1024 entropy given + keys, oracle, ref log-probs, IAC",
        "no_tokens": "`Monitor.step`, no per-token input: keys, oracle, ref log-probs, IAC",
        "hashing": "answer-key hashing, 8,192 keys (host part of `assign_modes`)",
    }
    for key, label in labels.items():
        for kind, prefix in (
            ("wall", ""),
            ("CPU of the training thread", "cpu_"),
            ("host side after the copy, wall", "host_"),
        ):
            if prefix + "before" not in res[key]:
                continue
            b, a = res[key][prefix + "before"], res[key][prefix + "after"]
            mb, ma = _pct(b, 0.5), _pct(a, 0.5)
            print(f"| {label}, {kind} | {mb:.2f} / {_pct(b, 0.9):.2f} ms "
                  f"| {ma:.2f} / {_pct(a, 0.9):.2f} ms | {mb - ma:.2f} ms |")  # fmt: skip


def _naive(logits: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    return -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)


def _child(which: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(*SHAPE, dtype=torch.bfloat16)
    fn = _naive if which == "naive" else (lambda x: token_entropy(x, chunk_size=1024))
    fn(logits[:1, :64])  # warm-up on a slice
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    h = fn(logits)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": dt, "extra_mib": (peak - base) / 1024, "mean": float(h.mean())}))


def bench_entropy() -> dict[str, dict[str, float]]:
    out = {}
    for which in ("naive", "chunked"):
        res = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", which],
            check=True,
            capture_output=True,
            text=True,
        )
        out[which] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _print_wal() -> None:
    wal = bench_wal()
    m, w = wal["memory"], wal["wal"]
    print(f"\n| client, B=512 record ({w['bytes'] / 1e3:.0f} KB JSON), per step | memory only "
          "| write-ahead log | difference |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for key, label, unit in (
        ("submit_us", "`submit()` in the training thread, median", "µs"),
        ("submit_p99_us", "`submit()` in the training thread, p99", "µs"),
        ("cpu_ms", "CPU of all threads (serialise, log, post)", "ms"),
        ("step_ms", "`Monitor.step` (full inputs) with the client, median", "ms"),
    ):
        print(f"| {label} | {m[key]:.2f} {unit} | {w[key]:.2f} {unit} "
              f"| {w[key] - m[key]:+.2f} {unit} |")  # fmt: skip


def main() -> None:
    if sys.argv[1:] == ["--trainer-child"]:
        import _trainer_ab

        _trainer_ab.child_main()
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
    if sys.argv[1:] == ["--wal"]:  # only section 3
        _print_wal()
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--trainer-vs":  # section 5 only
        import _trainer_ab

        _trainer_ab.report(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--record-vs":  # section 6 only
        import _trainer_ab

        _trainer_ab.record_report(sys.argv[2])
        return
    if sys.argv[1:] == ["--lock"] or (len(sys.argv) == 3 and sys.argv[1] == "--lock-vs"):
        import _client_lock  # section 7 only

        _client_lock.report(sys.argv[2] if len(sys.argv) == 3 else None)
        return
    if sys.argv[1:] == ["--trainer"]:  # only section 4, with torch's threads, then 1
        threads = torch.get_num_threads()
        for n in (threads, 1):
            torch.set_num_threads(n)
            print(f"\ntorch threads: {n}")
            _print_trainer()
        torch.set_num_threads(threads)
        return
    threads = torch.get_num_threads()
    step = bench_step()
    torch.set_num_threads(1)
    step1 = bench_step()
    torch.set_num_threads(threads)
    print(f"\n| Monitor.step, B=512 x G=16 (median) | {threads} threads | 1 thread |")
    print("| --- | --- | --- |")
    rows = (
        ("full", "T=1024 entropy given + keys, oracle, ref log-probs, IAC"),
        ("lean", "T=1024 entropy given + advantages (IAC) only"),
        ("no_tokens", "no per-token input: keys, oracle, ref log-probs, IAC"),
    )
    for key, label in rows:
        print(f"| {label} | {step[key]:.2f} ms | {step1[key]:.2f} ms |")
    _print_wal()
    ent = bench_entropy()
    n, c = ent["naive"], ent["chunked"]
    print("\n| entropy, bf16 logits 8x1024x32000 | time | peak extra memory (RSS) |")
    print("| --- | --- | --- |")
    print(
        f"| naive (fp32 softmax x log_softmax) | {n['seconds']:.2f} s | {n['extra_mib']:.0f} MiB |"
    )
    print(f"| chunked (chunk 1024 rows) | {c['seconds']:.2f} s | {c['extra_mib']:.0f} MiB |")
    print(f"\nmemory ratio chunked/naive = {c['extra_mib'] / max(n['extra_mib'], 1e-9):.3f}, "
          f"speed ratio naive/chunked = {n['seconds'] / c['seconds']:.2f}, "
          f"|mean diff| = {abs(n['mean'] - c['mean']):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
