"""A detector rule, declared in one place: :class:`Rule` ties a rule's public name, its position in
the evaluation order, its settings model (whose ``severity`` default is the rule's severity), the
step metrics it reads, the function that judges one step and its row of the docs table.

A module ``service/detectors/rules_*.py`` declares its rules as module-level :class:`Rule` values;
:mod:`service.detectors.registry` finds them, and ``RULE_NAMES``, ``RuleName``, the
``DetectorConfig`` fields, ``evaluate``, ``rule_inputs`` and the docs table all follow from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.detectors._context import RuleContext
from service.detectors.names import Severity
from service.detectors.results import RuleResult
from service.detectors.rule_settings import RuleSettings

__all__ = ["Groups", "Rule", "RuleDoc"]

S = TypeVar("S", bound=RuleSettings)

#: Metric names a rule reads: every group is needed, any one metric of a group will do.
Groups = tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class RuleDoc:
    """The rule's row of the table in docs/detectors.md. Each text is a ``str.format`` template
    filled with the rule's default settings (``{window}``, ``{floor:.2f}``, …), so a changed
    default changes the docs with it; a literal brace is written ``{{``."""

    signal: str
    threshold: str
    window: str
    action: str
    science: str = "—"

    def render(self, defaults: Mapping[str, Any]) -> RuleDoc:
        """The texts with the defaults filled in."""
        return RuleDoc(
            signal=self.signal.format_map(defaults),
            threshold=self.threshold.format_map(defaults),
            window=self.window.format_map(defaults),
            action=self.action.format_map(defaults),
            science=self.science.format_map(defaults),
        )


@dataclass(frozen=True, slots=True)
class Rule(Generic[S]):
    """One detector rule.

    ``order`` places it in the fixed evaluation order (ascending; the built-in rules use 10, 20,
    …, 120), which is also the order of ``RULE_NAMES``, of the config fields and of the emitted
    actions. ``reads`` is what the rule needs on a step (its ``gate``/``missing`` checks; a test
    holds the two together), or a function of its settings when that depends on them.
    """

    name: str
    order: int
    settings: type[S]
    check: Callable[[RuleContext, S], RuleResult]
    reads: Groups | Callable[[S], Groups]
    doc: RuleDoc

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"rule name {self.name!r} must be a lower-case identifier")
        if not issubclass(self.settings, RuleSettings):
            raise TypeError(f"rule {self.name}: settings must subclass RuleSettings")

    @property
    def severity(self) -> Severity:
        """The severity of the alerts it opens unless a run's config says otherwise."""
        default = self.settings.model_fields["severity"].default
        assert isinstance(default, Severity)
        return default

    def inputs(self, settings: S) -> Groups:
        """The groups of metrics the rule reads under ``settings``."""
        return self.reads(settings) if callable(self.reads) else self.reads

    def run(self, ctx: RuleContext) -> RuleResult:
        """The rule on ``ctx``'s newest step, with its settings from ``ctx.config``."""
        return self.check(ctx, ctx.config.settings(self))
