"""Monitor: wire record, one host sync, α schedule, stop, sender isolation."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

import trainer_hooks._sections as monitor_mod
import trainer_hooks._sync as sync_mod
from service.wire.query import QUERY_ROW_FIELDS
from tests.trainer_hooks._records import rows_of
from trainer_hooks import (
    ConfigurationError,
    Monitor,
    ProbeInputs,
    ShapeError,
    StepInputs,
    StopRequest,
    grpo_advantages,
    p_star,
)

B, G, T, V = 3, 4, 5, 11


def _inputs(seed: int = 0, **over: Any) -> StepInputs:
    gen = torch.Generator().manual_seed(seed)
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0] * 4, [1.0, 1.0, 1.0, 0.0]])
    kw: dict[str, Any] = {
        "rewards": r,
        "advantages": grpo_advantages(r),
        "answer_keys": list("abcc" + "xxyy" + "aaab"),
        "logits": torch.randn(B, G, T, V, generator=gen),
        "mask": torch.ones(B, G, T),
        "oracle_rewards": r.flip(-1),
        "token_ids": torch.randint(0, 3, (B, G, T), generator=gen),
        "ref_logprobs": torch.full((B, G), -2.0),
        "loss": torch.tensor(0.25),
        "grad_norm": 1.5,
        "kl": 0.01,
        "probe": ProbeInputs(r, token_entropy=torch.ones(B, G, T)),
        "extra": {"lr": 1e-6, "clip_frac": torch.tensor(0.1)},
    }
    kw.update(over)
    return StepInputs(**kw)


class _Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def submit(self, record: dict[str, object]) -> None:
        self.records.append(record)


def test_record_matches_wire_contract() -> None:
    sink = _Sink()
    m = Monitor(group_size=G, kl_beta=0.05, sender=sink)
    res = m.step(_inputs(query_ids=["a", "b", "c"]))
    rec = sink.records[0]
    assert rec is res.record
    json.dumps(rec)  # JSON-ready
    assert set(rec) == {"step", "time", "metrics", "non_finite", "queries"}
    assert rec["step"] == 0
    assert str(rec["time"]).endswith("+00:00")
    metrics = rec["metrics"]
    assert isinstance(metrics, dict)
    standard = {
        "entropy", "success_rate", "degenerate_all_fail", "degenerate_all_pass",
        "log_zprime_mean", "log_zprime_p90", "zprime_gt1_frac", "reward_accuracy",
        "label_accuracy", "proxy_reward", "gt_reward", "response_length", "repetition_rate",
        "kl", "alpha", "mu", "probe_success", "probe_entropy", "loss", "grad_norm",
    }  # fmt: skip
    assert standard <= set(metrics)
    assert all(v is None or isinstance(v, float) for v in metrics.values())
    assert metrics["success_rate"] == pytest.approx(5 / 12)
    assert metrics["degenerate_all_fail"] == pytest.approx(1 / 3)
    assert metrics["p_star"] == pytest.approx(p_star(G))
    assert metrics["zprime_beta"] == 0.05
    assert metrics["zprime_beta_is_reference"] == 0.0
    assert metrics["clip_frac"] == pytest.approx(0.1)
    assert metrics["lr"] == 1e-6
    assert metrics["loss"] == pytest.approx(0.25)
    assert isinstance(rec["queries"], dict)  # the columnar shape: one list per field
    assert list(rec["queries"]) == list(QUERY_ROW_FIELDS)  # every field has values here
    queries = rows_of(rec)
    assert len(queries) == B
    q0 = queries[0]
    assert set(q0) == {
        "query_id", "group_size", "successes", "entropy", "log_zprime", "log_zprime_raw",
        "n_modes", "reward_accuracy", "response_length",
    }  # fmt: skip
    assert (q0["query_id"], q0["group_size"], q0["successes"], q0["n_modes"]) == ("a", 4, 2, 3)
    assert isinstance(q0["group_size"], int)
    assert isinstance(q0["successes"], int)
    assert queries[1]["log_zprime"] == pytest.approx(0.0, abs=1e-6)  # degenerate group (fp32)
    assert res.metrics is metrics


def test_default_query_ids_and_optional_inputs() -> None:
    m = Monitor(group_size=G, kl_beta=0.0, reference_beta=0.1)
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    res = m.step(StepInputs(rewards=r))
    q = rows_of(res.record)[0]
    assert q["query_id"] == "q0"
    assert q["entropy"] is None
    assert q["log_zprime"] is None
    assert "log_zprime_mean" not in res.metrics
    assert res.advantages is None


def test_iac_applied_and_raw_zprime_reported() -> None:
    m = Monitor(group_size=G, kl_beta=0.05)
    inp = _inputs()
    res = m.step(inp)
    assert inp.advantages is not None
    assert res.advantages is not None
    adv = inp.advantages
    # group 0: S+ = 2 -> positives x 2; group 2: S+ = 3 -> positives x 1
    assert torch.equal(
        res.advantages, torch.where(adv > 0, adv * torch.tensor([[2.0], [4.0], [1.0]]), adv)
    )
    q = rows_of(res.record)
    assert q[0]["log_zprime"] != pytest.approx(q[0]["log_zprime_raw"])
    assert q[2]["log_zprime"] == pytest.approx(q[2]["log_zprime_raw"])
    off = Monitor(group_size=G, kl_beta=0.05, iac=False).step(inp)
    assert off.advantages is inp.advantages


def test_alpha_change_applies_from_next_step() -> None:
    m = Monitor(group_size=G, kl_beta=0.05, alpha=1.0)
    assert m.step(_inputs()).metrics["alpha"] == 1.0
    applied: list[Any] = []
    m.set_alpha(0.0, reason="service alpha-adjust", on_applied=applied.append)
    assert m.alpha == 1.0  # not yet
    assert m.pending_alpha == 0.0
    assert m.last_step == 0
    assert applied == []
    res = m.step(_inputs())
    assert res.metrics["alpha"] == 0.0
    assert res.alpha == 0.0
    inp = _inputs()
    assert m.step(inp).advantages is inp.advantages  # α = 0: identity
    assert len(m.alpha_history) == 1
    assert applied == m.alpha_history
    ch = m.alpha_history[0]
    assert (ch.alpha, ch.reason, ch.requested_after_step, ch.effective_step) == (
        0.0, "service alpha-adjust", 0, 1,
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="new_alpha"):
        m.set_alpha(-1.0)


def test_stop_request_and_callback() -> None:
    seen: list[StopRequest] = []
    m = Monitor(group_size=G, kl_beta=0.05, on_stop=seen.append)
    m.step(_inputs())
    assert not m.should_stop
    m.request_stop("entropy floor", best_step=0)
    assert m.should_stop
    assert seen[0] == StopRequest("entropy floor", 0, 0)

    def boom(_: StopRequest) -> None:
        raise RuntimeError("user bug")

    m2 = Monitor(group_size=G, kl_beta=0.05, on_stop=boom)
    m2.request_stop("x")  # logged, not raised
    assert m2.should_stop


def test_sender_errors_never_reach_the_loop() -> None:
    class Broken:
        def submit(self, record: dict[str, object]) -> None:
            raise ConnectionError("down")

    m = Monitor(group_size=G, kl_beta=0.05, sender=Broken())
    m.step(_inputs())
    m.step(_inputs())
    assert m.sender_errors == 2


def test_non_finite_metrics_become_none() -> None:
    m = Monitor(group_size=G, kl_beta=0.05)
    res = m.step(_inputs(loss=torch.tensor(float("nan")), grad_norm=float("inf")))
    assert res.metrics["loss"] is None
    assert res.metrics["grad_norm"] is None
    assert set(res.record["non_finite"]) == {"loss", "grad_norm"}  # type: ignore[arg-type]


def test_model_collapse_step_reported() -> None:
    m = Monitor(group_size=G, kl_beta=0.05)
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    good = m.step(StepInputs(rewards=r, oracle_rewards=r))
    assert "model_collapse_step" not in good.metrics
    bad = m.step(StepInputs(rewards=r, oracle_rewards=1 - r))
    assert bad.metrics["reward_accuracy"] == 0.0
    assert bad.metrics["model_collapse_step"] == 1.0
    assert bad.metrics["collapse_threshold"] == 0.01
    assert m.collapse.collapse_step == 1


def test_flat_variable_groups() -> None:
    m = Monitor(group_size=4, kl_beta=0.05)
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    res = m.step(
        StepInputs(rewards=r, group_ids=["u", "u", "u", "v", "v"], advantages=r - 0.5,
                   answer_keys=list("aabcd"), token_entropy=torch.ones(5, 2))
    )  # fmt: skip
    q = rows_of(res.record)
    assert [(x["group_size"], x["successes"]) for x in q] == [(3, 2), (2, 1)]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"group_size": 0, "kl_beta": 0.1}, "group_size"),
        ({"group_size": 8, "kl_beta": -1.0}, "kl_beta"),
        ({"group_size": 8, "kl_beta": 0.0, "reference_beta": 0.0}, "reference_beta"),
        ({"group_size": 8, "kl_beta": 0.1, "alpha": -1.0}, "alpha"),
        ({"group_size": 8, "kl_beta": 0.1, "mu": float("nan")}, "mu"),
        ({"group_size": 8, "kl_beta": 0.1, "entropy_chunk_size": 0}, "entropy_chunk_size"),
        ({"group_size": 8, "kl_beta": 0.1, "probe_every": 0}, "probe_every"),
        ({"group_size": 8, "kl_beta": 0.1, "collapse_threshold": 2.0}, "threshold"),
        ({"group_size": 8, "kl_beta": 0.1, "sender": object()}, "sender"),
        ({"group_size": 8, "kl_beta": 0.1, "success_threshold": "x"}, "success_threshold"),
    ],
)
def test_constructor_validation_names_argument(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Monitor(**kwargs)


def test_shape_errors() -> None:
    m = Monitor(group_size=G, kl_beta=0.05)
    with pytest.raises(ShapeError):
        m.step(_inputs(advantages=torch.zeros(B, G + 1)))
    with pytest.raises(ShapeError):
        m.step(_inputs(query_ids=["only-one"]))


def test_probe_due() -> None:
    m = Monitor(group_size=G, kl_beta=0.05, probe_every=2)
    assert m.probe_due()
    assert not m.probe_due(1)
    assert m.probe_due(4)
    assert not Monitor(group_size=G, kl_beta=0.05).probe_due()


# ---------------------------------------------------------------------------------------------
# one host synchronisation per step
# ---------------------------------------------------------------------------------------------

_SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@pytest.fixture
def sync_counter(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every Python-level device-to-host read of a tensor, and every ``to_host`` call.

    On CUDA each of these would wait for the stream. (C++-internal syncs are caught by the
    CUDA test below, which runs where a GPU is present.)
    """
    counts: Counter[str] = Counter()
    for name in _SYNCING:
        orig = getattr(torch.Tensor, name)

        def wrapped(self: torch.Tensor, *a: Any, _orig: Callable[..., Any] = orig, _n: str = name,
                    **k: Any) -> Any:  # fmt: skip
            counts[_n] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    orig_to_host = sync_mod.to_host

    def counted_to_host(t: torch.Tensor) -> list[float]:
        counts["to_host"] += 1
        return orig_to_host(t)

    monkeypatch.setattr(monitor_mod, "to_host", counted_to_host)
    return counts


