"""slime's two hooks, driven with slime's call shapes as recorded in
fixtures/slime_624b824.json (slime needs Megatron and SGLang; it does not install here). The slime
side of each call (reward normalisation, the split of a rollout over data-parallel ranks, the
Sample objects) is rebuilt here from that record; the expected numbers are float64 loops."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import field, make_dataclass
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch

from tests._servers import ServerThread
from trainer_hooks import SharpwatchHooksError, watch
from trainer_hooks.integrations import slime as sw_slime

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures" / "slime_624b824.json").read_text(encoding="utf-8")
)
N = 4  # n_samples_per_prompt


class Status(Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    TRUNCATED = "truncated"
    ABORTED = "aborted"
    FAILED = "failed"


def test_fixture_names_the_commit_and_the_hooks() -> None:
    assert FIXTURE["slime_commit"] == "624b824a898ab0ec1fcb4d373004c7f3852bf515"
    adv = FIXTURE["custom_advantage_function"]
    assert adv["call"] == "custom_adv_fn(args, rollout_data)"
    assert set(adv["must_set"]) == {"advantages", "returns"}
    log = FIXTURE["custom_rollout_log_function"]
    assert log["call"] == (
        "custom_log_func(rollout_id, args, samples, rollout_extra_metrics, rollout_time)"
    )
    assert [s.name for s in Status] == FIXTURE["sample_status_values"]


# Exactly slime's Sample fields: reading any other attribute is an AttributeError.
Sample = make_dataclass(
    "Sample",
    [(name, Any, field(default=None)) for name in FIXTURE["sample_fields"]],
    slots=True,
)


def _args(**overrides: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "n_samples_per_prompt": N,
        "rollout_batch_size": 3,
        "reward_key": None,
        "grpo_std_normalization": True,
        "rewards_normalization": True,
        "use_kl_loss": False,
        "kl_loss_coef": 0.0,
    }
    values.update(overrides)
    assert set(values) <= set(FIXTURE["args_read_by_sharpwatch"]) | {"sharpwatch_iac_alpha"}
    return SimpleNamespace(**values)


# -- the slime side, as the fixture records it ----------------------------------------------------
def slime_normalise(raw: list[float], args: SimpleNamespace) -> list[float]:
    """RolloutManager._post_process_rewards for grpo (fixture: reward_normalization)."""
    rewards = torch.tensor(raw, dtype=torch.float)
    if rewards.shape[-1] == args.n_samples_per_prompt * args.rollout_batch_size:
        rewards = rewards.reshape(-1, args.n_samples_per_prompt)
    else:
        rewards = rewards.view(-1, rewards.shape[-1])
    rewards = rewards - rewards.mean(dim=-1, keepdim=True)
    if args.grpo_std_normalization:
        rewards = rewards / (rewards.std(dim=-1, keepdim=True) + 1e-6)
    return [float(v) for v in rewards.flatten().tolist()]


def slime_rank_data(
    raw: list[float], args: SimpleNamespace, dp: int, seed: int
) -> list[dict[str, Any]]:
    """Each data-parallel rank's rollout_data as the advantage hook receives it: local
    normalised rewards, the whole rollout's raw rewards, local positions (groups split over
    ranks), and the per-token kl list set just before the call."""
    normalised = slime_normalise(raw, args)
    positions = list(range(len(raw)))
    random.Random(seed).shuffle(positions)
    ranks = [sorted(positions[r::dp]) for r in range(dp)]
    lengths = random.Random(seed + 1).choices(range(1, 7), k=len(raw))
    out = []
    for partition in ranks:
        out.append(
            {
                "partition": partition,
                "rewards": [normalised[p] for p in partition],
                "raw_reward": list(raw),
                "local_raw_reward": [raw[p] for p in partition],
                "response_lengths": [lengths[p] for p in partition],
                "kl": [torch.zeros(lengths[p], dtype=torch.float32) for p in partition],
            }
        )
    return out


def reference_iac(raw: list[float], args: SimpleNamespace, alpha: float) -> list[float]:
    """slime's GRPO advantage in float64, then IAC with S⁺ = responses with A > 0."""
    n = args.n_samples_per_prompt
    out = []
    for start in range(0, len(raw), n):
        group = raw[start : start + n]
        mean = sum(group) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1))
        norm = args.grpo_std_normalization
        adv = [(r - mean) / (std + 1e-6) if norm else r - mean for r in group]
        s_plus = sum(a > 0 for a in adv)
        out.extend(a * (n - s_plus) ** alpha if a > 0 else a for a in adv)
    return out


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5])
@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("std_norm", [True, False])
def test_iac_advantages_over_data_parallel_ranks(
    alpha: float, graded: bool, std_norm: bool
) -> None:
    gen = random.Random(int(alpha * 10) + graded * 100 + std_norm * 1000)
    raw = [gen.random() if graded else float(gen.random() > 0.5) for _ in range(3 * N)]
    raw[0:N] = [1.0, 0.0, 0.0, 0.0]  # one success in four: factor (4 - 1)^α
    args = _args(grpo_std_normalization=std_norm, sharpwatch_iac_alpha=alpha)
    expected = reference_iac(raw, args, alpha)
    seen: dict[int, float] = {}
    for data in slime_rank_data(raw, args, dp=3, seed=7):
        sw_slime.iac_advantages(args, data)
        assert data["returns"] is data["advantages"]
        rows = zip(data["partition"], data["advantages"], data["kl"], strict=True)
        for position, adv, kl in rows:
            assert adv.shape == kl.shape
            assert adv.dtype == torch.float32
            assert torch.all(adv == adv[0])  # the response's advantage on every token
            seen[position] = float(adv[0])
    assert sorted(seen) == list(range(len(raw)))
    for position, want in enumerate(expected):
        assert seen[position] == pytest.approx(want, rel=1e-5, abs=1e-5), position
    if alpha == 1.0:
        assert seen[0] == pytest.approx(3.0 * slime_normalise(raw, args)[0], rel=1e-5)


