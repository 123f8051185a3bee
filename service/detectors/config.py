"""Per-run detector configuration (pydantic v2): ``history_steps`` and one field per registered rule
(field name = rule name, value = the rule's settings model, defaults science.md §5). The class is
built from the rule registry, so a new rule brings its field with it; unknown fields are rejected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from service.detectors.registry import REGISTRY, RuleRegistry
from service.detectors.rule import Rule
from service.detectors.rule_settings import MetricName, RuleSettings

__all__ = ["DetectorConfig", "DetectorConfigBase", "MetricName", "RuleSettings", "config_model"]

S = TypeVar("S", bound=RuleSettings)

_DOC = "Per-run detector settings; one field per rule (field name = rule name)."


class DetectorConfigBase(BaseModel):
    """The fields and methods every detector config has; :func:`config_model` adds the rules."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: The rules this config class has a field for, in evaluation order.
    rules: ClassVar[RuleRegistry] = RuleRegistry(())

    history_steps: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Records the service fetches as history (see history_needed); raise it when "
        "sparse metrics (probes every N steps) need window × N records.",
    )

    def rule(self, name: str) -> RuleSettings:
        """The settings of rule ``name`` (KeyError for an unknown rule)."""
        if name not in type(self).rules:
            raise KeyError(name)
        settings: RuleSettings = getattr(self, name)
        return settings

    def settings(self, rule: Rule[S]) -> S:
        """The settings of ``rule``, typed as its settings model (KeyError for a rule this config
        has no field for)."""
        value = self.rule(rule.name)
        if not isinstance(value, rule.settings):
            raise KeyError(rule.name)
        return value

    def history_needed(self) -> int:
        """How many most recent step records (by step) the service should pass as ``history``:
        the largest enabled window, or ``history_steps`` if larger."""
        windows = [self.rule(n).window for n in type(self).rules.names if self.rule(n).enabled]
        return max([self.history_steps, *windows])


def config_model(rules: RuleRegistry, name: str = "DetectorConfig") -> type[DetectorConfigBase]:
    """A config class with one field per rule of ``rules`` (each defaulting to its settings
    model's defaults)."""
    fields: dict[str, Any] = {
        rule.name: (rule.settings, Field(default_factory=rule.settings)) for rule in rules
    }
    model = create_model(
        name, __base__=DetectorConfigBase, __module__=__name__, __doc__=_DOC, **fields
    )
    model.rules = rules
    return model


if TYPE_CHECKING:
    # Statically the fields per rule are unknown; read a rule's settings with ``settings(rule)``.
    DetectorConfig: TypeAlias = DetectorConfigBase
else:
    DetectorConfig = config_model(REGISTRY)
