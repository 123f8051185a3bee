"""The rule registry: every :class:`~service.detectors.rule.Rule` declared at module level in a
``service/detectors/rules_*.py`` module, in evaluation order. A new rule is one new ``Rule`` in
such a module (or a new module) and nothing else: ``RULE_NAMES``, ``RuleName``, the
``DetectorConfig`` fields, ``evaluate``, ``rule_inputs`` and the docs table derive from here.

The rule names are part of the public API: alerts, configs and policies refer to them by these exact
strings.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from service.detectors.rule import Rule

__all__ = ["REGISTRY", "RULE_MODULE_PREFIX", "RULE_NAMES", "RuleName", "RuleRegistry"]

#: Modules of the package whose ``Rule`` values are the built-in rules.
RULE_MODULE_PREFIX: Final = "rules_"

#: Names a rule may not take: the config's own fields.
_RESERVED = frozenset({"history_steps"})


class RuleRegistry:
    """Rules in evaluation order (ascending ``Rule.order``); names and orders are unique."""

    __slots__ = ("_by_name", "_rules")

    def __init__(self, rules: Iterable[Rule[Any]]) -> None:
        ordered = tuple(sorted(rules, key=lambda r: r.order))
        by_name: dict[str, Rule[Any]] = {}
        orders: dict[int, str] = {}
        for rule in ordered:
            if rule.name in _RESERVED:
                raise ValueError(f"{rule.name!r} is reserved and cannot name a rule")
            if rule.name in by_name:
                raise ValueError(f"two rules named {rule.name!r}")
            if rule.order in orders:
                raise ValueError(
                    f"rules {orders[rule.order]!r} and {rule.name!r} share order {rule.order}"
                )
            by_name[rule.name] = rule
            orders[rule.order] = rule.name
        self._rules = ordered
        self._by_name = by_name

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType]) -> RuleRegistry:
        """The ``Rule`` values at module level of ``modules`` (one imported by another counts
        once)."""
        found: dict[int, Rule[Any]] = {}
        for module in modules:
            for value in vars(module).values():
                if isinstance(value, Rule):
                    found[id(value)] = value
        return cls(found.values())

    @classmethod
    def discover(cls, package: str, prefix: str = RULE_MODULE_PREFIX) -> RuleRegistry:
        """Import every module ``<package>.<prefix>*`` and collect its rules."""
        path = importlib.import_module(package).__path__
        names = sorted(m.name for m in pkgutil.iter_modules(path) if m.name.startswith(prefix))
        return cls.from_modules(importlib.import_module(f"{package}.{n}") for n in names)

    def extended(self, *rules: Rule[Any]) -> RuleRegistry:
        """These rules plus ``rules`` (for a rule defined outside the package, e.g. in a test)."""
        return RuleRegistry((*self._rules, *rules))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __iter__(self) -> Iterator[Rule[Any]]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Rule[Any]:
        """The rule named ``name`` (KeyError for an unknown one)."""
        return self._by_name[name]

    def __repr__(self) -> str:
        return f"RuleRegistry({', '.join(self.names)})"


#: The built-in rules.
REGISTRY: Final = RuleRegistry.discover(__name__.rpartition(".")[0])

#: Every rule, in the fixed order in which rules are evaluated and actions are emitted.
RULE_NAMES: Final[tuple[str, ...]] = REGISTRY.names

if TYPE_CHECKING:
    # The names are only known once the rule modules ran; statically a rule name is a string,
    # and pydantic validates against the Literal below (same schema and messages as a
    # hand-written Literal).
    RuleName: TypeAlias = str
else:
    RuleName = Literal[RULE_NAMES]
