"""Z'(q) in every mode on crafted batches whose exact answer is worked out by hand (issue 13
item 4; science.md §7), and ``zprime_pressure`` firing in each mode (hooks + service detector)."""

from __future__ import annotations

import math

import pytest
import torch

from service.detectors import DetectorConfig, DetectorState, RuleStatus, StepRecord, evaluate
from tests.trainer_hooks._records import rows_of
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
    assert rows_of(res.record)[0]["log_zprime"] is None
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


def _partition(mode_index: list[int], b: int, g: int) -> list[list[frozenset[int]]]:
    """Each group's responses grouped by mode slot (what a mode assignment means)."""
    out = []
    for q in range(b):
        slots: dict[int, set[int]] = {}
        for i in range(q * g, (q + 1) * g):
            slots.setdefault(mode_index[i], set()).add(i)
        out.append(sorted(frozenset(s) for s in slots.values()))  # type: ignore[type-var]
    return out


@pytest.mark.parametrize("with_logprobs", [False, True])
def test_dense_and_flat_layouts_give_the_same_modes_and_zprime(with_logprobs: bool) -> None:
    """A dense layout's modes (one row-wise sort, slots b·G + rank, row reductions in log Z')
    and the same batch as a flat layout (two sorts over N, segment reductions) agree: the same
    partition into modes, first responses, mode counts and log Z' against a float64 sum."""
    gen = torch.Generator().manual_seed(11)
    b, g = 9, 6
    raw = torch.randint(0, 4, (b, g), generator=gen)
    raw[0] = torch.arange(g)  # all singletons
    raw[1] = 2  # one mode
    keys = [f"k{int(k)}" for k in raw.reshape(-1)]
    adv = torch.randn(b, g, generator=gen, dtype=torch.float64)
    pi = torch.rand(b, g, generator=gen, dtype=torch.float64) / g  # Σ π over a group < 1
    lp = pi.log() if with_logprobs else None
    dense = make_layout(adv)
    flat = make_layout(adv.reshape(-1), [q for q in range(b) for _ in range(g)])
    md, mf = assign_modes(keys, dense), assign_modes(keys, flat)
    assert md.dense_shape == (b, g)
    assert mf.dense_shape is None
    assert _partition(md.mode_index.tolist(), b, g) == _partition(mf.mode_index.tolist(), b, g)
    assert torch.equal(md.n_modes, mf.n_modes)
    for modes in (md, mf):  # a used slot's first response is its mode's first response
        slot_first = modes.first_response.tolist()
        for i, s in enumerate(modes.mode_index.tolist()):
            same = [j for j in range(b * g) if modes.mode_index[j] == s]
            assert slot_first[s] == min(same)
            assert keys[i] == keys[min(same)]
    flat_lp = None if lp is None else lp.reshape(-1)
    zd = log_zprime(adv, md, dense, beta=BETA, ref_logprobs=lp)
    zf = log_zprime(adv.reshape(-1), mf, flat, beta=BETA, ref_logprobs=flat_lp)
    want = []
    for q in range(b):
        by_key: dict[str, list[int]] = {}
        for j in range(g):
            by_key.setdefault(keys[q * g + j], []).append(q * g + j)
        a = adv.reshape(-1).tolist()
        if lp is None:
            n1 = sum(len(r) == 1 for r in by_key.values())
            if n1 == g:
                want.append(math.nan)
                continue
            m_hat = n1 / g
            pis = [len(r) / g * (1 - m_hat) for r in by_key.values()]
            unseen = m_hat
        else:
            pis = [math.exp(lp.reshape(-1)[r[0]].item()) for r in by_key.values()]
            unseen = 1.0 - sum(pis)
        z = unseen + sum(
            pi * math.exp(sum(a[i] for i in r) / (BETA * g))
            for pi, r in zip(pis, by_key.values(), strict=True)
        )
        want.append(math.log(z))
    for z in (zd, zf):
        assert z.log_zprime.tolist() == pytest.approx(want, rel=1e-12, abs=1e-12, nan_ok=True)


def test_raw_and_used_zprime_in_one_pass_match_separate_calls() -> None:
    """``log_zprime_each`` (the step's batched raw + used pass) gives each tensor's
    ``log_zprime``; advantages of different precisions are computed apart, each in its own."""
    from trainer_hooks._zprime import log_zprime_each

    gen = torch.Generator().manual_seed(4)
    raw = torch.randn(16, 8, generator=gen)
    used = raw * 1.7 + 0.1
    keys = [f"k{int(k)}" for k in torch.randint(0, 3, (128,), generator=gen)]
    layout = make_layout(raw)
    modes = assign_modes(keys, layout)
    for lp in (None, -torch.rand(16, 8, generator=gen) * 4):
        for pair in ((raw, used), (raw.double(), used)):
            both = log_zprime_each(pair, modes, layout, beta=BETA, ref_logprobs=lp)
            for got, a in zip(both, pair, strict=True):
                one = log_zprime(a, modes, layout, beta=BETA, ref_logprobs=lp)
                assert got.log_zprime.dtype == one.log_zprime.dtype
                for f in ("log_zprime", "suppression", "lower_bound", "mean", "p90", "gt1_frac"):
                    torch.testing.assert_close(
                        getattr(got, f), getattr(one, f), rtol=1e-6, atol=1e-6, equal_nan=True
                    )
                assert got.queries is not None
                assert one.queries is not None
                assert got.queries.item() == one.queries.item()
