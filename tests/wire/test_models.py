"""The run spec, run info and command are wire models both sides use: the service's schemas
derive from them and the trainer hooks send and read them (issue 15)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.schemas.commands import CommandOut
from service.schemas.runs import RunCreate, RunOut
from service.schemas.steps import QueryIn, StepIn
from service.wire.command import Command
from service.wire.run import RunInfo as WireRunInfo
from service.wire.run import RunSpec
from service.wire.step import STEP_RECORD_FIELDS, StepRecord
from trainer_hooks import RunInfo
from trainer_hooks._client import _run_spec


def test_the_service_schemas_derive_from_the_wire_models() -> None:
    assert issubclass(RunCreate, RunSpec)
    assert issubclass(RunOut, WireRunInfo)
    assert issubclass(CommandOut, Command)
    assert issubclass(StepIn, StepRecord)
    assert issubclass(RunInfo, WireRunInfo)
    assert set(RunSpec.model_fields) | {"source"} == set(RunCreate.model_fields)


def test_the_clients_run_spec_is_valid_for_the_service() -> None:
    spec = _run_spec("r", 8, "p", 0.04, {"lr": 1e-6}, {"team": "a"}, {"entropy_floor": {}})
    assert set(spec) <= set(RunSpec.model_fields)
    created = RunCreate.model_validate(spec)
    assert (created.name, created.group_size, created.kl_beta) == ("r", 8, 0.04)
    assert "policy" not in spec


def test_the_client_reads_the_services_run_view() -> None:
    seen = {
        "id": 3,
        "name": "r",
        "project": "p",
        "group_size": 8,
        "kl_beta": 0.0,
        "status": "running",
        "last_step": 41,
        "alpha": 1.5,
        "ingest_token": "tok",
        "verdict": "healthy",
    }
    info = RunInfo.model_validate({**seen, "created": False})
    assert (info.id, info.last_step, info.alpha, info.ingest_token) == (3, 41, 1.5, "tok")
    assert info.status == "running"
    assert not info.created
    with pytest.raises(ValidationError, match="frozen"):
        info.id = 4  # type: ignore[misc]


def test_a_command_as_the_trainer_reads_it_from_the_services_view() -> None:
    out = {"id": 5, "kind": "adjust_alpha", "reason": "pressure", "alpha": 1.2, "best_step": None}
    command = Command.model_validate({**out, "run_id": 1, "status": "pending", "rules": []})
    assert (command.id, command.kind, command.alpha) == (5, "adjust_alpha", 1.2)
    with pytest.raises(ValidationError, match="kind"):
        Command.model_validate({**out, "kind": "reboot"})


def test_the_step_records_fields_are_what_the_detectors_leave_out_of_a_flat_record() -> None:
    from service.detectors import StepRecord as DetectorRecord

    assert {"step", "time", "metrics", "non_finite", "queries"} == STEP_RECORD_FIELDS
    flat = DetectorRecord.from_mapping({"step": 2, "entropy": 0.5, "non_finite": []})
    assert dict(flat.metrics) == {"entropy": 0.5}
    row = QueryIn(query_id="q", group_size=2, successes=1)
    record = StepIn(step=1, queries=[row])
    assert DetectorRecord.from_mapping(record.model_dump()).step == 1
