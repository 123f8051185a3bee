"""The query row of the wire contract: one query's group at one step.

:class:`QueryMeasures` declares the per-query measurements once (type, bounds, unit, meaning);
:data:`QUERY_FIELDS`, the table the ORM's ``query_stats`` columns, the storage layer's column
lists, the trainer hooks' record builder and the schemas derive from, is read off it. A new field
here needs a migration for its column, and nothing else written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from service.wire.types import FiniteFloat, StrictModel

__all__ = [
    "QUERY_FIELDS",
    "QUERY_ROW_FIELDS",
    "QueryField",
    "QueryId",
    "QueryMeasures",
    "QueryRow",
    "query_row_dict",
]

# No NUL (a text column cannot hold it); a pattern, not a Python validator: 512 ids a step.
QueryId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]


def _measure(unit: str, meaning: str, *, ge: float, le: float) -> Any:
    """An optional measurement field: null when the trainer has no value for it."""
    return Field(
        None, ge=ge, le=le, description=f"{meaning} ({unit})", json_schema_extra={"unit": unit}
    )


class QueryMeasures(StrictModel):
    """The per-query measurements (science.md section in brackets), all optional."""

    entropy: FiniteFloat | None = _measure(
        "nats", "mean token entropy of this query's responses", ge=0.0, le=1e4
    )
    log_zprime: FiniteFloat | None = _measure(
        "nats",
        "calibrated log Z'(q): from the advantages used for the update [§2]",
        ge=-1e6,
        le=1e6,
    )
    log_zprime_raw: FiniteFloat | None = _measure(
        "nats", "raw log Z'(q): from the advantages before IAC [§2]", ge=-1e6, le=1e6
    )
    n_modes: int | None = _measure(
        "count", "distinct answer keys in the group [§2]", ge=0, le=65536
    )
    reward_accuracy: FiniteFloat | None = _measure(
        "fraction 0..1", "pseudo vs oracle reward agreement [§4]", ge=0.0, le=1.0
    )
    response_length: FiniteFloat | None = _measure(
        "tokens", "mean response length in the group", ge=0.0, le=1e9
    )


class _QueryKey(StrictModel):
    query_id: QueryId = Field(description="Stable id of the query (prompt) across steps.")
    group_size: int = Field(ge=1, le=65536, description="Responses sampled for this query (count).")
    successes: int = Field(ge=0, le=65536, description="S+, correct responses (0..group_size).")


class QueryRow(QueryMeasures, _QueryKey):
    """One query's group at this step: its id, G, S+ and the measurements (in that order)."""

    @model_validator(mode="after")
    def _successes_within_group(self) -> QueryRow:
        if self.successes > self.group_size:
            raise ValueError(
                f"successes ({self.successes}) must not exceed group_size ({self.group_size})"
            )
        return self


@dataclass(frozen=True, slots=True)
class QueryField:
    """One per-query measurement: name, unit, meaning and its type (``int`` or ``float``)."""

    name: str
    unit: str
    description: str
    type: type[int] | type[float]


def _field_table() -> tuple[QueryField, ...]:
    fields = []
    for name, info in QueryMeasures.model_fields.items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        unit = extra["unit"]
        assert isinstance(unit, str)
        integral = info.annotation == int | None
        fields.append(QueryField(name, unit, info.description or "", int if integral else float))
    return tuple(fields)


#: The per-query measurements, in row order (each is a nullable column of ``query_stats``).
QUERY_FIELDS: tuple[QueryField, ...] = _field_table()

#: Every field of a query row, in order: what the storage layer inserts after run and step.
QUERY_ROW_FIELDS: tuple[str, ...] = tuple(QueryRow.model_fields)


def _dict_builder(keys: Sequence[str]) -> Callable[..., dict[str, object]]:
    """``f(*values) -> {keys[0]: values[0], ...}`` as one dict display, the way a hand-written
    literal builds each row (``dict(zip(keys, row))`` per row is markedly slower on 65k-query
    steps). The keys are the wire's field names, identifiers all."""
    assert all(key.isidentifier() for key in keys)
    source = f"lambda {', '.join(keys)}: {{{', '.join(f'{k!r}: {k}' for k in keys)}}}"
    built: Callable[..., dict[str, object]] = eval(source)
    return built


#: ``query_row_dict(*values)``: one query row as its wire dict, the values in
#: ``QUERY_ROW_FIELDS`` order (the hooks' record builder and the service's packed rows use it).
query_row_dict = _dict_builder(QUERY_ROW_FIELDS)
