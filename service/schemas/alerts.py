"""Alerts and the collapse summary."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.wire import AlertStatus, Severity, Verdict


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    run_id: int
    rule: str = Field(description="Rule name, e.g. `entropy_floor` (see docs/detectors.md).")
    severity: Severity
    status: AlertStatus
    first_step: int
    last_step: int = Field(description="Latest step at which the rule still fired.")
    resolved_step: int | None
    observed: dict[str, float] = Field(description="The values that crossed the threshold.")
    thresholds: dict[str, float] = Field(description="The thresholds they crossed.")
    message: str
    action: str = Field(description="One-line recommended action.")
    rollback_step: int | None = Field(description="Step to roll back to, when the rule knows one.")
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None


class SignalValue(BaseModel):
    step: int
    value: float | None


class CollapseSummary(BaseModel):
    run_id: int
    verdict: Verdict
    status: str = Field(description="Run status: running, stopped, finished or failed.")
    model_collapse_step: int | None = Field(
        description="First step at which reward accuracy fell below the threshold (science §4)."
    )
    collapse_threshold: float
    best_step: int | None = Field(description="Best step to roll back to (rise_then_fall peak).")
    alpha: float | None = Field(
        description="IAC α in effect: the α of the trainer's last acknowledged adjust_alpha, else "
        "what the newest step reports."
    )
    stop_reason: str | None
    open_alerts: list[AlertOut]
    latest: dict[str, SignalValue] = Field(
        description="Latest reported value of each standard signal, with its step."
    )
