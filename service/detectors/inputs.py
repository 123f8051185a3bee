"""Which step metrics each rule reads: the rule runs on a step only when every group below has at
least one of its metrics observed (the ``gate``/``missing`` checks of the rule functions; a test
holds this table to them). ``sharpwatch import`` uses it to say which detectors could not run on
a past run's logs, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from service.detectors.config import DetectorConfig
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
    SIGNAL_STARVATION,
    ZPRIME_PRESSURE,
)
from service.detectors.rules_groups import DEGENERATE_SUM, ZPRIME_PRESSURE_METRIC

__all__ = ["missing_inputs", "rule_inputs"]

Groups = tuple[tuple[str, ...], ...]


def rule_inputs(config: DetectorConfig | None = None) -> dict[str, Groups]:
    """Rule -> groups of metric names (all groups needed, any one metric of a group)."""
    cfg = config if config is not None else DetectorConfig()
    return {
        ENTROPY_FLOOR: (("entropy",),),
        ENTROPY_SLOPE: (("entropy",),),
        SIGNAL_STARVATION: (("success_rate",),),
        DEGENERATE_GROUPS: (("degenerate_all_fail", "degenerate_all_pass", DEGENERATE_SUM),),
        ZPRIME_PRESSURE: ((ZPRIME_PRESSURE_METRIC,),),  # raw Z', never the calibrated (§7)
        MODEL_COLLAPSE_STEP: (("reward_accuracy",),),
        REWARD_ACCURACY_DIVERGENCE: (("proxy_reward",), ("reward_accuracy",)),
        RISE_THEN_FALL: ((cfg.rise_then_fall.metric,),),
        PROBE_DECLINE: (("probe_success", "probe_entropy"), ("success_rate",)),
        LENGTH_COLLAPSE: (("response_length",), ("entropy",)),
        REPETITION_COLLAPSE: (("repetition_rate",),),
        NON_FINITE: (),
    }


def missing_inputs(
    present: Iterable[str], config: DetectorConfig | None = None
) -> Mapping[str, tuple[str, ...]]:
    """For each rule that cannot run on metrics ``present``: the groups it lacks, each written
    ``a/b`` (any of them would do)."""
    have = set(present)
    out: dict[str, tuple[str, ...]] = {}
    for rule, groups in rule_inputs(config).items():
        lacking = tuple(" or ".join(g) for g in groups if not have.intersection(g))
        if lacking:
            out[rule] = lacking
    return out
