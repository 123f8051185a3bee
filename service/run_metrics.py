"""Run state for Prometheus, read from the store at scrape time.

Every worker process answers ``/metrics`` with the same run series, because the values come from
the database (three indexed queries per scrape), not from process memory: a scrape that lands on
any worker sees every run. The service's own instruments (``service.observability``) stay
process-local; with several workers they are per process unless ``PROMETHEUS_MULTIPROC_DIR`` is
set, in which case the exposition sums them over the workers (client_python's multiprocess mode).
docs/metrics.md has the decision and its measurements.

The run series are rendered straight to the text format (version 0.0.4, which the 1.0.0 format
extends) rather than through client_python ``Metric`` objects: with 200 runs (~13,000 samples)
building and escaping sample objects took 130–180 ms a scrape; pre-escaped label strings and one
``join`` take a few ms. Output is grouped by family with ``# HELP``/``# TYPE`` lines, like
client_python's, and a test parses it with client_python's parser and scrapes it with Prometheus.

Labels are bounded: per run only ``project`` and ``run`` (the run's name, unique within its
project), plus the fixed enumerations ``rule``/``severity`` (alerts), ``kind``/``status``
(commands) and ``le`` (histogram buckets). Never a per-query label: per-query distributions are
histograms precomputed at ingest (``service.query_histograms``). A run leaves the exposition
``metrics_finished_run_grace`` seconds after ``runs.finished_at``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.db.base import utcnow
from service.detectors import RULE_NAMES, DetectorConfig, p_star
from service.query_histograms import HISTOGRAMS
from service.settings import Settings
from service.storage.run_state import read_run_state
from service.wire import CommandKind, CommandStatus, RunStatus, Verdict

log = logging.getLogger(__name__)

#: Numeric codes of ``runs.verdict`` and ``runs.status`` (Grafana maps them back to words).
#: Explicit, not the enums' order: a dashboard's mapping must not move when a member is added.
VERDICT_CODES: dict[str, float] = {
    Verdict.HEALTHY: 0,
    Verdict.WARNING: 1,
    Verdict.CRITICAL: 2,
    Verdict.STOPPED: 3,
    Verdict.FAILED: 4,
}
STATUS_CODES: dict[str, float] = {
    RunStatus.RUNNING: 0,
    RunStatus.STOPPED: 1,
    RunStatus.FINISHED: 2,
    RunStatus.FAILED: 3,
}
COMMAND_KINDS = tuple(CommandKind)
COMMAND_STATUSES = tuple(CommandStatus)


@dataclass(frozen=True, slots=True)
class Family:
    """One exposed metric family: name, type, help text, and its labels besides project/run."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ("project", "run")


#: Newest-step gauges: (family, column of ``steps``). NaN when that step did not report it.
STEP_GAUGES: tuple[tuple[Family, str], ...] = (
    (Family("sharpwatch_run_entropy_nats", "gauge", "Mean token entropy, newest step."), "entropy"),
    (
        Family("sharpwatch_run_success_rate_ratio", "gauge", "Batch success rate (mean S+/G)."),
        "success_rate",
    ),
    (
        Family("sharpwatch_run_degenerate_all_fail_ratio", "gauge", "Share of groups with S+ = 0."),
        "degenerate_all_fail",
    ),
    (
        Family("sharpwatch_run_degenerate_all_pass_ratio", "gauge", "Share of groups with S+ = G."),
        "degenerate_all_pass",
    ),
    # Z'(q) calibrated (from the advantages used for the update: grows with alpha) and raw
    # (before IAC: the policy's own pressure, what zprime_pressure and the controller read).
    (
        Family(
            "sharpwatch_run_log_zprime_mean_nats",
            "gauge",
            "Mean over queries of calibrated log Z'(q) (advantages after IAC; grows with alpha).",
        ),
        "log_zprime_mean",
    ),
    (
        Family(
            "sharpwatch_run_log_zprime_p90_nats",
            "gauge",
            "90th percentile of calibrated log Z'(q) (advantages after IAC).",
        ),
        "log_zprime_p90",
    ),
    (
        Family(
            "sharpwatch_run_zprime_gt1_ratio",
            "gauge",
            "Share of queries with calibrated Z'(q) > 1 (advantages after IAC; grows with alpha).",
        ),
        "zprime_gt1_frac",
    ),
    (
        Family(
            "sharpwatch_run_log_zprime_raw_mean_nats",
            "gauge",
            "Mean over queries of raw log Z'(q) (advantages before IAC: the policy's pressure).",
        ),
        "log_zprime_raw_mean",
    ),
    (
        Family(
            "sharpwatch_run_log_zprime_raw_p90_nats",
            "gauge",
            "90th percentile of raw log Z'(q) (advantages before IAC).",
        ),
        "log_zprime_raw_p90",
    ),
    (
        Family(
            "sharpwatch_run_zprime_raw_gt1_ratio",
            "gauge",
            "Share of queries with raw Z'(q) > 1 (unsampled modes suppressed by the policy's own "
            "update; zprime_pressure and the alpha controller read it).",
        ),
        "zprime_raw_gt1_frac",
    ),
    (
        Family(
            "sharpwatch_run_reward_accuracy_ratio",
            "gauge",
            "Pseudo-reward = oracle-reward agreement, newest step.",
        ),
        "reward_accuracy",
    ),
)

