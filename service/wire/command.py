"""A command as the trainer receives it: what to do and why."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.wire.enums import CommandKind

__all__ = ["Command"]


class Command(BaseModel):
    """One outstanding command of a run (``GET .../commands``). The service's view
    (``service.schemas.commands.CommandOut``) adds its state and history."""

    id: int
    kind: CommandKind
    reason: str = ""
    alpha: float | None = Field(None, description="New IAC α (adjust_alpha only; science §3).")
    best_step: int | None = Field(None, description="Step to roll back to (early_stop only).")
