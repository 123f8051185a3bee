"""Pre-RL triage (science.md §1, two-stage diagnostic, stage (a)) and the request/response schemas
of ``POST /api/v1/triage``.

For each candidate checkpoint (rollout entropy and pass@1 measured on a probe set) and the run's
group size G:

- ``below_p_star``: pass@1 < p*(G) = 1 − 2^(−1/G) — early GRPO would starve (most groups all-fail);
- ``above_mirror``: pass@1 > 1 − p*(G) — most groups would be all-pass;
- ``low_entropy``: entropy < ``low_entropy_ratio`` × the median entropy of all candidates (default
  0.5; with one candidate it is never flagged). Relative, because pre-RL entropy predicted the final
  outcome (ρ = +0.69) while pass@1 did not.

Candidates are ranked by entropy, highest first (ties: higher pass@1, then name) — never by pass@1.
``recommended`` is the best-ranked candidate without flags (None if all are flagged).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.detectors.names import p_star

__all__ = [
    "TriageCandidate",
    "TriageCandidateResult",
    "TriageFlag",
    "TriageRequest",
    "TriageResponse",
    "triage",
    "triage_candidates",
]


class TriageFlag(StrEnum):
    BELOW_P_STAR = "below_p_star"
    ABOVE_MIRROR = "above_mirror"
    LOW_ENTROPY = "low_entropy"


class TriageCandidate(BaseModel):
    # Strict like every request body (service/schemas/common.py StrictModel): true is not 1.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1, max_length=200, description="Checkpoint name or path.")
    entropy: float = Field(
        ge=0.0, le=100.0, allow_inf_nan=False, description="Mean rollout token entropy (nats)."
    )
    pass_at_1: float = Field(
        ge=0.0, le=1.0, allow_inf_nan=False, description="pass@1 on the probe set."
    )


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    group_size: int = Field(ge=1, le=4096, description="GRPO group size G of the planned run.")
    candidates: list[TriageCandidate] = Field(min_length=1, max_length=1000)
    low_entropy_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="low_entropy when entropy < this × median entropy."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("candidate names must be unique")
        return self


class TriageCandidateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    rank: int = Field(description="1 = highest entropy.")
    name: str
    entropy: float
    pass_at_1: float
    flags: list[TriageFlag]
    reason: str


class TriageResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    group_size: int
    p_star: float
    p_star_mirror: float
    median_entropy: float
    low_entropy_threshold: float
    candidates: list[TriageCandidateResult] = Field(description="Ranked by entropy.")
    recommended: str | None = Field(description="Best-ranked candidate without flags.")


def _median(values: Sequence[float]) -> float:
    xs = sorted(values)
    n = len(xs)
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def triage_candidates(
    candidates: Sequence[TriageCandidate], group_size: int, *, low_entropy_ratio: float = 0.5
) -> TriageResponse:
    """Flag and rank ``candidates`` (see the module docstring)."""
    return triage(
        TriageRequest(
            group_size=group_size,
            candidates=list(candidates),
            low_entropy_ratio=low_entropy_ratio,
        )
    )


def triage(request: TriageRequest) -> TriageResponse:
    g = request.group_size
    low = p_star(g)
    high = 1.0 - low
    med = _median([c.entropy for c in request.candidates])
    ent_threshold = request.low_entropy_ratio * med
    ranked = sorted(request.candidates, key=lambda c: (-c.entropy, -c.pass_at_1, c.name))
    results: list[TriageCandidateResult] = []
    for rank, c in enumerate(ranked, start=1):
        flags: list[TriageFlag] = []
        notes: list[str] = []
        if c.pass_at_1 < low:
            flags.append(TriageFlag.BELOW_P_STAR)
            notes.append(
                f"pass@1 {c.pass_at_1:.4f} < p*(G={g}) = {low:.4f}: most groups would be all-fail"
            )
        elif c.pass_at_1 > high:
            flags.append(TriageFlag.ABOVE_MIRROR)
            notes.append(
                f"pass@1 {c.pass_at_1:.4f} > 1 - p*(G={g}) = {high:.4f}: most groups would be "
                "all-pass"
            )
        if len(request.candidates) > 1 and c.entropy < ent_threshold:
            flags.append(TriageFlag.LOW_ENTROPY)
            notes.append(
                f"entropy {c.entropy:.4f} < {request.low_entropy_ratio:g} × median "
                f"{med:.4f}: likely to collapse under RL"
            )
        head = f"rank {rank} by entropy ({c.entropy:.4f} nats)"
        reason = f"{head}; " + "; ".join(notes) if notes else f"{head}; no risk flags"
        results.append(
            TriageCandidateResult(
                rank=rank,
                name=c.name,
                entropy=c.entropy,
                pass_at_1=c.pass_at_1,
                flags=flags,
                reason=reason,
            )
        )
    recommended = next((r.name for r in results if not r.flags), None)
    return TriageResponse(
        group_size=g,
        p_star=low,
        p_star_mirror=high,
        median_entropy=med,
        low_entropy_threshold=ent_threshold,
        candidates=results,
        recommended=recommended,
    )