GROUP_SIZE = Family("sharpwatch_run_group_size", "gauge", "G, responses sampled per query.")
P_STAR = Family(
    "sharpwatch_run_p_star_ratio",
    "gauge",
    "p*(G) = 1 - 2^(-1/G): below this success rate most groups are expected all-fail; above "
    "1 - p*(G) most are expected all-pass.",
)
ALPHA = Family(
    "sharpwatch_run_alpha",
    "gauge",
    "IAC calibration strength alpha in effect (the service's last decision, else the newest "
    "step's report).",
)
ALPHA_PINNED = Family(
    "sharpwatch_run_alpha_pinned",
    "gauge",
    "1 while an operator has pinned alpha (the controller sends no adjust_alpha), else 0.",
)
COLLAPSE_STEP = Family(
    "sharpwatch_run_model_collapse_step",
    "gauge",
    "Model Collapse Step: first step with reward accuracy below the threshold; NaN while none.",
)
LAST_STEP = Family("sharpwatch_run_last_step", "gauge", "Newest stored training step.")
LAST_STEP_AGE = Family(
    "sharpwatch_run_last_step_age_seconds",
    "gauge",
    "Seconds since the newest step was stored; NaN before the first step.",
)
NON_FINITE = Family(
    "sharpwatch_run_non_finite_metrics",
    "gauge",
    "Metrics the newest step reported as NaN/inf (count).",
)
VERDICT = Family(
    "sharpwatch_run_verdict",
    "gauge",
    "Verdict: 0 healthy, 1 warning, 2 critical, 3 stopped, 4 failed.",
)
STATUS = Family(
    "sharpwatch_run_status", "gauge", "Status: 0 running, 1 stopped, 2 finished, 3 failed."
)
OPEN_ALERTS = Family(
    "sharpwatch_run_open_alerts",
    "gauge",
    "Open alerts by rule and severity (count; every rule is listed, 0 when clear).",
    ("project", "run", "rule", "severity"),
)
COMMANDS = Family(
    "sharpwatch_run_commands",
    "gauge",
    "Commands to the trainer by kind and status (count).",
    ("project", "run", "kind", "status"),
)
_SNAPSHOT = (
    " over the newest step's queries (a gauge histogram: a snapshot, not cumulative; use "
    "histogram_quantile without rate())."
)
HISTOGRAM_FAMILIES: dict[str, Family] = {
    "success_rate": Family(
        "sharpwatch_run_query_success_rate_ratio", "histogram", "Per-query S+/G" + _SNAPSHOT
    ),
    "log_zprime": Family(
        "sharpwatch_run_query_log_zprime_nats", "histogram", "Per-query log Z'(q)" + _SNAPSHOT
    ),
}
EXPORTED_RUNS = Family("sharpwatch_exported_runs", "gauge", "Runs in this exposition.", ())
STORE_UP = Family(
    "sharpwatch_store_up", "gauge", "1 if run state was read from the store, else 0.", ()
)
READ_SECONDS = Family(
    "sharpwatch_store_read_seconds",
    "gauge",
    "Time this scrape spent reading run state from the store and rendering it.",
    (),
)

