"""Group-signal rules (science.md §1, §2): ``signal_starvation``, ``degenerate_groups`` and
``zprime_pressure``."""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors._stats import (
    exact_fraction,
    exact_mean,
    finite,
    last_values,
    line,
    mean,
    slope,
)
from service.detectors.names import group_size_for_rate, p_star
from service.detectors.records import StepRecord
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import MAX_WINDOW, RuleSettings, Slope, TrendSettings

__all__ = [
    "DEGENERATE_GROUPS_RULE",
    "DEGENERATE_SUM",
    "SIGNAL_STARVATION_RULE",
    "ZPRIME_PRESSURE_METRIC",
    "ZPRIME_PRESSURE_RULE",
    "DegenerateGroupsSettings",
    "SignalStarvationSettings",
    "ZPrimePressureSettings",
    "degenerate_groups",
    "signal_starvation",
    "zprime_pressure",
]

SIGNAL_STARVATION: Final = "signal_starvation"
DEGENERATE_GROUPS: Final = "degenerate_groups"
ZPRIME_PRESSURE: Final = "zprime_pressure"

_DEGENERATE_ACTION = (
    "filter degenerate groups (DAPO dynamic sampling), increase group size, or "
    "rebalance task difficulty toward p*(G)"
)


class SignalStarvationSettings(RuleSettings):
    """``signal_starvation``: mean success rate of the window < p*(G) or > 1 − p*(G)."""


def signal_starvation(ctx: RuleContext, s: SignalStarvationSettings) -> RuleResult:
    gated = ctx.gate(SIGNAL_STARVATION, s, "success_rate")
    if gated is not None:
        return gated
    _, vals = last_values(ctx.history, "success_rate", s.window)
    if len(vals) < s.window:
        return ctx.too_few(SIGNAL_STARVATION, "success_rate", len(vals), s.window)
    g = ctx.group_size
    low = p_star(g)
    high = 1.0 - low
    if not finite(mean(vals)):
        return ctx.overflow(SIGNAL_STARVATION)
    exact = exact_mean(vals)  # science.md §7: success rates are ratios of counts
    m = mean(vals)
    thresholds = {"p_star": low, "p_star_mirror": high, "group_size": g, "window": s.window}
    observed = {"success_rate_mean": m, "success_rate": vals[-1]}
    if exact < Fraction(low):
        need = group_size_for_rate(m)
        bigger = f"increase group size to G >= {need}" if need is not None else "increase G"
        return ctx.fire(
            SIGNAL_STARVATION,
            observed=observed,
            thresholds=thresholds,
            message=(
                f"signal starvation: mean success rate {m:.4f} over {s.window} steps is below "
                f"p*(G={g}) = {low:.4f}; most groups are all-fail and teach nothing"
            ),
            action=f"{bigger} or lower task difficulty so the success rate exceeds p*(G)",
        )
    if exact > 1 - Fraction(low):
        need = group_size_for_rate(1.0 - m)
        bigger = f"increase group size to G >= {need}" if need is not None else "increase G"
        return ctx.fire(
            SIGNAL_STARVATION,
            observed=observed,
            thresholds=thresholds,
            message=(
                f"signal starvation: mean success rate {m:.4f} over {s.window} steps is above "
                f"1 - p*(G={g}) = {high:.4f}; most groups are all-pass and teach nothing"
            ),
            action=f"raise task difficulty (drop solved queries) or {bigger}",
        )
    return ctx.clear(SIGNAL_STARVATION, f"mean success rate {m:.4f} within [{low:.4f}, {high:.4f}]")


SIGNAL_STARVATION_RULE: Final = Rule(
    name=SIGNAL_STARVATION,
    order=30,
    settings=SignalStarvationSettings,
    check=signal_starvation,
    reads=(("success_rate",),),
    doc=RuleDoc(
        signal="mean `success_rate`",
        threshold=r"< p\*(G) or > 1 − p\*(G)",
        window="{window} obs",
        action=r"increase G to the smallest G with p\*(G) below the rate (named in the action) "
        "or change task difficulty",
        science="§1, §5",
    ),
)


#: TRL's name for the degenerate share when only the sum is known (science.md §1): a step that
#: reports neither all-fail nor all-pass (an imported TRL log) is read from it.
DEGENERATE_SUM = "frac_reward_zero_std"


