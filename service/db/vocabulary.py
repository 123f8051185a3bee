"""CHECK constraints of the closed vocabularies, rendered from their enums (``service.wire``), so
the allowed values are declared once.

The rendered text is what the migrations wrote by hand (``kind IN ('early_stop', 'adjust_alpha')``):
migrations keep their literal SQL, and the models-vs-migrations comparison stays empty as long as
an enum and its migration agree (tests/service/test_db_vocabulary.py checks that on both
databases). A new member needs a migration that replaces the constraint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import CheckConstraint

__all__ = ["in_values", "one_of"]

# Values are spliced into SQL: only plain lowercase words, which need no quoting or escaping.
_PLAIN_VALUE = re.compile(r"[a-z][a-z0-9_]*")


def in_values(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')``, the values in their declared order."""
    listed = [str(value) for value in values]
    bad = [value for value in listed if not _PLAIN_VALUE.fullmatch(value)]
    if not listed or bad:
        raise ValueError(f"a vocabulary needs plain lowercase words; got {listed!r}")
    quoted = ", ".join(f"'{value}'" for value in listed)
    return f"{column} IN ({quoted})"


def one_of(column: str, values: Iterable[str], *, name: str) -> CheckConstraint:
    """The named CHECK constraint that ``column`` holds one of ``values`` (an enum class works)."""
    return CheckConstraint(in_values(column, values), name=name)
