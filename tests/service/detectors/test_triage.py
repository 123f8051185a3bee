"""Pre-RL triage (science.md §1, stage (a))."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.detectors import (
    TriageCandidate,
    TriageFlag,
    TriageRequest,
    TriageResponse,
    triage,
    triage_candidates,
)


def cands(*rows: tuple[str, float, float]) -> list[TriageCandidate]:
    return [TriageCandidate(name=n, entropy=e, pass_at_1=p) for n, e, p in rows]


def test_ranks_by_entropy_not_pass_at_1() -> None:
    res = triage_candidates(
        cands(("sft-3ep", 0.20, 0.45), ("sft-1ep", 0.60, 0.30), ("base", 0.90, 0.10)),
        group_size=8,
    )
    assert [c.name for c in res.candidates] == ["base", "sft-1ep", "sft-3ep"]
    assert [c.rank for c in res.candidates] == [1, 2, 3]
    assert res.recommended == "base"


def test_flags_below_p_star_above_mirror_and_low_entropy() -> None:
    res = triage_candidates(
        cands(
            ("hard", 0.8, 0.05),  # < p*(8) = 0.0830
            ("ok", 0.7, 0.30),
            ("easy", 0.6, 0.95),  # > 1 − p*(8) = 0.9170
            ("sharp", 0.2, 0.50),  # < 0.5 × median 0.65
        ),
        group_size=8,
    )
    flags = {c.name: c.flags for c in res.candidates}
    assert flags == {
        "hard": [TriageFlag.BELOW_P_STAR],
        "ok": [],
        "easy": [TriageFlag.ABOVE_MIRROR],
        "sharp": [TriageFlag.LOW_ENTROPY],
    }
    assert res.p_star == pytest.approx(0.0830, abs=1e-4)
    assert res.median_entropy == pytest.approx(0.65)
    assert res.low_entropy_threshold == pytest.approx(0.325)
    assert res.recommended == "ok"
    reasons = {c.name: c.reason for c in res.candidates}
    assert "p*(G=8)" in reasons["hard"]
    assert "median" in reasons["sharp"]
    assert reasons["ok"].endswith("no risk flags")


def test_group_size_changes_p_star_flag() -> None:
    rows = cands(("a", 0.5, 0.05), ("b", 0.5, 0.3))
    by_name = {c.name: c for c in triage_candidates(rows, 8).candidates}
    assert by_name["a"].flags == [TriageFlag.BELOW_P_STAR]
    by_name = {c.name: c for c in triage_candidates(rows, 16).candidates}
    assert by_name["a"].flags == []  # p*(16) = 0.0424


def test_single_candidate_never_low_entropy_and_all_flagged_gives_no_recommendation() -> None:
    res = triage_candidates(cands(("only", 0.01, 0.5)), 8)
    assert res.candidates[0].flags == []
    res2 = triage_candidates(cands(("a", 0.5, 0.01), ("b", 0.4, 0.99)), 8)
    assert res2.recommended is None


def test_ties_broken_by_pass_then_name() -> None:
    res = triage_candidates(cands(("z", 0.5, 0.3), ("a", 0.5, 0.3), ("m", 0.5, 0.4)), 8)
    assert [c.name for c in res.candidates] == ["m", "a", "z"]


def test_request_schema_validation_and_json_round_trip() -> None:
    with pytest.raises(ValidationError):
        TriageRequest(group_size=0, candidates=cands(("a", 0.5, 0.3)))
    with pytest.raises(ValidationError):
        TriageRequest(group_size=8, candidates=[])
    with pytest.raises(ValidationError, match="unique"):
        TriageRequest(group_size=8, candidates=cands(("a", 0.5, 0.3), ("a", 0.4, 0.3)))
    with pytest.raises(ValidationError):
        TriageCandidate(name="x", entropy=float("nan"), pass_at_1=0.3)
    with pytest.raises(ValidationError):
        TriageCandidate(name="x", entropy=0.3, pass_at_1=1.5)
    req = TriageRequest.model_validate_json(
        '{"group_size": 8, "candidates": [{"name": "a", "entropy": 0.5, "pass_at_1": 0.3}]}'
    )
    resp = triage(req)
    again = TriageResponse.model_validate_json(resp.model_dump_json())
    assert again == resp
    assert resp.model_dump(mode="json")["candidates"][0]["flags"] == []
