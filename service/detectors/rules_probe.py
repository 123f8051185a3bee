"""``probe_decline`` (science.md §2, semantic coupling): held-out probe success or probe entropy
falling while training success rises — collapse spreading to queries never trained on."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from service.detectors._context import RuleContext
from service.detectors._stats import finite, last_values, slope
from service.detectors.results import RuleResult
from service.detectors.rule import Rule, RuleDoc
from service.detectors.rule_settings import MAX_WINDOW, Slope, TrendSettings

__all__ = ["PROBE_DECLINE_RULE", "ProbeDeclineSettings", "probe_decline"]

PROBE_DECLINE: Final = "probe_decline"


class ProbeDeclineSettings(TrendSettings):
    """``probe_decline``: over the last ``window`` probe evaluations, slope(probe_success) <=
    −``min_probe_decline`` or slope(probe_entropy) <= −``min_probe_entropy_decline``, while the
    training success rate over the same step span has slope >= ``min_train_rise``."""

    window: int = Field(5, ge=3, le=MAX_WINDOW, description="Probe evaluations in the fit.")
    min_probe_decline: Slope = Field(0.001, description="Probe-success fall per step.")
    min_probe_entropy_decline: Slope = Field(0.002, description="Probe-entropy fall per step.")
    min_train_rise: Slope = Field(0.001, description="Training-success rise per step.")


def probe_decline(ctx: RuleContext, s: ProbeDeclineSettings) -> RuleResult:
    gated = ctx.gate(PROBE_DECLINE, s, "probe_success", "probe_entropy")
    if gated is not None:
        return gated
    ps_steps, ps = last_values(ctx.history, "probe_success", s.window)
    pe_steps, pe = last_values(ctx.history, "probe_entropy", s.window)
    have = max(len(ps), len(pe))
    if have < s.window:
        return ctx.too_few(PROBE_DECLINE, "probe_success/probe_entropy", have, s.window)
    span_start = min(x[0] for x in (ps_steps, pe_steps) if x)
    tr_steps, tr = last_values(ctx.history, "success_rate", len(ctx.history), min_step=span_start)
    if len(tr) < 3:
        return ctx.too_few(PROBE_DECLINE, "success_rate since the first probe", len(tr), 3)
    b_train = slope(tr_steps, tr)
    b_ps = slope(ps_steps, ps) if len(ps) >= s.window else None
    b_pe = slope(pe_steps, pe) if len(pe) >= s.window else None
    if not finite(b_train, b_ps, b_pe):
        return ctx.overflow(PROBE_DECLINE)
    ps_falls = b_ps is not None and b_ps <= -s.min_probe_decline
    pe_falls = b_pe is not None and b_pe <= -s.min_probe_entropy_decline
    if b_train < s.min_train_rise or not (ps_falls or pe_falls):
        return ctx.clear(
            PROBE_DECLINE,
            f"train success slope {b_train:.3g}/step, probe success slope "
            f"{b_ps if b_ps is not None else float('nan'):.3g}, probe entropy slope "
            f"{b_pe if b_pe is not None else float('nan'):.3g}",
        )
    observed: dict[str, float] = {"success_rate_slope": b_train}
    parts = []
    if b_ps is not None:
        observed["probe_success"] = ps[-1]
        observed["probe_success_slope"] = b_ps
        if ps_falls:
            parts.append(f"probe success {b_ps:+.3g}/step")
    if b_pe is not None:
        observed["probe_entropy"] = pe[-1]
        observed["probe_entropy_slope"] = b_pe
        if pe_falls:
            parts.append(f"probe entropy {b_pe:+.3g}/step")
    return ctx.fire(
        PROBE_DECLINE,
        observed=observed,
        thresholds={
            "min_probe_decline": s.min_probe_decline,
            "min_probe_entropy_decline": s.min_probe_entropy_decline,
            "min_train_rise": s.min_train_rise,
            "window": s.window,
        },
        message=(
            f"collapse spreading to held-out queries: {' and '.join(parts)} while training "
            f"success rises {b_train:+.3g}/step"
        ),
        action="raise IAC alpha or reduce group size G (larger G speeds the spread)",
    )


PROBE_DECLINE_RULE: Final = Rule(
    name=PROBE_DECLINE,
    order=90,
    settings=ProbeDeclineSettings,
    check=probe_decline,
    reads=(("probe_success", "probe_entropy"), ("success_rate",)),
    doc=RuleDoc(
        signal="slopes of `probe_success` / `probe_entropy` vs `success_rate`",
        threshold="probe success ≤ −{min_probe_decline:g}/step or probe entropy ≤ "
        "−{min_probe_entropy_decline:g}/step while training success ≥ +{min_train_rise:g}/step",
        window="{window} probe evaluations",
        action="raise IAC α or reduce G (larger G speeds the spread)",
        science="§2",
    ),
)
