"""Which step metrics each rule reads: the rule runs on a step only when every group below has at
least one of its metrics observed (the ``gate``/``missing`` checks of the rule functions; a test
holds this table to them). ``sharpwatch import`` uses it to say which detectors could not run on
a past run's logs, and why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from service.detectors.config import DetectorConfig
from service.detectors.rule import Groups

__all__ = ["missing_inputs", "rule_inputs"]


def rule_inputs(config: DetectorConfig | None = None) -> dict[str, Groups]:
    """Rule -> groups of metric names (all groups needed, any one metric of a group), as each
    rule declares them (``Rule.reads``) under ``config``'s settings."""
    cfg = config if config is not None else DetectorConfig()
    return {rule.name: rule.inputs(cfg.settings(rule)) for rule in type(cfg).rules}


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
