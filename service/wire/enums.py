"""Every closed vocabulary of the wire: one StrEnum each, used by the schemas, the ORM's CHECK
constraints, ``/metrics``, the page's API and the trainer hooks.

Members compare equal to their strings (``CommandKind.EARLY_STOP == "early_stop"``), so stored rows
and JSON bodies need no conversion.

In a pydantic model a vocabulary field validates exactly as the ``Literal`` of its values did before
the enums existed: a JSON string is accepted in strict mode too, a bad value is the same 422
(``literal_error``, "Input should be 'early_stop' or 'adjust_alpha'"), and the OpenAPI document
lists the values inline. ``OneOf`` narrows a field to some of the members.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "AlertStatus",
    "CommandKind",
    "CommandSource",
    "CommandStatus",
    "OneOf",
    "RunSource",
    "RunStatus",
    "Severity",
    "Verdict",
    "WireEnum",
]


def _values_schema(enum: type[StrEnum], members: tuple[StrEnum, ...]) -> CoreSchema:
    # Validated as a Literal of the strings (so strict mode takes JSON strings and the 422 and
    # the OpenAPI ``enum`` are unchanged), then turned into the member. Both modes validate alike;
    # the lax-or-strict wrapper only lets a field say ``Field(strict=False)`` as it could before.
    values = core_schema.literal_schema([member.value for member in members])
    return core_schema.no_info_after_validator_function(
        enum, core_schema.lax_or_strict_schema(lax_schema=values, strict_schema=values)
    )


class WireEnum(StrEnum):
    """A closed vocabulary of the wire (see the module's docstring for its pydantic behaviour)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return _values_schema(cls, tuple(cls))


@dataclass(frozen=True, init=False)
class OneOf:
    """``Annotated[CommandStatus, OneOf(CommandStatus.APPLIED, CommandStatus.REJECTED)]``: a field
    that takes only these members of its vocabulary."""

    members: tuple[WireEnum, ...]

    def __init__(self, *members: WireEnum) -> None:
        if not members or len({type(member) for member in members}) != 1:
            raise ValueError("OneOf takes one or more members of one vocabulary")
        object.__setattr__(self, "members", members)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        enum = type(self.members[0])
        if source is not enum:
            raise TypeError(f"OneOf({enum.__name__} members) annotates {source!r}")
        return _values_schema(enum, self.members)


class RunStatus(WireEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"


class RunSource(WireEnum):
    """Where a run's steps came from: a live trainer or ``sharpwatch import``."""

    LIVE = "live"
    IMPORTED = "imported"


class CommandKind(WireEnum):
    EARLY_STOP = "early_stop"
    ADJUST_ALPHA = "adjust_alpha"


class CommandStatus(WireEnum):
    """``pending → delivered → applied | rejected | expired`` (docs/architecture.md, step 5)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    APPLIED = "applied"
    REJECTED = "rejected"
    EXPIRED = "expired"


class CommandSource(WireEnum):
    DETECTOR = "detector"
    OPERATOR = "operator"


class AlertStatus(WireEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Severity(WireEnum):
    """How bad a firing is. ``critical`` rules are the ones a policy may stop the run on."""

    WARNING = "warning"
    CRITICAL = "critical"


class Verdict(WireEnum):
    """The run's one-word health (``service.detectors.verdict``)."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    STOPPED = "stopped"
    FAILED = "failed"  # the trainer reported a failure (set by the run's status, not by rules)