def _degenerate_fraction(rec: StepRecord) -> float | None:
    fail = rec.value("degenerate_all_fail")
    ok = rec.value("degenerate_all_pass")
    if fail is None and ok is None:
        return rec.value(DEGENERATE_SUM)
    return (fail or 0.0) + (ok or 0.0)


def _exact_degenerate_fraction(rec: StepRecord) -> Fraction:
    """:func:`_degenerate_fraction` in exact arithmetic (science.md §7): 1/10 + 2/10 is 3/10."""
    fail = rec.value("degenerate_all_fail")
    ok = rec.value("degenerate_all_pass")
    if fail is None and ok is None:
        return exact_fraction(rec.value(DEGENERATE_SUM) or 0.0)
    return exact_fraction(fail or 0.0) + exact_fraction(ok or 0.0)


class DegenerateGroupsSettings(RuleSettings):
    """``degenerate_groups``: mean of (all_fail + all_pass) over the window > ``max_fraction``."""

    max_fraction: float = Field(
        0.5, gt=0.0, lt=1.0, description="Largest tolerated degenerate-group fraction."
    )


def degenerate_groups(ctx: RuleContext, s: DegenerateGroupsSettings) -> RuleResult:
    gated = ctx.gate(
        DEGENERATE_GROUPS, s, "degenerate_all_fail", "degenerate_all_pass", DEGENERATE_SUM
    )
    if gated is not None:
        return gated
    fracs: list[float] = []
    exact_fracs: list[Fraction] = []  # exact (science.md §7): 1/10 + 2/10 is not above 0.3
    for rec in reversed(ctx.history):
        frac = _degenerate_fraction(rec)
        if frac is None:
            continue
        fracs.append(frac)
        exact_fracs.append(_exact_degenerate_fraction(rec))
        if len(fracs) >= s.window:
            break
    if len(fracs) < s.window:
        return ctx.too_few(DEGENERATE_GROUPS, "degenerate_all_fail/pass", len(fracs), s.window)
    m = mean(fracs)
    if not finite(m):
        return ctx.overflow(DEGENERATE_GROUPS)
    exact = sum(exact_fracs, Fraction(0)) / len(exact_fracs)
    if exact <= line(s.max_fraction):
        return ctx.clear(
            DEGENERATE_GROUPS, f"mean degenerate fraction {m:.3f} <= {s.max_fraction:g}"
        )
    fail_now = ctx.newest.value("degenerate_all_fail")
    pass_now = ctx.newest.value("degenerate_all_pass")
    if fail_now is None and pass_now is None:
        return ctx.fire(
            DEGENERATE_GROUPS,
            observed={"degenerate_fraction_mean": m, DEGENERATE_SUM: fracs[0]},
            thresholds={"max_fraction": s.max_fraction, "window": s.window},
            message=(
                f"{m * 100:.1f}% of groups degenerate (S+ in {{0, G}}) over {s.window} steps "
                f"(now {fracs[0] * 100:.0f}%; all-fail and all-pass not reported apart)"
            ),
            action=_DEGENERATE_ACTION,
        )
    fail_now = fail_now or 0.0
    pass_now = pass_now or 0.0
    return ctx.fire(
        DEGENERATE_GROUPS,
        observed={
            "degenerate_fraction_mean": m,
            "degenerate_all_fail": fail_now,
            "degenerate_all_pass": pass_now,
        },
        thresholds={"max_fraction": s.max_fraction, "window": s.window},
        message=(
            f"{m * 100:.1f}% of groups degenerate (S+ in {{0, G}}) over {s.window} steps "
            f"(now all-fail {fail_now * 100:.0f}%, all-pass {pass_now * 100:.0f}%)"
        ),
        action=_DEGENERATE_ACTION,
    )


DEGENERATE_GROUPS_RULE: Final = Rule(
    name=DEGENERATE_GROUPS,
    order=40,
    settings=DegenerateGroupsSettings,
    check=degenerate_groups,
    reads=(("degenerate_all_fail", "degenerate_all_pass", DEGENERATE_SUM),),
    doc=RuleDoc(
        signal="mean(`degenerate_all_fail` + `degenerate_all_pass`; TRL's `frac_reward_zero_std` "
        "on steps that report neither)",
        threshold="> {max_fraction:g}",
        window="{window} obs",
        action="filter degenerate groups (DAPO dynamic sampling), increase G, rebalance difficulty",
        science="§1",
    ),
)


