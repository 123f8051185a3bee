"""The import report: what the detectors concluded on a past run, built from what the service
stored (alerts, commands, the run's Model Collapse Step and best step) and what the logs lacked;
rendered with rich for a terminal (and for the docs' screenshot, via rich's SVG export)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.detectors import DetectorConfig, missing_inputs
from service.detectors.rules_rewards import MODEL_COLLAPSE_STEP_RULE, RISE_THEN_FALL_RULE
from service.importer._mapping import MappedRun
from service.importer._model import LoggedRun
from service.importer._upload import Uploaded
from service.wire import CommandKind, CommandSource, Severity

__all__ = ["AlertLine", "ImportReport", "NotRun", "StopLine", "build_report", "render"]

#: Why the frameworks' logs lack a metric a rule reads (science.md sections).
WHY_ABSENT: dict[str, str] = {
    "zprime_raw_gt1_frac": "Z'(q) needs each query's sampled answers and their advantages "
    "(science §2); frameworks log batch means only",
    "reward_accuracy": "needs pseudo-rewards checked against an oracle (label-free RL, "
    "science §4); these logs have none",
    "proxy_reward": "the pseudo (intrinsic) reward of a label-free run (science §4)",
    "gt_reward": "a held-out or oracle reward curve; --map KEY=gt_reward names one",
    "probe_success or probe_entropy": "held-out probe evaluations are sharpwatch's own "
    "(science §2)",
    "repetition_rate": "needs the responses' text",
    "degenerate_all_fail or degenerate_all_pass or frac_reward_zero_std": "needs per-group "
    "success counts (TRL logs frac_reward_zero_std; veRL does not)",
    "success_rate": "no mean 0/1 reward logged (or it lies outside [0, 1])",
    "entropy": "no policy entropy logged",
    "response_length": "no mean response length logged",
}
PER_QUERY_NOTE = (
    "per-query rows (each prompt's successes, entropy and log Z'(q)) are never logged by the "
    "frameworks: the query histograms and drill-down stay empty for imported runs"
)


@dataclass(frozen=True, slots=True)
class AlertLine:
    rule: str
    severity: str
    first_step: int
    last_step: int
    resolved_step: int | None
    message: str
    rollback_step: int | None


@dataclass(frozen=True, slots=True)
class StopLine:
    step: int | None
    rules: tuple[str, ...]
    reason: str
    best_step: int | None


@dataclass(frozen=True, slots=True)
class NotRun:
    rule: str
    lacking: tuple[str, ...]
    why: str


@dataclass(slots=True)
class ImportReport:
    name: str
    project: str
    run_id: int
    link: str
    format: str
    paths: list[str]
    steps: int
    accepted: int
    duplicates: int
    first_step: int | None
    last_step: int | None
    group_size: int
    group_size_source: str
    mapped: dict[str, str]
    extras: int
    alerts: list[AlertLine]
    stop: StopLine | None
    alpha_changes: list[dict[str, Any]]
    model_collapse_step: int | None
    model_collapse_note: str
    best_step: int | None
    best_step_note: str
    not_run: list[NotRun]
    notes: list[str] = field(default_factory=list)

    def first_alert(self, rule: str) -> AlertLine | None:
        return next((a for a in self.alerts if a.rule == rule), None)


def build_report(
    logged: LoggedRun,
    mapped: MappedRun,
    uploaded: Uploaded,
    *,
    base_url: str,
    group_size_source: str,
) -> ImportReport:
    run = uploaded.run
    config = DetectorConfig.model_validate(run.get("detectors") or {}, strict=False)
    alerts = sorted(
        (
            AlertLine(
                rule=a["rule"],
                severity=a["severity"],
                first_step=a["first_step"],
                last_step=a["last_step"],
                resolved_step=a["resolved_step"],
                message=a["message"],
                rollback_step=a["rollback_step"],
            )
            for a in uploaded.alerts
        ),
        key=lambda a: (a.first_step, a.rule),
    )
    stops = sorted(
        (
            c
            for c in uploaded.commands
            if c["kind"] == CommandKind.EARLY_STOP and c["source"] == CommandSource.DETECTOR
        ),
        key=lambda c: c["id"],
    )
    stop = None
    if stops:
        first = stops[0]
        stop = StopLine(
            first["issued_step"], tuple(first["rules"]), first["reason"], first["best_step"]
        )
    present = mapped.present()
    not_run = [
        NotRun(rule, lacking, "; ".join(WHY_ABSENT.get(x, "not in these logs") for x in lacking))
        for rule, lacking in missing_inputs(present, config).items()
    ]
    mcs = run.get("model_collapse_step")
    if "reward_accuracy" not in present:
        mcs_note = (
            "not available: no reward accuracy in these logs (pseudo-rewards checked against "
            "an oracle, logged by label-free RL runs; science §4)"
        )
    elif mcs is None:
        threshold = config.settings(MODEL_COLLAPSE_STEP_RULE).threshold
        mcs_note = f"none: reward accuracy never fell below {threshold:g}"
    else:
        threshold = config.settings(MODEL_COLLAPSE_STEP_RULE).threshold
        mcs_note = f"reward accuracy below {threshold:g} from here"
    best, best_note = _best_step(run, stop, alerts, config)
    steps = [s["step"] for s in mapped.steps]
    return ImportReport(
        name=run["name"],
        project=run["project"],
        run_id=run["id"],
        link=f"{base_url.rstrip('/')}/#/runs/{run['id']}",
        format=logged.format,
        paths=logged.paths,
        steps=len(steps),
        accepted=uploaded.accepted,
        duplicates=uploaded.duplicates,
        first_step=steps[0] if steps else None,
        last_step=steps[-1] if steps else None,
        group_size=run["group_size"],
        group_size_source=group_size_source,
        mapped=mapped.mapped,
        extras=len(mapped.extras),
        alerts=alerts,
        stop=stop,
        alpha_changes=sorted(uploaded.alpha_decisions, key=lambda d: d["step"]),
        model_collapse_step=mcs,
        model_collapse_note=mcs_note,
        best_step=best,
        best_step_note=best_note,
        not_run=not_run,
        notes=[*mapped.notes, PER_QUERY_NOTE],
    )


def _best_step(
    run: dict[str, Any], stop: StopLine | None, alerts: list[AlertLine], config: DetectorConfig
) -> tuple[int | None, str]:
    metric = config.settings(RISE_THEN_FALL_RULE).metric
    if stop is not None and stop.best_step is not None:
        return stop.best_step, f"named by the automatic stop ({', '.join(stop.rules)})"
    if run.get("best_step") is not None:
        return run["best_step"], f"peak of smoothed {metric}"
    for alert in alerts:
        if alert.rollback_step is not None:
            return alert.rollback_step, f"named by the {alert.rule} alert"
    if not alerts:
        return None, "no alert fired: nothing to roll back from"
    return None, f"no rule named one (best_step tracks {metric})"


def render(report: ImportReport, console: Any) -> None:
    """Print the report on a ``rich.console.Console``."""
    from rich.table import Table
    from rich.text import Text

    say = console.print
    title = Text.assemble(("sharpwatch import", "bold"), "  ", (report.name, "bold cyan"))
    say(title)
    say(
        f"[dim]{report.format}[/] {', '.join(report.paths)}\n"
        f"run #{report.run_id} in project {report.project} · {report.steps} steps "
        f"({report.accepted} new, {report.duplicates} already stored)"
        + (
            f" · steps {report.first_step}–{report.last_step}"
            if report.first_step is not None
            else ""
        )
        + f" · G = {report.group_size} ({report.group_size_source})"
    )
    read = ", ".join(f"{ours} ← {theirs}" for theirs, ours in sorted(report.mapped.items()))
    say(
        f"[bold]Read as[/] {read or 'nothing the detectors read'}"
        f" [dim](+ {report.extras} other metrics stored)[/]"
    )
    say()
    if report.alerts:
        table = Table(
            title="Alerts that would have fired",
            title_justify="left",
            box=None,
            pad_edge=False,
            title_style="bold",
        )
        table.add_column("step", justify="right")
        table.add_column("rule")
        table.add_column("severity")
        table.add_column("until")
        table.add_column("latest message", overflow="fold")
        for alert in report.alerts:
            style = "red" if alert.severity == Severity.CRITICAL else "yellow"
            until = (
                "open at the end"
                if alert.resolved_step is None
                else (f"resolved at {alert.resolved_step}")
            )
            table.add_row(
                str(alert.first_step),
                Text(alert.rule, style=style),
                alert.severity,
                until,
                alert.message,
            )
        say(table)
    else:
        say("[bold]Alerts that would have fired[/]: none")
    say()
    if report.stop is not None:
        say(
            f"[bold red]Automatic stop[/] (default policy): early_stop at step "
            f"[bold]{report.stop.step}[/] on {', '.join(report.stop.rules)}"
        )
    else:
        say("[bold]Automatic stop[/] (default policy): none would have been sent")
    if report.alpha_changes:
        first = report.alpha_changes[0]
        say(
            f"[bold]IAC α controller[/] (for a trainer with IAC on): "
            f"{len(report.alpha_changes)} adjust_alpha command(s); "
            f"first at step {first['step']}: α {first['old_alpha']:g} → {first['new_alpha']:g}"
        )
    mcs = "—" if report.model_collapse_step is None else str(report.model_collapse_step)
    say(f"[bold]Model Collapse Step[/]: {mcs} [dim]({report.model_collapse_note})[/]")
    best = "—" if report.best_step is None else str(report.best_step)
    say(f"[bold]Best step to roll back to[/]: {best} [dim]({report.best_step_note})[/]")
    say(f"[bold]Live page[/]: [link={report.link}]{report.link}[/link]")
    if report.not_run:
        say()
        table = Table(
            title="Detectors that could not run",
            title_justify="left",
            box=None,
            pad_edge=False,
            title_style="bold",
        )
        table.add_column("rule")
        table.add_column("needs")
        table.add_column("why", overflow="fold")
        for item in report.not_run:
            table.add_row(item.rule, "; ".join(item.lacking), item.why)
        say(table)
    if report.notes:
        say()
        say("[bold]Notes[/]")
        for note in report.notes:
            say(f"  · {note}", highlight=False)
