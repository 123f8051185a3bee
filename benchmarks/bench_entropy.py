"""Token entropy at LLM scale: error against float64, and chunked speed and memory (issue 13).

1. Error table: max |H − H_float64| (nats) over rows of real-model spread (std 1, 4, 10, plus
   peaked rows with entropy near the 0.10-nat floor) for V, constant logit offset and input
   dtype; "before" is the uncentred form this project used until issue 13
   (logsumexp(x) − Σ p·x in fp32, kept below as ``_uncentred`` for this comparison), "after" is
   ``trainer_hooks.token_entropy`` (centred, science.md §7).
2. Speed and peak extra memory on bf16 logits [8 × 1024 × 32 000]: naive (fp32 softmax ×
   log_softmax over the whole tensor), chunked before, chunked after; each in a fresh
   subprocess (peak RSS growth).

Command: ``python benchmarks/bench_entropy.py`` (``--quick``: a smaller error table;
``--speed-only``: part 2 only; ``--masked-sums``: the cost of selecting rather than multiplying
in the per-row masked sums).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainer_hooks import token_entropy

SHAPE = (8, 1024, 32_000)


def _uncentred(logits: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """The pre-issue-13 computation: H = logsumexp(x) − Σ p·x in fp32, not centred."""
    v = int(logits.shape[-1])
    flat = logits.reshape(-1, v)
    rows = int(flat.shape[0])
    out = torch.empty(rows, dtype=torch.float32)
    c = min(chunk_size, rows)
    floor = torch.finfo(torch.float32).min
    xbuf = torch.empty((c, v), dtype=torch.float32)
    pbuf = torch.empty((c, v), dtype=torch.float32)
    for start in range(0, rows, c):
        stop = min(start + c, rows)
        x = xbuf[: stop - start]
        p = pbuf[: stop - start]
        x.copy_(flat[start:stop])
        x.clamp_(min=floor)
        lse = torch.logsumexp(x, dim=-1, keepdim=True)
        torch.sub(x, lse, out=p)
        p.exp_()
        px = torch.bmm(p.unsqueeze(1), x.unsqueeze(2)).reshape(-1)
        out[start:stop] = lse.reshape(-1) - px
    return out.reshape(logits.shape[:-1])


def _reference(logits: torch.Tensor) -> torch.Tensor:
    lp = torch.log_softmax(logits.double(), -1)
    p = lp.exp()
    return -(torch.where(p > 0, p * lp, 0.0)).sum(-1)


def _rows(v: int, offset: float, gen: torch.Generator) -> torch.Tensor:
    parts = []
    for std in (1.0, 4.0, 10.0):
        x = torch.randn(4, v, generator=gen, dtype=torch.float64) * std
        x[0, 0] += 17.5 + 3.0 * std  # peaked: entropy near the 0.10-nat floor at std 1
        x[1, 1] += 10.0 + 2.0 * std
        parts.append(x)
    return torch.cat(parts) + offset


def error_table(quick: bool) -> list[tuple[int, float, str, float, float]]:
    vocabs = (152_064,) if quick else (32_000, 128_256, 152_064)
    offsets = (0.0, 100.0) if quick else (-100.0, -30.0, 0.0, 30.0, 100.0)
    out = []
    gen = torch.Generator().manual_seed(0)
    for v in vocabs:
        for off in offsets:
            base = _rows(v, off, gen)
            for dt in (torch.float32, torch.bfloat16, torch.float16):
                x = base.to(dt)
                ref = _reference(x)
                before = (_uncentred(x).double() - ref).abs().max().item()
                after = (token_entropy(x).double() - ref).abs().max().item()
                out.append((v, off, str(dt).removeprefix("torch."), before, after))
    return out


def _naive(logits: torch.Tensor) -> torch.Tensor:
    x = logits.float()
    return -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1)


def _child(which: str) -> None:
    torch.manual_seed(0)
    logits = torch.empty(SHAPE, dtype=torch.bfloat16)
    for i in range(SHAPE[0]):  # filled row by row: the peak RSS before the call stays low
        logits[i] = torch.randn(*SHAPE[1:]) * 3 + 30
    fns = {
        "naive": _naive,
        "before": lambda x: _uncentred(x, 1024),
        "after": lambda x: token_entropy(x, chunk_size=1024),
    }
    fn = fns[which]
    fn(logits[:1, :64])  # warm-up on a slice
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        h = fn(logits)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": sorted(times)[1], "extra_mib": (peak - base) / 1024,
                      "mean": float(h.mean())}))  # fmt: skip


def speed() -> dict[str, dict[str, float]]:
    out = {}
    for which in ("naive", "before", "after"):
        res = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", which],
            check=True,
            capture_output=True,
            text=True,
        )
        out[which] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def masked_sums(repeats: int = 41) -> dict[str, float]:
    """Median ms of the masked means of ``entropy_summary`` on [8192 × 1024] fp32 entropy with a
    float 0/1 mask, as a trainer passes it (B = 512, G = 16, T = 1024): multiplying by the mask
    (before issue 13, inlined here) vs selecting (after)."""
    from trainer_hooks import make_layout
    from trainer_hooks._entropy import entropy_summary

    gen = torch.Generator().manual_seed(0)
    h = torch.rand(8192, 1024, generator=gen)
    mask = (torch.rand(8192, 1024, generator=gen) > 0.3).float()
    layout = make_layout(torch.zeros(512, 16))

    def before() -> None:
        m = mask.to(torch.float32)
        rows = 1_048_576 // 1024
        tok = torch.empty(8192)
        ent = torch.empty(8192)
        for start in range(0, 8192, rows):
            bm = m[start : start + rows]
            tok[start : start + rows] = bm.sum(dim=-1)
            ent[start : start + rows] = torch.mul(h[start : start + rows], bm).sum(dim=-1)

    out = {}
    for name, fn in (("before", before), ("after", lambda: entropy_summary(h, mask, layout))):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = sorted(times)[len(times) // 2] * 1e3
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    if "--masked-sums" in sys.argv:
        ms = masked_sums()
        print(f"masked entropy means [8192 x 1024], median ms: multiply {ms['before']:.2f}, "
              f"select {ms['after']:.2f}, ratio {ms['after'] / ms['before']:.2f}")  # fmt: skip
        return
    quick = "--quick" in sys.argv
    speed_only = "--speed-only" in sys.argv
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if not speed_only:
        print("\n| V | offset | dtype | max error before (nats) | max error after (nats) |")
        print("| --- | --- | --- | --- | --- |")
        worst = 0.0
        for v, off, dt, before, after in error_table(quick):
            worst = max(worst, after)
            print(f"| {v} | {off:+g} | {dt} | {before:.1e} | {after:.1e} |")
        print(f"\nworst error after: {worst:.1e} nats (bound: 1e-4)")
    res = speed()
    print("\n| entropy, bf16 logits 8x1024x32000 (std 3, offset 30) | median of 3 | peak extra "
          "memory (RSS) | mean H |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for which, label in (
        ("naive", "naive (fp32 softmax x log_softmax)"),
        ("before", "chunked, uncentred (before)"),
        ("after", "chunked, centred (after)"),
    ):
        r = res[which]
        print(f"| {label} | {r['seconds']:.2f} s | {r['extra_mib']:.0f} MiB | {r['mean']:.5f} |")
    b, a = res["before"], res["after"]
    print(f"\nafter/before: time {a['seconds'] / b['seconds']:.2f}x, "
          f"memory {a['extra_mib'] / max(b['extra_mib'], 1e-9):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