RUN_FAMILIES: tuple[Family, ...] = (
    GROUP_SIZE,
    P_STAR,
    *(family for family, _ in STEP_GAUGES),
    ALPHA,
    ALPHA_PINNED,
    COLLAPSE_STEP,
    LAST_STEP,
    LAST_STEP_AGE,
    NON_FINITE,
    VERDICT,
    STATUS,
    OPEN_ALERTS,
    COMMANDS,
)


#: Every family ``/metrics`` adds to the process instruments (docs/metrics.md lists them all).
ALL_FAMILIES: tuple[Family, ...] = (
    *RUN_FAMILIES,
    *HISTOGRAM_FAMILIES.values(),
    EXPORTED_RUNS,
    STORE_UP,
    READ_SECONDS,
)


def escape(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def number(value: float | None) -> str:
    """A sample value as Prometheus writes it (``NaN`` for unknown, ``+Inf``/``-Inf``)."""
    if value is None:
        return "NaN"
    value = float(value)
    if math.isfinite(value):
        return repr(value)
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _header(family: Family, name: str | None = None, type_: str | None = None) -> str:
    name = name or family.name
    return f"# HELP {name} {family.help}\n# TYPE {name} {type_ or family.type}\n"


def _default_severities() -> dict[str, str]:
    config = DetectorConfig()
    return {rule: str(config.rule(rule).severity.value) for rule in RULE_NAMES}


class RunState:
    """Reads the state of every exported run and renders it as Prometheus text.

    ``session_factory`` is a callable so the app's lifespan can create the engine after this is
    built; ``clock`` is injectable for tests of the finished-run grace period."""

    def __init__(
        self,
        session_factory: Callable[[], sessionmaker[Session] | None],
        *,
        finished_grace: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session_factory = session_factory
        self._grace = timedelta(seconds=finished_grace)
        self._clock = clock
        self._severities = _default_severities()
        self._alert_suffixes: dict[tuple[str, str], str] = {}
        self._le_suffixes: dict[tuple[float, ...], list[str]] = {}

    def _alert_suffix(self, pair: tuple[str, str]) -> str:
        """``,rule="…",severity="…"} `` for one (rule, severity), escaped once and cached."""
        suffix = self._alert_suffixes.get(pair)
        if suffix is None:
            suffix = f',rule="{escape(pair[0])}",severity="{escape(pair[1])}"}} '
            if len(self._alert_suffixes) < 1024:  # rules and severities are enumerations
                self._alert_suffixes[pair] = suffix
        return suffix

    def _le_labels(self, bounds: list[float] | tuple[float, ...]) -> list[str]:
        """``,le="…"} `` for each bucket bound, cached per bucket layout."""
        key = tuple(bounds)
        labels = self._le_suffixes.get(key)
        if labels is None:
            labels = [f',le="{number(bound)}"}} ' for bound in key]
            if len(self._le_suffixes) < 64:
                self._le_suffixes[key] = labels
        return labels

    def render(self) -> bytes:
        start = time.perf_counter()
        factory = self._session_factory()
        body = ""
        up = 0
        if factory is not None:
            try:
                with factory() as session:
                    body = self._render(session)
                up = 1
            except SQLAlchemyError as exc:
                log.warning("run state unavailable for /metrics", extra={"error": repr(exc)})
        elapsed = time.perf_counter() - start
        tail = (
            f"{_header(STORE_UP)}{STORE_UP.name} {up}\n"
            f"{_header(READ_SECONDS)}{READ_SECONDS.name} {elapsed!r}\n"
        )
        return (body + tail).encode()

    # -- internals ----------------------------------------------------------------------------
    def _render(self, session: Session) -> str:
        now = self._clock()
        state = read_run_state(
            session,
            finished_after=now - self._grace,
            step_columns=[column for _, column in STEP_GAUGES],
        )
        rows, alerts, commands = state.runs, state.open_alerts, state.commands

        lines: dict[str, list[str]] = {family.name: [] for family in RUN_FAMILIES}
        histogram_lines: dict[str, list[str]] = {key: [] for key in HISTOGRAM_FAMILIES}
        gcount_lines: dict[str, list[str]] = {key: [] for key in HISTOGRAM_FAMILIES}
        gsum_lines: dict[str, list[str]] = {key: [] for key in HISTOGRAM_FAMILIES}
        command_keys = [
            (kind, status, f',kind="{kind}",status="{status}"}} ')
            for kind in COMMAND_KINDS
            for status in COMMAND_STATUSES
        ]
        for row in rows:
            labels = f'project="{escape(row.project)}",run="{escape(row.name)}"'
            run = "{" + labels + "} "

            def put(family: Family, value: float | None, run: str = run) -> None:
                lines[family.name].append(f"{family.name}{run}{number(value)}\n")

            put(GROUP_SIZE, row.group_size)
            put(P_STAR, p_star(row.group_size))
            for family, column in STEP_GAUGES:
                put(family, getattr(row, column))
            put(ALPHA, row.alpha if row.alpha is not None else row.step_alpha)
            put(ALPHA_PINNED, 1.0 if row.alpha_pinned else 0.0)
            put(COLLAPSE_STEP, row.model_collapse_step)
            put(LAST_STEP, row.last_step)
            age = None if row.last_step_at is None else (now - row.last_step_at).total_seconds()
            put(LAST_STEP_AGE, age)
            put(NON_FINITE, len(row.non_finite or ()))
            put(VERDICT, VERDICT_CODES.get(row.verdict))
            put(STATUS, STATUS_CODES.get(row.status))

            open_counts = dict.fromkeys(self._severities.items(), 0)
            for rule, severity, count in alerts.get(row.id, ()):
                open_counts[(rule, severity)] = open_counts.get((rule, severity), 0) + count
            out = lines[OPEN_ALERTS.name]
            prefix = f"{OPEN_ALERTS.name}{{{labels}"
            for pair, count in open_counts.items():
                out.append(f"{prefix}{self._alert_suffix(pair)}{count}\n")
            counts = commands.get(row.id, {})
            out = lines[COMMANDS.name]
            for kind, status, suffix in command_keys:
                out.append(f"{COMMANDS.name}{{{labels}{suffix}{counts.get((kind, status), 0)}\n")

            stored = row.query_histograms or {}
            for key, bounds in HISTOGRAMS.items():
                name = HISTOGRAM_FAMILIES[key].name
                summary: dict[str, Any] | None = stored.get(key)
                if summary is None:  # no per-query rows in that step (or stored before 0003)
                    summary = {"le": bounds, "cumulative": [0] * len(bounds), "count": 0, "sum": 0}
                out = histogram_lines[key]
                prefix = f"{name}_bucket{{{labels}"
                for le, count in zip(
                    self._le_labels(summary["le"]), summary["cumulative"], strict=True
                ):
                    out.append(f"{prefix}{le}{count}\n")
                out.append(f'{prefix},le="+Inf"}} {summary["count"]}\n')
                gcount_lines[key].append(f"{name}_gcount{run}{summary['count']}\n")
                gsum_lines[key].append(f"{name}_gsum{run}{number(summary['sum'])}\n")

        parts: list[str] = []
        for family in RUN_FAMILIES:
            parts.append(_header(family))
            parts.extend(lines[family.name])
        for key, family in HISTOGRAM_FAMILIES.items():
            parts.append(_header(family))
            parts.extend(histogram_lines[key])
            parts.append(_header(family, f"{family.name}_gcount", "gauge"))
            parts.extend(gcount_lines[key])
            parts.append(_header(family, f"{family.name}_gsum", "gauge"))
            parts.extend(gsum_lines[key])
        parts.append(f"{_header(EXPORTED_RUNS)}{EXPORTED_RUNS.name} {len(rows)}\n")
        return "".join(parts)


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The registry ``/metrics`` renders before the run state: the app's own (process-local
    instruments), or, in client_python's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set
    before the process started), the instruments summed over every worker's files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return registry
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
    return combined


def install(app: FastAPI, registry: CollectorRegistry, settings: Settings) -> None:
    """Attach the run-state renderer and the exposition registry to the app."""

    def factory() -> sessionmaker[Session] | None:
        return getattr(app.state, "session_factory", None)

    app.state.run_state = RunState(factory, finished_grace=settings.metrics_finished_run_grace)
    app.state.exposition = exposition_registry(registry)
