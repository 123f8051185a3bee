"""The veRL IAC estimator's pure function, its registration (through a registry with veRL's
decorator interface; veRL itself is not installed here), and the metrics tap against a real
service."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests._servers import ServerThread
from trainer_hooks import watch
from trainer_hooks.integrations.verl import (
    ESTIMATOR_NAME,
    EarlyStopError,
    SharpwatchVerlTap,
    compute_iac_grpo_advantage,
    hook_tracking,
    iac_grpo_outcome_advantage,
    register,
)


def reference_grpo(scores: list[float], index: list[str], eps: float, norm: bool) -> list[float]:
    """veRL's GRPO outcome advantage, written out per group (the formula, loop by loop)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for s, i in zip(scores, index, strict=True):
        groups[i].append(s)
    stats = {}
    for i, vals in groups.items():
        if len(vals) == 1:
            stats[i] = (0.0, 1.0)
        else:
            m = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
            stats[i] = (m, sd)
    out = []
    for s, i in zip(scores, index, strict=True):
        m, sd = stats[i]
        out.append((s - m) / (sd + eps) if norm else s - m)
    return out


def reference_iac(
    adv: list[float], scores: list[float], index: list[str], alpha: float
) -> list[float]:
    size: dict[str, int] = defaultdict(int)
    succ: dict[str, int] = defaultdict(int)
    for s, i in zip(scores, index, strict=True):
        size[i] += 1
        succ[i] += s >= 0.5
    return [
        a * (size[i] - succ[i]) ** alpha if a > 0 else a for a, i in zip(adv, index, strict=True)
    ]


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    uids = ["a"] * 4 + ["b"] * 4 + ["c"] * 3 + ["d"]  # uneven groups and a singleton
    order = torch.randperm(len(uids), generator=gen).tolist()  # veRL rows need not be grouped
    index = np.array([uids[k] for k in order], dtype=object)
    n, t = len(uids), 5
    scores = (torch.rand(n, generator=gen) > 0.4).float()
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()
    token_rewards = torch.zeros(n, t)
    token_rewards[torch.arange(n), lengths - 1] = scores  # the outcome on the last token
    return token_rewards, mask, index


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_function_is_verl_grpo_then_iac(norm: bool, alpha: float, seed: int) -> None:
    token_rewards, mask, index = _batch(seed)
    adv, returns = iac_grpo_outcome_advantage(
        token_rewards, mask, index, alpha=alpha, norm_adv_by_std_in_grpo=norm
    )
    scores = token_rewards.sum(-1).tolist()
    ids = [str(x) for x in index]
    expected = reference_iac(reference_grpo(scores, ids, 1e-6, norm), scores, ids, alpha)
    want = torch.tensor(expected).unsqueeze(-1) * mask
    assert adv.shape == token_rewards.shape
    assert torch.allclose(adv, want, atol=1e-5)
    assert torch.equal(adv, returns)
    assert bool((adv[mask == 0] == 0).all())


