"""Per-run detector configuration (pydantic v2). Defaults follow science.md §5; every other default
is a documented heuristic. Every field is bounded; unknown fields are rejected.

Windows count *observations of the rule's metric* (records where it is present and finite), so
sparse metrics (``probe_*``, ``gt_reward``) work with the same settings; warm-up compares the newest
step number with ``warmup_steps``; cooldown counts steps after a resolve before the rule may reopen.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.detectors.names import (
    DEGENERATE_GROUPS,
    ENTROPY_FLOOR,
    ENTROPY_SLOPE,
    LENGTH_COLLAPSE,
    MODEL_COLLAPSE_STEP,
    NON_FINITE,
    PROBE_DECLINE,
    REPETITION_COLLAPSE,
    REWARD_ACCURACY_DIVERGENCE,
    RISE_THEN_FALL,
    RULE_NAMES,
    SIGNAL_STARVATION,
    ZPRIME_PRESSURE,
    Severity,
)

__all__ = [
    "DegenerateGroupsSettings",
    "DetectorConfig",
    "EntropyFloorSettings",
    "EntropySlopeSettings",
    "LengthCollapseSettings",
    "MetricName",
    "ModelCollapseSettings",
    "NonFiniteSettings",
    "ProbeDeclineSettings",
    "RepetitionCollapseSettings",
    "RewardAccuracyDivergenceSettings",
    "RiseThenFallSettings",
    "RuleSettings",
    "SignalStarvationSettings",
    "ZPrimePressureSettings",
]

_MAX_STEPS = 10_000_000
_MAX_WINDOW = 1000

MetricName = Annotated[
    str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,99}$", description="A step metric name.")
]
Slope = Annotated[float, Field(ge=0.0, le=1e6)]


class RuleSettings(BaseModel):
    """Settings every rule has."""

    # Strict like every request body (``true`` is not 1); the severity alone is read from its
    # string value, and storage reads stored settings back with ``strict=False``.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = Field(True, description="Evaluate this rule. Disabling resolves its alert.")
    severity: Severity = Field(
        Severity.WARNING, strict=False, description="Severity of the alert it opens."
    )
    warmup_steps: int = Field(
        0, ge=0, le=_MAX_STEPS, description="Not evaluated while the newest step < this."
    )
    window: int = Field(
        5, ge=1, le=_MAX_WINDOW, description="Observations of the metric the rule looks at."
    )
    cooldown_steps: int = Field(
        10,
        ge=0,
        le=_MAX_STEPS,
        description="After a resolve at step s the rule may reopen only at step >= s + this "
        "(ignored for rules in the policy's auto_stop_rules).",
    )
    resolve_after: int = Field(
        1,
        ge=1,
        le=_MAX_WINDOW,
        description="Clear evaluations in a row before an open alert resolves (1: at the first). "
        "Raise it for a rule that flaps near its threshold; disabling the rule still resolves "
        "at once.",
    )


class TrendSettings(RuleSettings):
    """A rule that fits a least-squares slope needs at least 3 observations."""

    window: int = Field(
        20, ge=3, le=_MAX_WINDOW, description="Observations the least-squares slope is fitted on."
    )


class EntropyFloorSettings(RuleSettings):
    """``entropy_floor``: each of the last ``window`` entropy observations is below ``floor``."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    floor: float = Field(
        0.10,
        gt=0.0,
        le=50.0,
        description="Entropy floor in nats (science.md §5; also used by "
        "entropy_slope and the α controller).",
    )


class EntropySlopeSettings(TrendSettings):
    """``entropy_slope``: entropy slope < 0 and the fitted line reaches the floor within
    ``horizon_steps`` steps of the newest step (already at/below the floor counts as 0 steps)."""

    horizon_steps: int = Field(
        100, ge=1, le=_MAX_STEPS, description="Early-warning horizon H in steps."
    )


class SignalStarvationSettings(RuleSettings):
    """``signal_starvation``: mean success rate of the window < p*(G) or > 1 − p*(G)."""


class DegenerateGroupsSettings(RuleSettings):
    """``degenerate_groups``: mean of (all_fail + all_pass) over the window > ``max_fraction``."""

    max_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="Largest tolerated degenerate-group fraction."
    )


class ZPrimePressureSettings(TrendSettings):
    """``zprime_pressure``: mean ``zprime_raw_gt1_frac`` (Z' from the advantages before IAC,
    science.md §7) over the window >= ``max_fraction``, or its slope >= ``rising_slope`` per step
    while the newest value >= ``rising_min_fraction``."""

    window: int = Field(10, ge=3, le=_MAX_WINDOW, description="Observations (mean and slope).")
    max_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="Mean fraction of queries with raw Z' > 1 that fires."
    )
    rising_slope: Slope = Field(0.01, description="Per-step rise of the fraction that fires.")
    rising_min_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="The rising trend fires only above this level."
    )


