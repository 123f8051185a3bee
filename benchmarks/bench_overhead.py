"""Trainer overhead: what the hooks add to a real tiny GRPO step (CPU).

The step is ``examples/tiny_grpo.py``'s: sample G responses for B prompts from the small causal
transformer, rewards, GRPO advantages, the logits pass, the policy-gradient loss, backward, Adam.
Three modes, interleaved in blocks so drift in machine load hits each alike:

- ``off``: no hooks (the plain GRPO advantages are used);
- ``hooks``: ``trainer_hooks.watch(None, ...)``: every metric, IAC, no service;
- ``hooks+service``: ``watch(url, ...)`` streaming each step to a live ``sharpwatch serve``
  (background sender thread, command long-poll), i.e. the full production path.

Run:  python benchmarks/bench_overhead.py [--blocks 6] [--steps-per-block 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


@dataclass
class OverheadResult:
    mode: str
    median_ms: float
    p90_ms: float
    steps: int


def _step_fn(cfg: Any, model: Any, opt: Any, gen: Any, run: Any) -> None:
    import torch

    from examples.tiny_grpo import (
        N_MAX,
        N_MIN,
        PROMPT_LEN,
        RESPONSE_LEN,
        prompts_for,
        rewards_for,
        sample,
    )
    from trainer_hooks import StepInputs, grpo_advantages

    b, g = cfg.prompts_per_step, cfg.group_size
    targets = torch.randint(N_MIN, N_MAX + 1, (b,), generator=gen)
    prompts = prompts_for(targets).repeat_interleave(g, dim=0)
    model.eval()
    seq = sample(model, prompts, cfg.temperature, gen)
    model.train()
    responses = seq[:, PROMPT_LEN:]
    rewards = rewards_for(targets.repeat_interleave(g), responses).view(b, g)
    advantages = grpo_advantages(rewards)
    logits = model(seq[:, :-1])[:, PROMPT_LEN - 1 :].float()
    used = advantages
    if run is not None:
        keys = [f"{int(r[0])}{int(r[1])}{int(r[2])}" for r in responses.tolist()]
        result = run.step(
            StepInputs(
                rewards=rewards,
                advantages=advantages,
                logits=logits.detach().view(b, g, RESPONSE_LEN, -1),
                mask=torch.ones(b, g, RESPONSE_LEN),
                answer_keys=keys,
                # unique per step (tiny_grpo samples targets with replacement)
                query_ids=[f"p{i}:n={int(t)}" for i, t in enumerate(targets.tolist())],
            )
        )
        used = result.advantages
    logp = torch.log_softmax(logits, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    loss = -(used.reshape(-1, 1) * logp).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def bench_overhead(
    url: str | None, blocks: int = 6, steps_per_block: int = 15, prompts: int = 16
) -> list[OverheadResult]:
    import torch

    from examples.tiny_grpo import TinyConfig, TinyLM
    from trainer_hooks import watch

    torch.set_num_threads(1)
    cfg = TinyConfig(prompts_per_step=prompts)
    torch.manual_seed(0)
    model = TinyLM(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    options: dict[str, Any] = {
        "name": f"overhead-{time.time_ns()}",
        "project": "bench",
        "group_size": cfg.group_size,
        "kl_beta": 0.0,
        "reference_beta": 0.04,
        "policy": {"auto_stop_rules": [], "auto_alpha": False},
    }
    modes = ["off", "hooks"] + (["hooks+service"] if url else [])
    times: dict[str, list[float]] = {m: [] for m in modes}
    local = watch(None, **options)
    remote = watch(url, **options) if url else None
    try:
        for _ in range(3):  # warm-up
            _step_fn(cfg, model, opt, gen, None)
            _step_fn(cfg, model, opt, gen, local)
        for _ in range(blocks):
            for mode in modes:
                run = {"off": None, "hooks": local, "hooks+service": remote}[mode]
                for _ in range(steps_per_block):
                    start = time.perf_counter()
                    _step_fn(cfg, model, opt, gen, run)
                    times[mode].append((time.perf_counter() - start) * 1000)
    finally:
        local.close()
        if remote is not None:
            remote.close()
    out = []
    for mode, values in times.items():
        values.sort()
        out.append(
            OverheadResult(
                mode, statistics.median(values), values[int(0.9 * (len(values) - 1))], len(values)
            )
        )
    return out


def print_overhead(results: list[OverheadResult]) -> None:
    base = results[0].median_ms
    print("| mode | steps | median ms/step | p90 ms/step | added vs off (median) |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        added = r.median_ms - base
        print(
            f"| {r.mode} | {r.steps} | {r.median_ms:.2f} | {r.p90_ms:.2f} "
            f"| {added:+.2f} ms ({100 * added / base:+.1f} %) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps-per-block", type=int, default=15)
    parser.add_argument("--prompts", type=int, default=16, help="B prompts per step (G = 8)")
    args = parser.parse_args()
    from bench_peers import sharpwatch_server

    with (
        tempfile.TemporaryDirectory() as directory,
        sharpwatch_server(f"sqlite:///{Path(directory) / 'o.db'}") as url,
    ):
        print_overhead(bench_overhead(url, args.blocks, args.steps_per_block, args.prompts))


if __name__ == "__main__":
    main()
