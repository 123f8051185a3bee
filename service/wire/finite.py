"""The non-finite rule of the wire: JSON has no NaN or infinity, so a value that is NaN, +inf or
-inf travels as null and, for a step metric, is named in the record's ``non_finite``. Every
finite float, however large, travels as itself. The trainer hooks (the monitor, the deferred
sender, the client) and the detectors all apply this one rule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["finite_or_none", "is_finite", "split_non_finite"]


def is_finite(value: float) -> bool:
    """False for NaN, +inf and -inf; True for every other float (1e308 included)."""
    return math.isfinite(value)


def finite_or_none(value: float) -> float | None:
    """``value`` when finite, else ``None`` (what the wire carries for it)."""
    return value if math.isfinite(value) else None


def split_non_finite(
    metrics: Mapping[str, float | None], non_finite: Iterable[str] = ()
) -> tuple[dict[str, float | None], list[str]]:
    """Step metrics as the wire carries them: every value a float or ``None``, each non-finite
    one ``None`` and named in the returned ``non_finite`` (after the names already there, none
    twice). A value that is not a number raises (``float()``'s ``TypeError``/``ValueError``)."""
    clean: dict[str, float | None] = {}
    names = list(non_finite)
    for name, value in metrics.items():
        number = None if value is None else float(value)
        if number is not None and not math.isfinite(number):
            number = None
            if name not in names:
                names.append(name)
        clean[name] = number
    return clean, names
