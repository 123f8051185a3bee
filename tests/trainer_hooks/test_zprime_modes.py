"""Z'(q) in every mode on crafted batches whose exact answer is worked out by hand (issue 13
item 4; science.md §7), and ``zprime_pressure`` firing in each mode (hooks + service detector)."""

from __future__ import annotations

import math

import pytest
import torch

from service.detectors import DetectorConfig, DetectorState, RuleStatus, StepRecord, evaluate
from trainer_hooks import Monitor, StepInputs, log_zprime, make_layout
from trainer_hooks._zprime import assign_modes, modes_from_keys, sequence_keys

BETA = 0.5
# one group, G = 4: responses 0 and 1 are the same sequence; 2 and 3 are distinct
TOKENS = [[1, 2, 0], [1, 2, 0], [3, 0, 0], [4, 5, 0]]
LENGTHS = [2, 2, 1, 2]
PI_OLD = [0.5, 0.5, 0.2, 0.1]
PI_REF = [0.4, 0.4, 0.3, 0.05]
ADV = [1.0, 1.0, -1.0, -1.0]


def _padded(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((4, 3), 99)  # garbage id at padded positions
    mask = torch.zeros(4, 3, dtype=torch.bool)
    for i, (row, n) in enumerate(zip(TOKENS, LENGTHS, strict=True)):
        cols = range(n) if side == "right" else range(3 - n, 3)
        for k, c in enumerate(cols):
            ids[i, c] = row[k]
            mask[i, c] = True
    return ids.reshape(1, 4, 3), mask.reshape(1, 4, 3)


def _z_sequences(pi: list[float]) -> float:
    """Modes = distinct sequences {s0 (N=2), s2, s3}; unseen mass 1 − Σ π(distinct)."""
    e = lambda n_a: math.exp(n_a / (BETA * 4))  # noqa: E731
    seen = pi[0] + pi[2] + pi[3]
    return pi[0] * e(2.0) + pi[2] * e(-1.0) + pi[3] * e(-1.0) + (1.0 - seen)


def test_sequence_keys_ignore_padding_side_and_garbage() -> None:
    (ri, rm), (li, lm) = _padded("right"), _padded("left")
    right = sequence_keys(ri.reshape(4, 3), rm.reshape(4, 3)).tolist()
    left = sequence_keys(li.reshape(4, 3), lm.reshape(4, 3)).tolist()
    assert right == left
    assert right[0] == right[1]
    assert len(set(right)) == 3
    # a prefix is a different sequence
    assert (
        sequence_keys(torch.tensor([[1, 2], [1, 0]]), torch.tensor([[1, 1], [1, 0]]))
        .unique()
        .numel()
        == 2
    )


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(("which", "pi"), [("old", PI_OLD), ("ref", PI_REF)])
def test_exact_support_from_sequence_logprobs(side: str, which: str, pi: list[float]) -> None:
    ids, mask = _padded(side)
    lp = torch.tensor([pi], dtype=torch.float64).log()
    kw = {"old_logprobs": lp} if which == "old" else {"ref_logprobs": lp}
    m = Monitor(group_size=4, kl_beta=BETA, iac=False)
    res = m.step(
        StepInputs(
            rewards=torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
            advantages=torch.tensor([ADV], dtype=torch.float64),
            token_ids=ids,
            mask=mask,
            **kw,  # type: ignore[arg-type]
        )
    )
    assert res.metrics["log_zprime_raw_mean"] == pytest.approx(
        math.log(_z_sequences(pi)), abs=1e-12
    )
    assert res.metrics["zprime_exact_support"] == 1.0
    assert res.metrics["zprime_pi_is_reference"] == (1.0 if which == "ref" else 0.0)
    assert res.record["non_finite"] == []


def test_ref_is_used_when_both_are_given() -> None:
    ids, mask = _padded("right")
    m = Monitor(group_size=4, kl_beta=BETA, iac=False)
    res = m.step(
        StepInputs(
            rewards=torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
            advantages=torch.tensor([ADV], dtype=torch.float64),
            token_ids=ids,
            mask=mask,
            old_logprobs=torch.tensor([PI_OLD], dtype=torch.float64).log(),
            ref_logprobs=torch.tensor([PI_REF], dtype=torch.float64).log(),
        )
    )
    assert res.metrics["log_zprime_raw_mean"] == pytest.approx(
        math.log(_z_sequences(PI_REF)), abs=1e-12
    )
    assert res.metrics["zprime_pi_is_reference"] == 1.0


def test_answer_key_modes_sum_their_distinct_sequences() -> None:
    """Keys x x y y: mode y holds the distinct sequences s2 and s3, π(y) = 0.2 + 0.1, exponent
    (−1 − 1)/(βG) = −1; without token ids a mode counts its first response only."""
    a = torch.tensor([ADV], dtype=torch.float64)
    layout = make_layout(a)
    ids, mask = _padded("left")
    seq = sequence_keys(ids.reshape(4, 3), mask.reshape(4, 3))
    modes = assign_modes(["x", "x", "y", "y"], layout, sequence_keys=seq)
    lp = torch.tensor([PI_OLD], dtype=torch.float64).log()
    res = log_zprime(
        a, modes, layout, beta=BETA, ref_logprobs=lp, sequences=modes_from_keys(seq, layout)
    )
    want = 0.5 * math.e + 0.3 * math.exp(-1.0) + 0.2
    assert res.log_zprime.item() == pytest.approx(math.log(want), abs=1e-12)
    first_only = log_zprime(a, modes, layout, beta=BETA, ref_logprobs=lp)
    want = 0.5 * math.e + 0.2 * math.exp(-1.0) + 0.3
    assert first_only.log_zprime.item() == pytest.approx(math.log(want), abs=1e-12)


def test_missing_answer_keys_fall_back_to_the_sequence() -> None:
    """``None`` keys (no extractable answer) are modes of their own: their sequence when token ids
    are given (responses 0 and 1 repeat), never one shared 'None' mode."""
    a = torch.tensor([ADV], dtype=torch.float64)
    layout = make_layout(a)
    ids, mask = _padded("right")
    seq = sequence_keys(ids.reshape(4, 3), mask.reshape(4, 3))
    with_seq = assign_modes([None, None, None, "k"], layout, sequence_keys=seq)
    assert with_seq.n_modes.tolist() == [3.0]  # {s0 = s1}, {s2}, {k}
    alone = assign_modes([None, None, None, "k"], layout)
    assert alone.n_modes.tolist() == [4.0]


def test_response_hash_without_logprobs_or_repeats_is_absent_not_constant() -> None:
    """Before issue 13: every key distinct -> Good–Turing unseen mass 1 -> log Z' = 0 whatever
    the advantages, so zprime_pressure could never fire. Now: no Z' at all."""
    m = Monitor(group_size=4, kl_beta=BETA)
    res = m.step(
        StepInputs(
            rewards=torch.tensor([[1.0, 1.0, 1.0, 0.0]]),
            advantages=torch.tensor([[5.0, 5.0, 5.0, -15.0]]),
            answer_keys=["h1", "h2", "h3", "h4"],
        )
    )
    assert "log_zprime_raw_mean" not in res.metrics
    assert "zprime_gt1_frac" not in res.metrics
    assert res.metrics["zprime_queries"] == 0.0
    assert res.record["queries"][0]["log_zprime"] is None  # type: ignore[index]
    assert res.record["non_finite"] == []


# -- zprime_pressure fires in every mode ----------------------------------------------------


def _confident_batch(mode: str) -> StepInputs:
    """8 queries, G = 4: three correct responses repeat one sequence (the confident mode)."""
    b = 8
    rewards = torch.tensor([[1.0, 1.0, 1.0, 0.0]] * b)
    adv = torch.tensor([[0.5, 0.5, 0.5, -1.5]] * b)
    ids = torch.tensor([[[7, 8], [7, 8], [7, 8], [9, 9]]] * b)
    mask = torch.ones(b, 4, 2, dtype=torch.bool)
    kw: dict[str, object] = {}
    if mode == "answer_keys":
        kw["answer_keys"] = ["a", "a", "a", "b"] * b
    else:
        kw["token_ids"], kw["mask"] = ids, mask
    if mode == "old_logprobs":
        kw["old_logprobs"] = torch.tensor([[0.6, 0.6, 0.6, 0.1]] * b).log()
    if mode == "ref_logprobs":
        kw["ref_logprobs"] = torch.tensor([[0.6, 0.6, 0.6, 0.1]] * b).log()
    return StepInputs(rewards=rewards, advantages=adv, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["answer_keys", "response_hash", "old_logprobs", "ref_logprobs"])
def test_zprime_pressure_fires_in_every_mode(mode: str) -> None:
    m = Monitor(group_size=4, kl_beta=0.04)
    records = []
    for step in range(12):
        res = m.step(_confident_batch(mode))
        records.append(StepRecord.from_mapping({"step": step, "metrics": res.metrics}))
    assert res.metrics["zprime_raw_gt1_frac"] == 1.0
    ev = evaluate(DetectorConfig(), 4, records, DetectorState())
    assert ev.result("zprime_pressure").status is RuleStatus.FIRING
