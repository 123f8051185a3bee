"""``sharpwatch import``: past runs' logs (TensorBoard event files, W&B CSV exports, veRL's
file-logger JSONL, TRL's ``trainer_state.json``) replayed through the detectors of a service.

``readers`` turn files into :class:`LoggedRun` (framework metric names), ``_mapping`` into step
records under our names, ``_upload`` sends them through the REST API as a live trainer would,
and ``_report`` says what the detectors found and what they could not check."""

from service.importer._command import add_import_parser, read_logs, run_import
from service.importer._detect import detect_format
from service.importer._mapping import DEFAULT_NAMES, MappedRun, map_run, parse_override
from service.importer._model import FORMATS, Format, LoggedRun, LogReadError
from service.importer._report import ImportReport, build_report, render

__all__ = [
    "DEFAULT_NAMES",
    "FORMATS",
    "Format",
    "ImportReport",
    "LogReadError",
    "LoggedRun",
    "MappedRun",
    "add_import_parser",
    "build_report",
    "detect_format",
    "map_run",
    "parse_override",
    "read_logs",
    "render",
    "run_import",
]
