"""Group-signal rules (science.md §1, §2): ``signal_starvation``, ``degenerate_groups`` and
``zprime_pressure``."""

from __future__ import annotations

from fractions import Fraction

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
from service.detectors.names import (
    DEGENERATE_GROUPS,
    SIGNAL_STARVATION,
    ZPRIME_PRESSURE,
    group_size_for_rate,
    p_star,
)
from service.detectors.records import StepRecord
from service.detectors.results import RuleResult

__all__ = ["DEGENERATE_SUM", "degenerate_groups", "signal_starvation", "zprime_pressure"]

_DEGENERATE_ACTION = (
    "filter degenerate groups (DAPO dynamic sampling), increase group size, or "
    "rebalance task difficulty toward p*(G)"
)


def signal_starvation(ctx: RuleContext) -> RuleResult:
    s = ctx.config.signal_starvation
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


def degenerate_groups(ctx: RuleContext) -> RuleResult:
    s = ctx.config.degenerate_groups
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


#: The policy's own over-sharpening pressure: Z' from the advantages before IAC (science.md §7).
#: The calibrated ``zprime_gt1_frac`` grows with α by construction (Ã ≥ A for every positive
#: advantage), so a rule on it, with the α controller raising α when it fires, would feed itself.
ZPRIME_PRESSURE_METRIC = "zprime_raw_gt1_frac"


def zprime_pressure(ctx: RuleContext) -> RuleResult:
    s = ctx.config.zprime_pressure
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