def test_full_step_makes_exactly_one_host_sync(sync_counter: Counter[str]) -> None:
    m = Monitor(group_size=G, kl_beta=0.05, sender=_Sink())
    inp = _inputs()
    sync_counter.clear()
    m.step(inp)
    assert sync_counter["to_host"] == 1
    assert sum(v for k, v in sync_counter.items() if k != "to_host") == 1, sync_counter
    assert sync_counter["tolist"] == 1


def test_sync_counter_detects_a_second_sync(
    sync_counter: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check must be able to fail: a stray ``.item()`` inside the step path is seen."""
    orig = monitor_mod.entropy_summary

    def leaky(*a: Any, **k: Any) -> Any:
        out = orig(*a, **k)
        _ = out.mean.item()  # the kind of regression the one-sync test exists for
        return out

    monkeypatch.setattr(monitor_mod, "entropy_summary", leaky)
    m = Monitor(group_size=G, kl_beta=0.05)
    inp = _inputs()
    sync_counter.clear()
    m.step(inp)
    assert sum(v for k, v in sync_counter.items() if k != "to_host") == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_has_no_hidden_sync(monkeypatch: pytest.MonkeyPatch) -> None:  # pragma: no cover
    dev = torch.device("cuda")
    inp = _inputs()
    moved = {
        k: (v.to(dev) if isinstance(v, torch.Tensor) else v)
        for k, v in inp.__dict__.items()
        if k not in ("probe", "extra")
    }
    m = Monitor(group_size=G, kl_beta=0.05)
    orig = sync_mod.to_host

    def allowed(t: torch.Tensor) -> list[float]:
        torch.cuda.set_sync_debug_mode(0)
        try:
            return orig(t)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(monitor_mod, "to_host", allowed)
    m.step(StepInputs(**moved))  # warm-up (allocator, lazy init)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        res = m.step(StepInputs(**moved))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert res.advantages is not None
    assert res.advantages.device.type == "cuda"
    assert not math.isnan(res.metrics["entropy"] or math.nan)