def test_alpha_zero_is_slimes_own_grpo() -> None:
    raw = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    args = _args(sharpwatch_iac_alpha=0.0)
    for data in slime_rank_data(raw, args, dp=2, seed=1):
        sw_slime.iac_advantages(args, data)
        for a, adv, kl in zip(data["rewards"], data["advantages"], data["kl"], strict=True):
            assert torch.equal(adv, torch.ones_like(kl) * a)  # get_grpo_returns


def test_iac_advantages_alpha_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = [1.0, 0.0, 0.0, 0.0] * 3
    args = _args()
    monkeypatch.setenv("SHARPWATCH_IAC_ALPHA", "2")
    (data,) = slime_rank_data(raw, args, dp=1, seed=0)
    sw_slime.iac_advantages(args, data)
    want = reference_iac(raw, args, 2.0)
    got = [float(data["advantages"][data["partition"].index(p)][0]) for p in range(len(raw))]
    assert got == pytest.approx(want, rel=1e-5)
    monkeypatch.setenv("SHARPWATCH_IAC_ALPHA", "-1")
    with pytest.raises(SharpwatchHooksError, match="SHARPWATCH_IAC_ALPHA"):
        sw_slime.iac_advantages(args, data)


def test_iac_advantages_names_what_is_missing() -> None:
    args = _args()
    (data,) = slime_rank_data([1.0, 0.0, 0.0, 0.0] * 3, args, dp=1, seed=0)
    del data["raw_reward"]
    with pytest.raises(SharpwatchHooksError, match="raw_reward"):
        sw_slime.iac_advantages(args, data)