class ModelCollapseSettings(RuleSettings):
    """``model_collapse_step``: reward accuracy < ``threshold`` on each of the last ``window``
    observations; the first such step is recorded in the state as the Model Collapse Step."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    window: int = Field(1, ge=1, le=_MAX_WINDOW, description="1 = the definition of §4.")
    threshold: float = Field(
        0.01, gt=0.0, le=1.0, description="Reward-accuracy threshold (science.md §4/§5)."
    )
    cooldown_steps: int = Field(0, ge=0, le=_MAX_STEPS, description="Steps before reopening.")


class RewardAccuracyDivergenceSettings(TrendSettings):
    """``reward_accuracy_divergence``: over the last ``window`` steps carrying both metrics,
    slope(proxy_reward) >= ``min_proxy_slope`` and
    slope(reward_accuracy) <= −``min_accuracy_decline``."""

    min_proxy_slope: Slope = Field(0.002, description="Proxy-reward rise per step that counts.")
    min_accuracy_decline: Slope = Field(
        0.002, description="Reward-accuracy fall per step that counts."
    )


class RiseThenFallSettings(RuleSettings):
    """``rise_then_fall``: smoothed ``metric`` (mean of the last ``window`` observations) <= running
    peak of the smoothed metric − ``margin``, at least ``patience_steps`` after the peak step."""

    window: int = Field(3, ge=1, le=_MAX_WINDOW, description="Smoothing window (observations).")
    cooldown_steps: int = Field(20, ge=0, le=_MAX_STEPS, description="Steps before reopening.")
    metric: MetricName = Field("gt_reward", description="Validation metric to track.")
    margin: float = Field(0.05, gt=0.0, le=1e6, description="Absolute drop below the peak.")
    patience_steps: int = Field(
        10, ge=0, le=_MAX_STEPS, description="Steps after the peak before it may fire."
    )


class ProbeDeclineSettings(TrendSettings):
    """``probe_decline``: over the last ``window`` probe evaluations, slope(probe_success) <=
    −``min_probe_decline`` or slope(probe_entropy) <= −``min_probe_entropy_decline``, while the
    training success rate over the same step span has slope >= ``min_train_rise``."""

    window: int = Field(5, ge=3, le=_MAX_WINDOW, description="Probe evaluations in the fit.")
    min_probe_decline: Slope = Field(0.001, description="Probe-success fall per step.")
    min_probe_entropy_decline: Slope = Field(0.002, description="Probe-entropy fall per step.")
    min_train_rise: Slope = Field(0.001, description="Training-success rise per step.")


class LengthCollapseSettings(TrendSettings):
    """``length_collapse``: over the last ``window`` steps carrying both, the relative slopes
    (slope / window mean) of response_length and of entropy are both
    <= −``min_relative_decline``."""

    min_relative_decline: Slope = Field(
        0.005, description="Relative fall per step (0.005 = 0.5 %/step) of both signals."
    )


class RepetitionCollapseSettings(TrendSettings):
    """``repetition_collapse``: slope(repetition_rate) >= ``min_rise`` per step and the newest value
    >= ``min_level``."""

    min_rise: Slope = Field(0.005, description="Repetition-rate rise per step.")
    min_level: float = Field(0.2, ge=0.0, le=1.0, description="Fires only above this level.")


class NonFiniteSettings(RuleSettings):
    """``non_finite``: the newest step reports any metric as NaN/inf."""

    severity: Severity = Field(
        Severity.CRITICAL, strict=False, description="Severity of the alert it opens."
    )
    window: int = Field(1, ge=1, le=1, description="Always the newest step.")
    cooldown_steps: int = Field(0, ge=0, le=_MAX_STEPS, description="Steps before reopening.")


class DetectorConfig(BaseModel):
    """Per-run detector settings; one field per rule (field name = rule name)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    history_steps: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Records the service fetches as history (see history_needed); raise it when "
        "sparse metrics (probes every N steps) need window × N records.",
    )
    entropy_floor: EntropyFloorSettings = Field(default_factory=EntropyFloorSettings)
    entropy_slope: EntropySlopeSettings = Field(default_factory=EntropySlopeSettings)
    signal_starvation: SignalStarvationSettings = Field(default_factory=SignalStarvationSettings)
    degenerate_groups: DegenerateGroupsSettings = Field(default_factory=DegenerateGroupsSettings)
    zprime_pressure: ZPrimePressureSettings = Field(default_factory=ZPrimePressureSettings)
    model_collapse_step: ModelCollapseSettings = Field(default_factory=ModelCollapseSettings)
    reward_accuracy_divergence: RewardAccuracyDivergenceSettings = Field(
        default_factory=RewardAccuracyDivergenceSettings
    )
    rise_then_fall: RiseThenFallSettings = Field(default_factory=RiseThenFallSettings)
    probe_decline: ProbeDeclineSettings = Field(default_factory=ProbeDeclineSettings)
    length_collapse: LengthCollapseSettings = Field(default_factory=LengthCollapseSettings)
    repetition_collapse: RepetitionCollapseSettings = Field(
        default_factory=RepetitionCollapseSettings
    )
    non_finite: NonFiniteSettings = Field(default_factory=NonFiniteSettings)

    def rule(self, name: str) -> RuleSettings:
        """The settings of rule ``name`` (KeyError for an unknown rule)."""
        if name not in _RULE_FIELDS:
            raise KeyError(name)
        settings: RuleSettings = getattr(self, name)
        return settings

    def history_needed(self) -> int:
        """How many most recent step records (by step) the service should pass as ``history``:
        the largest enabled window, or ``history_steps`` if larger."""
        windows = [self.rule(n).window for n in RULE_NAMES if self.rule(n).enabled]
        return max([self.history_steps, *windows])


_RULE_FIELDS = frozenset(
    {
        ENTROPY_FLOOR,
        ENTROPY_SLOPE,
        SIGNAL_STARVATION,
        DEGENERATE_GROUPS,
        ZPRIME_PRESSURE,
        MODEL_COLLAPSE_STEP,
        REWARD_ACCURACY_DIVERGENCE,
        RISE_THEN_FALL,
        PROBE_DECLINE,
        LENGTH_COLLAPSE,
        REPETITION_COLLAPSE,
        NON_FINITE,
    }
)
assert set(RULE_NAMES) == _RULE_FIELDS
