"""The wire contract shared by the trainer hooks and the service (issue 15).

Pydantic and the standard library only: ``trainer_hooks`` imports it without FastAPI or SQLAlchemy,
and ``service`` without torch (``tests/wire/test_wire_imports.py`` pins that). Everything that both
sides must agree on is declared here once: the vocabularies (``enums``), the tables of step
metrics (``metrics``) and query fields (``query``, with the query row), the two shapes of a
step's queries, rows or columns (``query_shapes``), the step record (``step``), the run spec
and info (``run``), the command (``command``), the non-finite rule (``finite``), the endpoint
paths (``paths``) and the field types they are built from (``types``).
"""

# Every module loads with the package, so the import test pins them all to pydantic alone.
from service.wire import command as command
from service.wire import finite as finite
from service.wire import metrics as metrics
from service.wire import paths as paths
from service.wire import query as query
from service.wire import query_shapes as query_shapes
from service.wire import run as run
from service.wire import step as step
from service.wire import types as types
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
