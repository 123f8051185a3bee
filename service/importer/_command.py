"""``sharpwatch import PATH...``: read past runs' logs, send them to a service as imported runs,
and print what the detectors would have done (docs/import.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from service.importer._detect import detect_format
from service.importer._mapping import map_run, parse_override
from service.importer._model import FORMATS, Format, LoggedRun, LogReadError
from service.importer._report import ImportReport, build_report, render
from service.importer._tensorboard import read_tensorboard
from service.importer._trl_state import read_trl_state
from service.importer._upload import RunTarget, ServiceError, upload
from service.importer._verl_jsonl import read_verl_jsonl
from service.importer._wandb_csv import read_wandb_csv

__all__ = ["DEFAULT_GROUP_SIZE", "add_import_parser", "read_logs", "run_import"]

DEFAULT_GROUP_SIZE = 8
DEFAULT_URL = "http://127.0.0.1:8000"


def _trainer_state_file(path: Path) -> Path:
    """A trainer_state.json, or the one of a directory (its own, else its latest checkpoint's)."""
    if path.is_file():
        return path
    own = path / "trainer_state.json"
    if own.is_file():
        return own
    checkpoints = sorted(
        (p for p in path.glob("checkpoint-*/trainer_state.json")),
        key=lambda p: int(p.parent.name.split("-")[-1]) if p.parent.name[11:].isdigit() else -1,
    )
    if not checkpoints:
        raise LogReadError(f"{path}: no trainer_state.json here or in checkpoint-*/")
    return checkpoints[-1]


def read_logs(paths: Sequence[Path], fmt: Format | None = None) -> list[LoggedRun]:
    """Every run in ``paths`` (detecting each path's format unless ``fmt`` is given)."""
    by_format: dict[Format, list[Path]] = defaultdict(list)
    for path in paths:
        if not path.exists():
            raise LogReadError(f"{path}: no such file or directory")
        by_format[fmt or detect_format(path)].append(path)
    runs: list[LoggedRun] = []
    for kind, group in by_format.items():
        if kind == "wandb-csv":
            runs.extend(read_wandb_csv(group))
        for path in group:
            if kind == "tensorboard":
                runs.extend(read_tensorboard(path))
            elif kind == "verl-jsonl":
                runs.append(read_verl_jsonl(path))
            elif kind == "trl-state":
                runs.append(read_trl_state(_trainer_state_file(path)))
    return runs


def run_import(
    paths: Sequence[Path],
    *,
    url: str = DEFAULT_URL,
    fmt: Format | None = None,
    project: str = "imported",
    name: str | None = None,
    overrides: dict[str, str] | None = None,
    group_size: int | None = None,
    token: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ImportReport]:
    """Import every run in ``paths``; ``progress(done, total)`` counts steps sent."""
    runs = read_logs(paths, fmt)
    if not runs:
        raise LogReadError("no runs found in " + ", ".join(map(str, paths)))
    if name is not None and len(runs) > 1:
        raise LogReadError(
            f"--name names one run, but {len(runs)} were found "
            f"({', '.join(r.name for r in runs[:5])}); point at one of them or drop --name"
        )
    mapped_runs = [map_run(run, overrides) for run in runs]
    total = sum(len(m.steps) for m in mapped_runs)
    done = 0
    if progress is not None:
        progress(0, total)
    reports = []
    with httpx.Client(base_url=url, timeout=300.0) as client:
        for run, mapped in zip(runs, mapped_runs, strict=True):
            if group_size is not None:
                g, g_source = group_size, "--group-size"
            elif "group_size" in run.hints:
                g, g_source = int(run.hints["group_size"]), "from the logged training arguments"
            else:
                g, g_source = DEFAULT_GROUP_SIZE, "assumed: not in these logs; pass --group-size"
            target = RunTarget(
                project=project,
                name=name or run.name,
                group_size=g,
                kl_beta=float(run.hints.get("kl_beta", 0.0)),
                config={
                    "imported": {"format": run.format, "paths": run.paths[:20], "group_size": g}
                },
            )

            def advance(n: int) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(done, total)

            uploaded = upload(client, target, mapped, token=token, on_batch=advance)
            reports.append(
                build_report(run, mapped, uploaded, base_url=url, group_size_source=g_source)
            )
    return reports


def _override(text: str) -> tuple[str, str]:
    try:
        return parse_override(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"--group-size {text}: must be 1..65536")
    return value


def _consoles() -> tuple[Any, Any]:
    try:
        from rich.console import Console
    except ModuleNotFoundError as exc:
        raise LogReadError(
            "sharpwatch import needs rich: pip install 'sharpwatch[import]'"
        ) from exc
    out = Console()
    if not out.is_terminal:
        out = Console(width=120)  # piped or captured: wrap less than rich's 80 columns
    return out, Console(stderr=True)


def _handle(args: argparse.Namespace) -> int:
    out, err = _consoles()
    overrides = dict(args.map or [])
    bar: Any = None
    task: Any = None
    reading: Any = None
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )

    def progress(done: int, total: int) -> None:
        nonlocal task
        if bar is None:
            return
        if task is None:
            bar.remove_task(reading)
            task = bar.add_task("importing steps", total=total)
        bar.update(task, completed=done)

    try:
        if bar is not None:
            reading = bar.add_task("reading logs", total=None)
            bar.start()
        reports = run_import(
            [Path(p) for p in args.paths],
            url=args.url,
            fmt=args.format,
            project=args.project,
            name=args.name,
            overrides=overrides,
            group_size=args.group_size,
            token=args.token,
            progress=progress,
        )
    except (LogReadError, ServiceError) as exc:
        if bar is not None:
            bar.stop()
        print(f"sharpwatch import: {exc}", file=sys.stderr)
        return 1
    if bar is not None:
        bar.stop()
    for index, report in enumerate(reports):
        if index:
            out.rule()
        render(report, out)
    return 0


def add_import_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="replay past runs' logs (TensorBoard, W&B CSV, veRL JSONL, trainer_state.json) "
        "through the detectors",
        description="Store past runs as imported runs of a sharpwatch service, run the "
        "detectors over their steps as they would have run live, and report what they find.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="log files or directories")
    parser.add_argument("--format", choices=FORMATS, help="the logs' format (default: detect)")
    parser.add_argument("--project", default="imported", help="project (default: imported)")
    parser.add_argument("--name", help="run name (default: from the logs); one run only")
    parser.add_argument(
        "--url",
        default=os.environ.get("SHARPWATCH_URL", DEFAULT_URL),
        help=f"the service (default: $SHARPWATCH_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--map",
        action="append",
        type=_override,
        metavar="THEIRS=OURS",
        help="read the logged metric THEIRS as our OURS (repeatable), e.g. --map val/acc=gt_reward",
    )
    parser.add_argument(
        "--group-size",
        type=_positive,
        help=f"G, responses per prompt, when the logs do not say (default {DEFAULT_GROUP_SIZE})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SHARPWATCH_TOKEN"),
        help="operator token when the service requires authentication ($SHARPWATCH_TOKEN)",
    )
    parser.set_defaults(handler=_handle)
