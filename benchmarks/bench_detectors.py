"""Benchmark: detector cost per ingested step (evaluate + transitions + α + verdict) with 1000
steps of history, every standard metric present, all rules enabled.

Run:  python benchmarks/bench_detectors.py [--steps 2000] [--history 1000]
Prints median and p99 in microseconds: wall clock (time.perf_counter_ns) and this thread's CPU time
(time.thread_time_ns, insensitive to other processes competing for the CPU), one process.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

from service.detectors import (
    DetectorConfig,
    DetectorState,
    OpenAlert,
    RunPolicy,
    StepRecord,
    process_step,
)


def make_records(n: int, seed: int = 0) -> list[StepRecord]:
    rng = random.Random(seed)
    out: list[StepRecord] = []
    for s in range(n):
        t = s / n
        out.append(
            StepRecord(
                step=s,
                metrics={
                    "entropy": 0.5 - 0.3 * t + rng.gauss(0, 0.01),
                    "success_rate": 0.3 + 0.3 * t + rng.gauss(0, 0.02),
                    "degenerate_all_fail": 0.2 + rng.gauss(0, 0.02),
                    "degenerate_all_pass": 0.1 + rng.gauss(0, 0.02),
                    "log_zprime_mean": 0.1 + rng.gauss(0, 0.01),
                    "log_zprime_p90": 0.3 + rng.gauss(0, 0.01),
                    "zprime_gt1_frac": 0.3 + rng.gauss(0, 0.02),
                    "zprime_raw_gt1_frac": 0.25 + rng.gauss(0, 0.02),
                    "reward_accuracy": 0.8 - 0.2 * t + rng.gauss(0, 0.01),
                    "label_accuracy": 0.7 + rng.gauss(0, 0.01),
                    "proxy_reward": 0.5 + 0.2 * t + rng.gauss(0, 0.01),
                    "gt_reward": 0.4 + 0.2 * math.sin(3 * t) + rng.gauss(0, 0.01),
                    "response_length": 300 + rng.gauss(0, 5),
                    "repetition_rate": 0.05 + rng.gauss(0, 0.005),
                    "kl": 0.01,
                    "alpha": 1.0,
                    "mu": None,
                    "probe_success": (0.5 + rng.gauss(0, 0.01)) if s % 10 == 0 else None,
                    "probe_entropy": (0.4 + rng.gauss(0, 0.01)) if s % 10 == 0 else None,
                    "loss": 0.1,
                    "grad_norm": 1.0,
                },
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000, help="timed ingested steps")
    ap.add_argument("--history", type=int, default=1000, help="history length per call")
    args = ap.parse_args()
    config = DetectorConfig(history_steps=args.history)
    policy = RunPolicy()
    records = make_records(args.history + args.steps)
    state = DetectorState()
    open_alerts: dict[str, OpenAlert] = {}
    alpha = 1.0
    # warm the state with the first history
    for i in range(args.history - 50, args.history):
        out = process_step(config, policy, 8, records[: i + 1][-args.history :], state, {}, alpha)
        state = out.state
    times: list[int] = []
    cpu: list[int] = []
    for i in range(args.history, args.history + args.steps):
        history = records[i + 1 - args.history : i + 1]
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        out = process_step(config, policy, 8, history, state, open_alerts, alpha)
        times.append(time.perf_counter_ns() - t0)
        cpu.append(time.thread_time_ns() - c0)
        state = DetectorState.from_json(out.state.to_json())
        open_alerts = dict(out.transitions.open_alerts)
        if out.alpha.changed:
            alpha = out.alpha.new_alpha
    print(f"detectors: history={args.history} steps={args.steps} rules=12")
    for label, xs in (("wall", times), ("cpu", cpu)):
        xs.sort()
        med = statistics.median(xs) / 1000
        p99 = xs[min(len(xs) - 1, math.ceil(0.99 * len(xs)) - 1)] / 1000
        print(f"{label}: median_us={med:.1f} p99_us={p99:.1f}")


if __name__ == "__main__":
    main()
