"""Query parameters as models (FastAPI's query-parameter models): every API route declares its
own, so a parameter it does not take is a 422 naming it (``?limt=5`` is a typo to report, not a
filter to drop silently), as an unknown body field is."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


class QueryParameters(BaseModel):
    """Base of every route's query parameters: an unknown one is refused before the others are
    validated, and its error names it and the parameters the route takes."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unknown(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, dict):
            known = {field.alias or name for name, field in cls.model_fields.items()}
            unknown = [name for name in data if name not in known]
            if unknown:
                takes = ", ".join(sorted(known)) or "none"
                errors: list[InitErrorDetails] = [
                    {
                        "type": PydanticCustomError(
                            "unknown_query_parameter",
                            "unknown query parameter '{name}'; this route takes: {takes}",
                            {"name": name, "takes": takes},
                        ),
                        "loc": (name,),
                        "input": data[name],
                    }
                    for name in unknown
                ]
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(data)


class NoQuery(QueryParameters):
    """A route that takes no query parameters (``deps.NO_QUERY``)."""
