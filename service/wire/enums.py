"""Every closed vocabulary of the wire: one StrEnum each, used by the schemas, the ORM's CHECK
constraints, ``/metrics``, the page's API and the trainer hooks.

Members compare equal to their strings (``CommandKind.EARLY_STOP == "early_stop"``), so stored rows
and JSON bodies need no conversion.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AlertStatus",
    "CommandKind",
    "CommandSource",
    "CommandStatus",
    "RunSource",
    "RunStatus",
    "Severity",
    "Verdict",
]


class RunStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"


class RunSource(StrEnum):
    """Where a run's steps came from: a live trainer or ``sharpwatch import``."""

    LIVE = "live"
    IMPORTED = "imported"


class CommandKind(StrEnum):
    EARLY_STOP = "early_stop"
    ADJUST_ALPHA = "adjust_alpha"


class CommandStatus(StrEnum):
    """``pending → delivered → applied | rejected | expired`` (docs/architecture.md, step 5)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    APPLIED = "applied"
    REJECTED = "rejected"
    EXPIRED = "expired"


class CommandSource(StrEnum):
    DETECTOR = "detector"
    OPERATOR = "operator"


class AlertStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How bad a firing is. ``critical`` rules are the ones a policy may stop the run on."""

    WARNING = "warning"
    CRITICAL = "critical"


class Verdict(StrEnum):
    """The run's one-word health (``service.detectors.verdict``)."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    STOPPED = "stopped"
    FAILED = "failed"  # the trainer reported a failure (set by the run's status, not by rules)