# -- the rollout log hook against a real service -----------------------------------------------
def _samples(seed: int, *, nested: bool = False) -> list[Any]:
    gen = random.Random(seed)
    out: list[Any] = []
    for group in range(3):
        for j in range(N):
            length = gen.randint(1, 5)
            response = [gen.randint(3, 6) for _ in range(length)]  # repeats happen: modes
            out.append(
                Sample(
                    group_index=group,
                    index=group * N + j,
                    prompt=f"q{group}",
                    tokens=[1, 2, *response],
                    response="".join(map(str, response)),
                    response_length=length,
                    reward=float(gen.random() > 0.5),
                    rollout_log_probs=[-gen.random() for _ in range(length)],
                    status=Status.TRUNCATED if j == 0 else Status.COMPLETED,
                    metadata={"entropy": [gen.random() for _ in range(length)]},
                )
            )
    if nested:
        return [out[i : i + N] for i in range(0, len(out), N)]
    return out


def _wait(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_log_rollout_data_streams_the_step_and_feeds_slimes_logger(
    sqlite_server: ServerThread,
) -> None:
    args = _args()
    with watch(
        sqlite_server.url, name="slime", group_size=N, kl_beta=0.0, reference_beta=0.04, poll_wait=2
    ) as run:
        sw_slime.use_session(run, status_interval=0.05)
        try:
            extra_metrics: list[dict[str, Any]] = []
            rollouts = [_samples(0), _samples(1, nested=True)]
            for rollout_id, samples in enumerate(rollouts):
                metrics: dict[str, Any] = {"rollout/from_the_rollout_fn": 1.0}
                assert sw_slime.log_rollout_data(rollout_id, args, samples, metrics, 2.5) is False
                extra_metrics.append(metrics)
            assert run.run is not None
            run_id = run.run.id
            httpx.post(
                f"{sqlite_server.url}/api/v1/runs/{run_id}/commands",
                json={"kind": "early_stop", "reason": "operator"},
            )
            _wait(lambda: run.should_stop)
            with pytest.raises(sw_slime.EarlyStopError, match="operator"):
                sw_slime.log_rollout_data(2, args, _samples(2), {}, 1.0)
        finally:
            sw_slime.use_session(None)
    steps = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps").json()["items"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    for rollout_id, seed in enumerate([0, 1]):
        flat = _samples(seed)
        detail = httpx.get(f"{sqlite_server.url}/api/v1/runs/{run_id}/steps/{rollout_id}").json()
        # Per-query success counts, from the samples' rewards.
        got = sorted((q["group_size"], q["successes"]) for q in detail["queries"])
        want = sorted(
            (N, sum(s.reward >= 0.5 for s in flat if s.group_index == g)) for g in range(3)
        )
        assert got == want
        m = detail["metrics"]
        # Entropy: token-weighted mean of the samples' per-token entropies.
        tokens = [h for s in flat for h in s.metadata["entropy"]]
        assert m["entropy"] == pytest.approx(sum(tokens) / len(tokens), rel=1e-5)
        seq = [sum(s.rollout_log_probs) for s in flat]
        assert m["slime/seq_logprob_mean"] == pytest.approx(sum(seq) / len(seq), rel=1e-6)
        assert m["slime/truncated_ratio"] == pytest.approx(3 / 12)
        assert m["slime/rollout_time"] == 2.5
        # Z'(q) over the modes (distinct response tokens) with the rollout's sequence
        # log-probs as π (π_old standing in for π_ref, science.md §7).
        assert m["log_zprime_raw_mean"] is not None
        assert m["zprime_exact_support"] == 1.0
        assert m["zprime_pi_is_reference"] == 0.0
        # slime's default logging starts from rollout_extra_metrics: our numbers ride along.
        logged = extra_metrics[rollout_id]
        assert logged["rollout/from_the_rollout_fn"] == 1.0
        assert logged["sharpwatch/success_rate"] == pytest.approx(m["success_rate"])
        assert logged["sharpwatch/entropy"] == pytest.approx(m["entropy"])
        assert logged["sharpwatch/alpha"] == 1.0
        assert "sharpwatch/log_zprime_raw_mean" in logged
