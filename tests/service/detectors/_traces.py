"""Synthetic step traces and small independent oracles for the detector tests.

Every builder returns a list of ``{"step": int, "metrics": {...}}`` dicts, the format
``service.detectors.replay`` accepts. Values are noise-free unless a seed is given, so expected
alert steps can be derived from the rule definitions with the oracles below (numpy, not the
package's own helpers).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Trace = list[dict[str, Any]]

HEALTHY: dict[str, float] = {
    "entropy": 0.45,
    "success_rate": 0.4,
    "degenerate_all_fail": 0.1,
    "degenerate_all_pass": 0.05,
    "log_zprime_mean": 0.05,
    "log_zprime_p90": 0.2,
    "zprime_gt1_frac": 0.2,
    "zprime_raw_gt1_frac": 0.2,
    "reward_accuracy": 0.9,
    "label_accuracy": 0.8,
    "proxy_reward": 0.5,
    "gt_reward": 0.5,
    "response_length": 300.0,
    "repetition_rate": 0.05,
    "kl": 0.01,
    "alpha": 1.0,
    "loss": 0.2,
    "grad_norm": 1.0,
}


def build(
    n: int,
    overrides: dict[str, Callable[[int], float | None]] | None = None,
    *,
    drop: Sequence[str] = (),
    seed: int | None = None,
    noise: float = 0.0,
) -> Trace:
    """``n`` steps of healthy constant metrics; ``overrides`` maps a metric to a function of the
    step; ``drop`` removes metrics; ``seed``/``noise`` add relative Gaussian noise (σ = noise ×
    value) to every metric."""
    rng = random.Random(seed)
    fns = overrides or {}
    trace: Trace = []
    for s in range(n):
        metrics: dict[str, float | None] = {}
        for name, base in HEALTHY.items():
            if name in drop:
                continue
            metrics[name] = base
        for name, fn in fns.items():
            metrics[name] = fn(s)
        if seed is not None and noise > 0.0:
            for k, v in metrics.items():
                if v is not None and k != "alpha":
                    metrics[k] = v * (1.0 + rng.gauss(0.0, noise))
        trace.append({"step": s, "metrics": metrics})
    return trace


def healthy_run(n: int = 300, seed: int = 7) -> Trace:
    """Entropy drifting gently 0.45 → 0.35, success rising 0.3 → 0.55, gt reward rising, probes
    every 10 steps stable, 1 % noise."""
    return build(
        n,
        {
            "entropy": lambda s: 0.45 - 0.1 * s / n,
            "success_rate": lambda s: 0.3 + 0.25 * s / n,
            "gt_reward": lambda s: 0.3 + 0.2 * s / n,
            "proxy_reward": lambda s: 0.4 + 0.1 * s / n,
            "probe_success": lambda s: 0.5 if s % 10 == 0 else None,
            "probe_entropy": lambda s: 0.4 if s % 10 == 0 else None,
        },
        seed=seed,
        noise=0.01,
    )


def entropy_collapse(n: int = 200) -> Trace:
    """Entropy 0.505 until step 99, then −0.01 nats/step down to 0.02 (first < 0.10 at step 140)."""
    return build(n, {"entropy": lambda s: max(0.02, 0.505 - 0.01 * max(0, s - 99))})


def starvation(n: int = 150) -> Trace:
    """G = 8: success 0.3, 0.05 (< p*(8) = 0.083) for steps 50..99, then 0.3 again; degenerate
    fractions consistent with Bernoulli groups ((1−p)^8, p^8)."""

    def p(s: int) -> float:
        return 0.05 if 50 <= s < 100 else 0.3

    return build(
        n,
        {
            "success_rate": p,
            "degenerate_all_fail": lambda s: (1 - p(s)) ** 8,
            "degenerate_all_pass": lambda s: p(s) ** 8,
        },
    )


def reward_accuracy_collapse(n: int = 220) -> Trace:
    """Label-free run: proxy reward rises 0.003/step throughout; reward accuracy 0.9 until 60 then
    −0.01/step (first < 0.01 at step 150); gt reward rises to step 80 then falls 0.008/step."""
    return build(
        n,
        {
            "proxy_reward": lambda s: 0.3 + 0.003 * s,
            "reward_accuracy": lambda s: max(0.002, min(0.9, 0.905 - 0.01 * (s - 60))),
            "gt_reward": lambda s: 0.3 + 0.00375 * s if s <= 80 else 0.6 - 0.008 * (s - 80),
        },
        drop=("success_rate",),
    )


def rise_then_fall(n: int = 200) -> Trace:
    """gt reward rises to 0.7 at step 100, falls 0.01/step to 0.5 at 120, recovers to 0.72 by
    140."""

    def gt(s: int) -> float:
        if s <= 100:
            return 0.3 + 0.004 * s
        if s <= 120:
            return 0.7 - 0.01 * (s - 100)
        if s <= 140:
            return 0.5 + 0.011 * (s - 120)
        return 0.72

    return build(n, {"gt_reward": gt})


# --- oracles ---------------------------------------------------------------------------------


def series(trace: Trace, name: str) -> list[tuple[int, float]]:
    return [
        (r["step"], float(r["metrics"][name])) for r in trace if r["metrics"].get(name) is not None
    ]


def np_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def window_steps(
    trace: Trace, name: str, window: int, pred: Callable[[list[int], list[float]], bool]
) -> list[int]:
    """Steps (with ``name`` observed) whose last ``window`` observations satisfy ``pred``."""
    obs = series(trace, name)
    out = []
    for i in range(window - 1, len(obs)):
        w = obs[i - window + 1 : i + 1]
        if pred([s for s, _ in w], [v for _, v in w]):
            out.append(obs[i][0])
    return out