#: The policy's own over-sharpening pressure: Z' from the advantages before IAC (science.md §7).
#: The calibrated ``zprime_gt1_frac`` grows with α by construction (Ã ≥ A for every positive
#: advantage), so a rule on it, with the α controller raising α when it fires, would feed itself.
ZPRIME_PRESSURE_METRIC = "zprime_raw_gt1_frac"


class ZPrimePressureSettings(TrendSettings):
    """``zprime_pressure``: mean ``zprime_raw_gt1_frac`` (Z' from the advantages before IAC,
    science.md §7) over the window >= ``max_fraction``, or its slope >= ``rising_slope`` per step
    while the newest value >= ``rising_min_fraction``."""

    window: int = Field(10, ge=3, le=MAX_WINDOW, description="Observations (mean and slope).")
    max_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="Mean fraction of queries with raw Z' > 1 that fires."
    )
    rising_slope: Slope = Field(0.01, description="Per-step rise of the fraction that fires.")
    rising_min_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="The rising trend fires only above this level."
    )


def zprime_pressure(ctx: RuleContext, s: ZPrimePressureSettings) -> RuleResult:
    metric = ZPRIME_PRESSURE_METRIC
    gated = ctx.gate(ZPRIME_PRESSURE, s, metric)
    if gated is not None:
        return gated
    steps, vals = last_values(ctx.history, metric, s.window)
    if len(vals) < s.window:
        return ctx.too_few(ZPRIME_PRESSURE, metric, len(vals), s.window)
    b = slope(steps, vals)
    if not finite(mean(vals), b):
        return ctx.overflow(ZPRIME_PRESSURE)
    exact = exact_mean(vals)
    m = mean(vals)
    high = exact >= line(s.max_fraction)
    rising = b >= s.rising_slope and exact_fraction(vals[-1]) >= line(s.rising_min_fraction)
    if not (high or rising):
        return ctx.clear(ZPRIME_PRESSURE, f"raw Z'>1 fraction mean {m:.3f}, slope {b:.3g}/step")
    observed: dict[str, float] = {
        "zprime_raw_gt1_frac_mean": m,
        "zprime_raw_gt1_frac": vals[-1],
        "zprime_raw_gt1_frac_slope": b,
    }
    for name in ("log_zprime_raw_mean", "zprime_gt1_frac"):  # the calibrated share, for context
        value = ctx.newest.value(name)
        if value is not None:
            observed[name] = value
    why = (
        f"mean {m * 100:.0f}% >= {s.max_fraction * 100:.0f}%"
        if high
        else f"rising {b:.3g}/step to {vals[-1] * 100:.0f}%"
    )
    return ctx.fire(
        ZPRIME_PRESSURE,
        observed=observed,
        thresholds={
            "max_fraction": s.max_fraction,
            "rising_slope": s.rising_slope,
            "rising_min_fraction": s.rising_min_fraction,
            "window": s.window,
        },
        message=(
            f"over-sharpening pressure: queries with raw Z'>1 (suppressing unsampled modes) {why} "
            f"over {s.window} steps"
        ),
        action="raise IAC alpha (or enable DLC) to stop suppressing unsampled correct modes",
    )


ZPRIME_PRESSURE_RULE: Final = Rule(
    name=ZPRIME_PRESSURE,
    order=50,
    settings=ZPrimePressureSettings,
    check=zprime_pressure,
    reads=((ZPRIME_PRESSURE_METRIC,),),  # raw Z', never the calibrated (§7)
    doc=RuleDoc(
        signal="`zprime_raw_gt1_frac` (raw Z', before IAC) mean and slope",
        threshold="mean ≥ {max_fraction:g}, or slope ≥ {rising_slope:g}/step while latest ≥ "
        "{rising_min_fraction:g}",
        window="{window} obs",
        action="raise IAC α (or enable DLC)",
        science="§2, §7",
    ),
)