def test_registration_through_the_registry_decorator() -> None:
    registry: dict[str, Callable[..., Any]] = {}

    def register_adv_est(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            registry[name] = fn
            return fn

        return decorator

    fn = register(register_adv_est=register_adv_est)
    assert registry == {ESTIMATOR_NAME: compute_iac_grpo_advantage}
    token_rewards, mask, index = _batch(0)
    # veRL's call: keyword arguments, an AlgoConfig-like mapping with .get
    config = {"norm_adv_by_std_in_grpo": True, "iac_alpha": 2.0}
    adv, _ = fn(token_level_rewards=token_rewards, response_mask=mask, index=index, config=config)
    want, _ = iac_grpo_outcome_advantage(token_rewards, mask, index, alpha=2.0)
    assert torch.allclose(adv, want)


def test_importing_the_integrations_imports_no_framework() -> None:
    code = (
        "import sys, trainer_hooks, trainer_hooks.integrations, trainer_hooks.integrations.verl; "
        "print(','.join(m for m in ('verl', 'trl', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


class FakeTracking:
    """veRL's ``Tracking`` interface: ``log(data, step)``, ``finish(exit_code=0)``."""

    def __init__(self) -> None:
        self.logged: list[int] = []
        self.data: list[dict[str, Any]] = []
        self.finished: list[int] = []

    def log(self, data: dict[str, Any], step: int) -> None:
        self.logged.append(step)
        self.data.append(dict(data))

    def finish(self, exit_code: int = 0) -> None:
        self.finished.append(exit_code)


def test_tap_streams_steps_with_verl_metrics_and_stops(sqlite_server: ServerThread) -> None:
    with watch(sqlite_server.url, name="verl", group_size=4, kl_beta=0.001, poll_wait=2) as run:
        tap = SharpwatchVerlTap(run).install(FakeTracking)
        tracker = FakeTracking()
        try:
            for step in range(3):
                token_rewards, mask, index = _batch(step)
                adv, _ = compute_iac_grpo_advantage(
                    token_level_rewards=token_rewards,
                    response_mask=mask,
                    index=index,
                    config={"norm_adv_by_std_in_grpo": True},
                )
                want, _ = iac_grpo_outcome_advantage(token_rewards, mask, index, alpha=1.0)
                assert torch.allclose(adv, want, atol=1e-6)
                tracker.log(
                    {
                        "actor/entropy": 0.5 - 0.1 * step,
                        "actor/pg_loss": np.float32(0.25),
                        "critic/score/mean": 0.6,
                    },
                    step + 1,
                )
            assert run.run is not None
            run_id = run.run.id
            httpx.post(
                f"{sqlite_server.url}/api/v1/runs/{run_id}/commands",
                json={"kind": "early_stop", "reason": "operator"},
            )
            deadline = time.monotonic() + 15
            while not run.should_stop and time.monotonic() < deadline:
                time.sleep(0.02)
            token_rewards, mask, index = _batch(3)
            compute_iac_grpo_advantage(
                token_level_rewards=token_rewards, response_mask=mask, index=index, config=None
            )
            with pytest.raises(EarlyStopError, match="operator"):
                tracker.log({"actor/entropy": 0.1}, 4)
        finally:
            tap.detach()
        assert not hasattr(FakeTracking.log, "_sharpwatch_hook")  # detach restored veRL's
        assert tracker.logged == [1, 2, 3, 4]
        # veRL's backends received our numbers with its own, at its step.
        for data, entropy in zip(tracker.data, [0.5, 0.4, 0.3, 0.1], strict=True):
            assert data["actor/entropy"] == entropy
            assert data["sharpwatch/entropy"] == pytest.approx(entropy)
            assert data["sharpwatch/alpha"] == 1.0
            assert 0.0 <= data["sharpwatch/success_rate"] <= 1.0
            assert data["sharpwatch/p_star"] == pytest.approx(1 - 2 ** (-1 / 4))
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3]
    assert [round(s["metrics"]["entropy"], 6) for s in steps] == [0.5, 0.4, 0.3, 0.1]
    for data, record in zip(tracker.data, steps, strict=True):
        assert data["sharpwatch/success_rate"] == pytest.approx(record["metrics"]["success_rate"])
    assert steps[0]["metrics"]["loss"] == 0.25
    assert steps[0]["metrics"]["verl/score_mean"] == 0.6
    detail = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps/0").json()
    assert sorted(q["group_size"] for q in detail["queries"]) == [1, 3, 4, 4]
    assert httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}").json()["status"] == "stopped"


def test_plugin_style_tap_from_the_environment(
    sqlite_server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the veRL plugin does in the driver: the first iac_grpo call opens the run from
    SHARPWATCH_* variables; the hooked Tracking completes each step; finish() closes the run."""
    monkeypatch.setenv("SHARPWATCH_URL", sqlite_server.url)
    monkeypatch.setenv("SHARPWATCH_RUN_NAME", "verl-env")
    monkeypatch.setenv("SHARPWATCH_STATUS_INTERVAL", "0.05")
    monkeypatch.delenv("SHARPWATCH_GROUP_SIZE", raising=False)
    undo = hook_tracking(FakeTracking)
    assert undo is not None
    assert hook_tracking(FakeTracking) is None  # once per class
    tracker = FakeTracking()
    try:
        for step in range(2):
            token_rewards, mask, index = _batch(step)
            adv, _ = compute_iac_grpo_advantage(
                token_level_rewards=token_rewards,
                response_mask=mask,
                index=index,
                config={"norm_adv_by_std_in_grpo": True, "iac_alpha": 0.5},
            )
            want, _ = iac_grpo_outcome_advantage(token_rewards, mask, index, alpha=0.5)
            assert torch.allclose(adv, want, atol=1e-6)
            tracker.log({"actor/entropy": 0.7}, step + 1)
        tracker.finish(exit_code=0)
    finally:
        undo()
    assert tracker.finished == [0]
    runs = httpx.get(f"{sqlite_server.url}/api/v1/runs").json()["items"]
    (run,) = [r for r in runs if r["name"] == "verl-env"]
    assert run["group_size"] == 4  # the largest uid group of the first batch
    assert run["status"] == "finished"
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run['id']}/steps").json()["items"]
    assert [s["metrics"]["alpha"] for s in steps] == [0.5, 0.5]
    assert all(d["sharpwatch/alpha"] == 0.5 for d in tracker.data)
