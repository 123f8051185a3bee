"""veRL's ``file`` tracking backend, read with the json module: ``verl.utils.tracking.FileLogger``
writes one line per ``Tracking.log(data, step)`` call, ``{"step": <int>, "data": {<metric>:
<value>, ...}}`` (orjson, so a NaN arrives as ``null``), to ``$VERL_FILE_LOGGER_PATH`` or
``<VERL_FILE_LOGGER_ROOT>/<project>/<experiment>.jsonl``. Validation metrics may come in a line
of their own for the same step: lines of one step are merged, a later value winning."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from service.importer._model import LoggedRun, LogReadError

__all__ = ["is_verl_line", "read_verl_jsonl"]


def is_verl_line(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("step"), int)
        and not isinstance(obj.get("step"), bool)
        and isinstance(obj.get("data"), dict)
    )


def read_verl_jsonl(path: Path) -> LoggedRun:
    run = LoggedRun(name=path.stem, format="verl-jsonl", paths=[str(path)])
    skipped: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise LogReadError(f"{path}:{line_no}: not a JSON line ({exc})") from None
            if not is_verl_line(obj):
                raise LogReadError(
                    f"{path}:{line_no}: not a veRL file-logger line: expected "
                    '{"step": <int>, "data": {...}}'
                )
            step = obj["step"]
            if step < 0:
                run.notes.append(f"line {line_no}: step {step} is negative; skipped")
                continue
            for key, value in obj["data"].items():
                if value is None:
                    run.put(step, key, math.nan)  # orjson writes NaN and inf as null
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    run.put(step, key, float(value))
                else:
                    skipped.add(key)
    if skipped:
        run.notes.append(f"non-numeric values skipped: {', '.join(sorted(skipped)[:10])}")
    return run
