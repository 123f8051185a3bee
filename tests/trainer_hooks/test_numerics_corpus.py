"""Every Monitor metric on real-shaped steps (tests/trainer_hooks/_corpus.py) against a
straightforward float64 implementation written here from science.md (issue 13)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tests.trainer_hooks._corpus import ARCHS, RealBatch, real_batch
from tests.trainer_hooks._records import rows_of
from trainer_hooks import Monitor, StepInputs

# -- float64 references, one response at a time ---------------------------------------------


def ref_entropy_rows(rb: RealBatch) -> list[list[list[float]]]:
    """Entropy of softmax(logits / T) at each response token (science.md §7), float64."""
    b_, g_, t_ = rb.mask.shape
    out: list[list[list[float]]] = []
    for b in range(b_):
        out.append([])
        for g in range(g_):
            toks = [t for t in range(t_) if rb.mask[b, g, t]]
            if not toks:
                out[b].append([])
                continue
            x = rb.logits[b, g, toks].double() / rb.temperature
            lp = torch.log_softmax(x, dim=-1)
            p = lp.exp()
            h = -(torch.where(p > 0, p * lp, 0.0)).sum(-1)
            out[b].append(h.tolist())
    return out


def ref_repetition(rb: RealBatch, n: int) -> float:
    repeated = total = 0
    for b in range(rb.mask.shape[0]):
        for g in range(rb.mask.shape[1]):
            toks = [int(rb.token_ids[b, g, t]) for t in range(rb.mask.shape[2]) if rb.mask[b, g, t]]
            seen: set[tuple[int, ...]] = set()
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                total += 1
                repeated += gram in seen
                seen.add(gram)
    return repeated / max(total, 1)


def _step(rb: RealBatch, **monitor_kw: object) -> tuple[dict[str, float | None], list[dict]]:
    kw: dict[str, object] = {"group_size": 4, "kl_beta": 0.04, "temperature": rb.temperature}
    kw.update(monitor_kw)
    m = Monitor(**kw)  # type: ignore[arg-type]
    res = m.step(
        StepInputs(
            rewards=rb.rewards,
            advantages=rb.advantages,
            logits=rb.logits,
            mask=rb.mask,
            token_ids=rb.token_ids,
            oracle_rewards=rb.oracle_rewards,
        )
    )
    assert res.record["non_finite"] == []
    return res.metrics, rows_of(res.record)


CASES = [
    (name, padding, dtype)
    for name in ARCHS
    for padding in ("right", "left")
    for dtype in (torch.float32, torch.bfloat16, torch.float16)
    if dtype == torch.bfloat16 or name == "qwen2.5-padded"
]


@pytest.mark.parametrize(("name", "padding", "dtype"), CASES)
def test_every_metric_against_float64(name: str, padding: str, dtype: torch.dtype) -> None:
    rb = real_batch(name, padding=padding, dtype=dtype)
    metrics, queries = _step(rb)
    h = ref_entropy_rows(rb)
    flat = [x for grp in h for resp in grp for x in resp]
    # entropy: exact to 1e-4 nats (science.md §7), garbage under the mask never reaches it
    assert metrics["entropy"] == pytest.approx(sum(flat) / len(flat), abs=1e-4)
    assert metrics["entropy_tokens"] == len(flat)
    assert metrics["entropy_empty_rows"] == 0.0
    for b, q in enumerate(queries):
        toks = [x for resp in h[b] for x in resp]
        assert q["entropy"] == pytest.approx(sum(toks) / len(toks), abs=1e-4)
    # group statistics on graded rewards (success: reward >= 0.5)
    r = rb.rewards.double().tolist()
    s_plus = [sum(1 for x in row if x >= 0.5) for row in r]
    assert [q["successes"] for q in queries] == s_plus
    assert metrics["success_rate"] == sum(s / 4 for s in s_plus) / 2
    assert metrics["degenerate_all_fail"] == sum(s == 0 for s in s_plus) / 2
    var = [sum((x - sum(row) / 4) ** 2 for x in row) / 4 for row in r]
    assert metrics["reward_var_observed"] == pytest.approx(sum(var) / 2, rel=1e-12)
    # lengths and repetition, whatever the padding side
    lengths = rb.mask.sum(-1).double()
    assert metrics["response_length"] == pytest.approx(lengths.mean().item(), rel=1e-12)
    assert metrics["repetition_rate"] == pytest.approx(ref_repetition(rb, 4), rel=1e-6)
    # reward accuracy on counts
    agree = sum(
        (p >= 0.5) == (o >= 0.5)
        for p, o in zip(
            rb.rewards.reshape(-1).tolist(), rb.oracle_rewards.reshape(-1).tolist(), strict=True
        )
    )
    assert metrics["reward_accuracy"] == agree / 8
    assert (metrics["reward_accuracy_agree"], metrics["reward_accuracy_total"]) == (agree, 8)
    assert metrics["proxy_reward"] == pytest.approx(sum(sum(row) for row in r) / 8, rel=1e-12)
    o = rb.oracle_rewards.double().tolist()
    assert metrics["gt_reward"] == pytest.approx(sum(sum(row) for row in o) / 8, rel=1e-12)
    # label accuracy: oracle success of the response the proxy prefers (first on ties)
    best = [row.index(max(row)) for row in r]
    assert metrics["label_accuracy"] == sum(o[b][best[b]] >= 0.5 for b in range(2)) / 2
    assert metrics["degenerate_all_pass"] == sum(s == 4 for s in s_plus) / 2
    p = sum(s / 4 for s in s_plus) / 2
    assert metrics["reward_var_expected"] == pytest.approx(p * (1 - p) * 3 / 4, rel=1e-12)
    for b, q in enumerate(queries):
        assert q["response_length"] == pytest.approx(lengths[b].mean().item(), rel=1e-12)


def test_repetition_left_padded_equals_right_padded() -> None:
    """The same responses padded on either side give the same repetition rate (before issue 13
    the left-padded rows were read from their padding)."""
    left = _step(real_batch("qwen2-152k", padding="left", dtype=torch.bfloat16))[0]
    right = _step(real_batch("qwen2-152k", padding="right", dtype=torch.bfloat16))[0]
    assert left["repetition_rate"] == right["repetition_rate"]
    assert left["entropy"] == pytest.approx(right["entropy"], abs=1e-6)


# -- masks select, never multiply (issue 13 item 2; science.md §7) --------------------------


def _tiny(v: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 5, v, generator=gen) * 2 + 30
    mask = torch.ones(2, 2, 5, dtype=torch.bool)
    mask[:, :, 3:] = False
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return logits, mask, rewards


def _ref_mean(logits: torch.Tensor, mask: torch.Tensor) -> float:
    x = logits[mask].double()
    lp = torch.log_softmax(x, -1)
    return float(-(lp.exp() * lp).sum(-1).mean())


@pytest.mark.parametrize("garbage", [math.nan, math.inf, -math.inf, 1e30])
@pytest.mark.parametrize("given", ["logits", "token_entropy"])
def test_garbage_under_the_mask_never_reaches_a_metric(garbage: float, given: str) -> None:
    logits, mask, rewards = _tiny()
    ref = _ref_mean(logits, mask)
    dirty = logits.clone()
    dirty[~mask] = garbage
    m = Monitor(group_size=2, kl_beta=0.04)
    if given == "logits":
        inp = StepInputs(rewards=rewards, logits=dirty, mask=mask)
    else:
        ent = torch.full((2, 2, 5), garbage)
        lp = torch.log_softmax(logits.double(), -1)
        ent[mask] = (-(lp.exp() * lp).sum(-1))[mask].float()
        inp = StepInputs(rewards=rewards, token_entropy=ent, mask=mask.float())
    res = m.step(inp)
    assert res.record["non_finite"] == []
    assert res.metrics["entropy"] == pytest.approx(ref, abs=1e-5)


def test_all_neg_inf_unmasked_row_is_an_input_error_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logits, mask, rewards = _tiny()
    ref = _ref_mean(logits, mask & ~_first_token(mask))
    logits[_first_token(mask)] = -math.inf  # unmasked, no distribution
    m = Monitor(group_size=2, kl_beta=0.04)
    with caplog.at_level(logging.WARNING, logger="trainer_hooks"):
        r1 = m.step(StepInputs(rewards=rewards, logits=logits, mask=mask))
        r2 = m.step(StepInputs(rewards=rewards, logits=logits, mask=mask))
    for res in (r1, r2):
        assert res.record["non_finite"] == []
        assert res.metrics["entropy"] == pytest.approx(ref, abs=1e-5)
        assert res.metrics["entropy_empty_rows"] == 4.0
    assert sum("all -inf" in rec.getMessage() for rec in caplog.records) == 1


def _first_token(mask: torch.Tensor) -> torch.Tensor:
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return first


def test_fully_masked_rows_and_steps_contribute_nothing() -> None:
    logits, mask, rewards = _tiny()
    mask[0] = False  # group 0 has no response tokens at all
    m = Monitor(group_size=2, kl_beta=0.04)
    res = m.step(StepInputs(rewards=rewards, logits=logits, mask=mask))
    assert res.metrics["entropy"] == pytest.approx(_ref_mean(logits, mask), abs=1e-5)
    queries = rows_of(res.record)
    assert queries[0]["entropy"] is None  # undefined, not 0 nats (which would read as collapse)
    assert queries[1]["entropy"] is not None
    res = m.step(StepInputs(rewards=rewards, logits=logits, mask=torch.zeros_like(mask)))
    assert "entropy" not in res.metrics  # no tokens: absent, not NaN
    assert res.metrics["entropy_tokens"] == 0.0
    assert res.record["non_finite"] == []


def test_nan_logits_at_a_response_token_are_real_non_finite() -> None:
    logits, mask, rewards = _tiny()
    logits[0, 0, 0, 7] = math.nan
    res = Monitor(group_size=2, kl_beta=0.04).step(
        StepInputs(rewards=rewards, logits=logits, mask=mask)
    )
    assert res.record["non_finite"] == ["entropy"]


# -- Z'(q) with exact support and IAC (Algorithm 1) on the corpus ---------------------------


def ref_algorithm_1(adv: list[list[float]], alpha: float) -> list[list[float]]:
    out = []
    for row in adv:
        n_plus = sum(1 for a in row if a > 0)
        out.append([a * (len(row) - n_plus) ** alpha if a > 0 else a for a in row])
    return out


def ref_log_zprime(rb: RealBatch, adv: list[list[float]], beta: float) -> list[float]:
    """science.md §7 from scratch: modes = answer keys (a missing key: the response's token
    sequence), π(mode) = Σ π_old over its distinct sequences, unseen = 1 − Σ π (at least 0)."""
    out = []
    for b in range(rb.mask.shape[0]):
        g_ = rb.mask.shape[1]
        modes: dict[object, dict[str, object]] = {}
        for g in range(g_):
            seq = tuple(
                int(rb.token_ids[b, g, t]) for t in range(rb.mask.shape[2]) if rb.mask[b, g, t]
            )
            key = rb.answer_keys[b * g_ + g]
            mode = modes.setdefault(("seq", seq) if key is None else key, {"adv": 0.0, "seqs": {}})
            mode["adv"] = float(mode["adv"]) + adv[b][g]  # type: ignore[arg-type]
            seqs = mode["seqs"]
            assert isinstance(seqs, dict)
            seqs.setdefault(seq, math.exp(float(rb.old_logprobs[b, g])))
        seen = 0.0
        z = 0.0
        for mode in modes.values():
            seqs = mode["seqs"]
            assert isinstance(seqs, dict)
            pi = sum(seqs.values())
            seen += pi
            z += pi * math.exp(float(mode["adv"]) / (beta * g_))  # type: ignore[arg-type]
        out.append(math.log(z + max(0.0, 1.0 - seen)))
    return out


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("padding", ["right", "left"])
def test_zprime_and_iac_against_float64(name: str, padding: str) -> None:
    rb = real_batch(name, padding=padding, dtype=torch.bfloat16)
    m = Monitor(group_size=4, kl_beta=0.04, temperature=rb.temperature, alpha=1.5)
    res = m.step(
        StepInputs(
            rewards=rb.rewards,
            advantages=rb.advantages,
            token_ids=rb.token_ids,
            mask=rb.mask,
            answer_keys=rb.answer_keys,
            old_logprobs=rb.old_logprobs,
        )
    )
    adv = rb.advantages.double().tolist()
    used = ref_algorithm_1(adv, 1.5)
    assert res.advantages is not None
    assert torch.allclose(
        res.advantages.double(), torch.tensor(used, dtype=torch.float64), rtol=1e-6
    )
    for key, a in (("log_zprime_raw", adv), ("log_zprime", used)):
        want = ref_log_zprime(rb, a, 0.04)
        got = [q[key] for q in rows_of(res.record)]
        # float32 work (the advantages are fp32): log Z' to ~1e-7 absolute
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert res.metrics[f"{key}_mean"] == pytest.approx(sum(want) / len(want), abs=1e-6)
        assert res.metrics[f"{key}_p90"] == pytest.approx(_quantile(want, 0.9), abs=1e-6)
    gt1 = [x > 1e-5 for x in ref_log_zprime(rb, used, 0.04)]  # the fp32 tolerance of Z' > 1
    assert res.metrics["zprime_gt1_frac"] == sum(gt1) / len(gt1)
    assert res.metrics["zprime_exact_support"] == 1.0
    assert res.metrics["zprime_pi_is_reference"] == 0.0
    assert res.record["non_finite"] == []


def test_temperature_from_the_monitor_or_the_step() -> None:
    """Entropy of softmax(logits / T) (science.md §7): the Monitor's T, overridden per step."""
    logits, mask, rewards = _tiny()
    m = Monitor(group_size=2, kl_beta=0.04, temperature=0.5)
    at_half = m.step(StepInputs(rewards=rewards, logits=logits, mask=mask)).metrics["entropy"]
    assert at_half == pytest.approx(_ref_mean(logits / 0.5, mask), abs=1e-5)
    step = StepInputs(rewards=rewards, logits=logits, mask=mask, temperature=1.25)
    assert m.step(step).metrics["entropy"] == pytest.approx(
        _ref_mean(logits / 1.25, mask), abs=1e-5
    )
    from trainer_hooks import ConfigurationError

    with pytest.raises(ConfigurationError, match="temperature"):
        Monitor(group_size=2, kl_beta=0.04, temperature=0.0)
    with pytest.raises(ConfigurationError, match=r"StepInputs\.temperature"):
        m.step(StepInputs(rewards=rewards, logits=logits, mask=mask, temperature=-1.0))
