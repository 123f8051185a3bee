"""Commands to trainers: early_stop and adjust_alpha."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.schemas.common import MAX_INT32, FiniteFloat, StorableText, StrictModel
from service.wire import CommandKind, CommandSource, CommandStatus, OneOf
from service.wire.command import Command

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1024), StorableText]


class CommandCreate(StrictModel):
    """An operator's command."""

    kind: CommandKind
    reason: Reason = Field(description="Why; shown to the trainer and in the history.")
    alpha: FiniteFloat | None = Field(
        None, ge=0.0, le=10.0, description="New IAC α (adjust_alpha only; science §3)."
    )
    best_step: int | None = Field(
        None, ge=0, le=MAX_INT32, description="Step to roll back to (early_stop only)."
    )
    expires_in: FiniteFloat | None = Field(
        None, gt=0, le=30 * 86400, description="Seconds until an undelivered command expires."
    )

    @model_validator(mode="after")
    def _fields_for_kind(self) -> CommandCreate:
        if self.kind == CommandKind.ADJUST_ALPHA and self.alpha is None:
            raise ValueError("alpha is required for adjust_alpha")
        if self.kind == CommandKind.EARLY_STOP and self.alpha is not None:
            raise ValueError("alpha is only for adjust_alpha")
        if self.kind == CommandKind.ADJUST_ALPHA and self.best_step is not None:
            raise ValueError("best_step is only for early_stop")
        return self


class CommandAck(StrictModel):
    status: Annotated[CommandStatus, OneOf(CommandStatus.APPLIED, CommandStatus.REJECTED)]
    step: int | None = Field(
        None, ge=0, le=MAX_INT32, description="Step at which the trainer applied the command."
    )
    detail: Annotated[str, StringConstraints(max_length=1024), StorableText] | None = None


class CommandOut(Command):
    model_config = ConfigDict(from_attributes=True)

    run_id: int
    status: CommandStatus
    source: CommandSource
    rules: list[str] = Field(description="Rules that triggered a detector's command.")
    issued_step: int | None = Field(description="Step whose ingest produced the command.")
    applied_step: int | None
    ack_detail: str | None
    created_at: datetime
    delivered_at: datetime | None
    acked_at: datetime | None
    expires_at: datetime | None


class AlphaDecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    action: str
    old_alpha: float
    new_alpha: float
    reason: str
    inputs: dict[str, float]
    command_id: int | None
    created_at: datetime
