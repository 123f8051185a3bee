"""Benchmarks of trainer_hooks (run: ``python benchmarks/bench_hooks.py``).

1. One ``Monitor.step`` with every metric whose inputs are cheap: B = 512 queries × G = 16,
   per-token entropy given (T = 1024), answer keys, oracle rewards, ref log-probs, IAC on;
   median wall time over repeated steps on CPU.
2. Token entropy from bf16 logits [8 × 1024 × 32000]: chunked (``token_entropy``) vs the naive
   formulation (fp32 softmax and log_softmax over the whole tensor). Peak extra memory is the
   growth of the process's peak RSS (``ru_maxrss``) during the call, each variant measured in a
   fresh subprocess after the logits exist (torch's CPU allocator returns big blocks to the OS, so
   RSS is an honest view of what the call needed).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from trainer_hooks import Monitor, StepInputs, grpo_advantages, token_entropy

SHAPE = (8, 1024, 32000)


def bench_step(repeats: int = 30) -> dict[str, float]:
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


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")  # fmt: skip
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
