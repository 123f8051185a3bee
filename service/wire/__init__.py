"""The wire contract shared by the trainer hooks and the service (issue 15).

Pydantic and the standard library only: ``trainer_hooks`` imports it without FastAPI or SQLAlchemy,
and ``service`` without torch (``tests/wire/test_wire_imports.py`` pins that). Everything that both
sides must agree on is declared here once: the vocabularies (``enums``), and, as they move here,
the step record, the query row, the run spec and info, the command, the non-finite rule, the tables
of step metrics and query fields, and the endpoint paths.
"""

from service.wire.enums import (
    AlertStatus,
    CommandKind,
    CommandSource,
    CommandStatus,
    OneOf,
    RunSource,
    RunStatus,
    Severity,
    Verdict,
    WireEnum,
)

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
