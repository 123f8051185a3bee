"""TensorBoard event files, read with TensorBoard's own ``EventAccumulator`` (no protobuf parsing
here). Every directory holding ``events.out.tfevents.*`` files is one run (TRL's
``report_to="tensorboard"`` writes ``<output_dir>/runs/<date>_<host>/``; veRL's backend
``tensorboard_log/<project>/<experiment>/``). Scalars come from ``add_scalar`` (simple values)
and from TF2-style scalar tensors; the text summary ``args`` that transformers' TensorBoard
callback writes gives the group size and β of a TRL run."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.importer._model import LoggedRun, LogReadError

__all__ = ["EVENT_FILE_PREFIX", "event_dirs", "read_tensorboard"]

EVENT_FILE_PREFIX = "events.out.tfevents."


def event_dirs(path: Path) -> list[Path]:
    """The directories under ``path`` (itself included) that hold event files, sorted."""
    if path.is_file():
        return [path]
    return sorted({p.parent for p in path.rglob(f"{EVENT_FILE_PREFIX}*") if p.is_file()})


def _accumulator(source: Path) -> Any:
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ModuleNotFoundError as exc:
        raise LogReadError(
            "reading TensorBoard event files needs the tensorboard package: "
            "pip install 'sharpwatch[import]'"
        ) from exc
    guidance = {
        event_accumulator.SCALARS: 0,  # 0 keeps every event (no reservoir sampling)
        event_accumulator.TENSORS: 0,
        event_accumulator.HISTOGRAMS: 1,
        event_accumulator.IMAGES: 1,
        event_accumulator.AUDIO: 1,
        event_accumulator.COMPRESSED_HISTOGRAMS: 1,
    }
    accumulator = event_accumulator.EventAccumulator(str(source), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def _when(wall_time: float) -> datetime:
    return datetime.fromtimestamp(wall_time, tz=UTC)


def read_tensorboard(path: Path) -> list[LoggedRun]:
    """One :class:`LoggedRun` per event directory under ``path``."""
    from tensorboard.util import tensor_util

    sources = event_dirs(path)
    if not sources:
        raise LogReadError(f"{path}: no TensorBoard event files ({EVENT_FILE_PREFIX}*) found")
    runs = []
    for source in sources:
        accumulator = _accumulator(source)
        tags = accumulator.Tags()
        name = (source.parent if source.is_file() else source).resolve().name
        run = LoggedRun(name=name or "imported", format="tensorboard", paths=[str(source)])
        for tag in tags.get("scalars", []):
            for event in accumulator.Scalars(tag):
                _put(run, event.step, tag, float(event.value), event.wall_time)
        for tag in tags.get("tensors", []):
            plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
            for event in accumulator.Tensors(tag):
                array = tensor_util.make_ndarray(event.tensor_proto)
                if plugin == "text":
                    _hints_from_text(run, tag, array)
                elif array.size == 1 and array.dtype.kind in "fiu":
                    _put(run, event.step, tag, float(array.reshape(())), event.wall_time)
        if not run.values:
            run.notes.append(f"{source}: no scalar summaries")
        runs.append(run)
    return runs


def _put(run: LoggedRun, step: int, tag: str, value: float, wall_time: float) -> None:
    if step < 0:
        run.notes.append(f"{tag}: step {step} is negative; skipped")
        return
    run.put(step, tag, value, _when(wall_time) if math.isfinite(wall_time) else None)


def _hints_from_text(run: LoggedRun, tag: str, array: Any) -> None:
    """transformers' TensorBoard callback logs the training arguments as JSON text (``args``):
    TRL's ``num_generations`` is G and ``beta`` the KL coefficient."""
    if not tag.startswith("args"):
        return
    for item in array.reshape(-1):
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        try:
            args = json.loads(text)
        except ValueError:
            continue
        if not isinstance(args, dict):
            continue
        generations = args.get("num_generations")
        if isinstance(generations, int) and not isinstance(generations, bool) and generations >= 1:
            run.hints["group_size"] = generations
        beta = args.get("beta")
        if isinstance(beta, int | float) and not isinstance(beta, bool) and math.isfinite(beta):
            run.hints["kl_beta"] = float(beta)
