"""Issue 21: the training thread does no per-query host work when the client sends.

``Monitor.step`` hands the client an unbuilt record (``_record.DeferredRecord``); the client's
writer thread builds and sanitises it. What reaches the service must be the record the
synchronous path (``Monitor._defer_records = False``) builds from the same inputs.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import trainer_hooks._record as record_mod
from tests.trainer_hooks._records import rows_of
from trainer_hooks import Monitor, SharpwatchClient, StepInputs, grpo_advantages
from trainer_hooks._client import BAD_LINES_METRIC, sanitize_record
from trainer_hooks._layout import make_layout
from trainer_hooks._zprime import _NO_KEY_SALT, assign_modes, modes_from_keys
from trainer_hooks.integrations._deferred import DeferredSender

B, G, T = 6, 4, 5


def _inputs(seed: int, *, nan: bool = False, none_keys: bool = False) -> StepInputs:
    gen = torch.Generator().manual_seed(seed)
    rewards = (torch.rand(B, G, generator=gen) < 0.5).float()
    ent = torch.rand(B, G, T, generator=gen)
    if nan:
        ent[1] = float("nan")  # query 1's entropy is NaN: None on the wire, named in non_finite
    keys: list[str | None] = [str(int(k)) for k in torch.randint(0, 3, (B * G,), generator=gen)]
    if none_keys:
        keys[3] = keys[9] = None
    return StepInputs(
        rewards=rewards,
        advantages=grpo_advantages(rewards),
        token_entropy=ent,
        mask=torch.ones(B, G, T),
        answer_keys=keys,
        oracle_rewards=(torch.rand(B, G, generator=gen) < 0.5).float(),
        ref_logprobs=-torch.rand(B, G, generator=gen) * 3,
        query_ids=[f"query-{seed}-{i}" for i in range(B)],
        loss=torch.tensor(float("nan") if nan else 0.5),
        grad_norm=2.0,
    )


class _Service:
    """An in-process service that keeps every step record it is posted."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/runs":
            return httpx.Response(
                201,
                json={
                    "id": 1,
                    "name": "r",
                    "project": "default",
                    "group_size": G,
                    "kl_beta": 0.04,
                    "status": "running",
                },
            )
        with self.lock:
            self.steps.extend(json.loads(request.content)["steps"])
        return httpx.Response(200, json={"accepted": [], "duplicates": []})


def _client(service: _Service, tmp_path: Path) -> SharpwatchClient:
    client = SharpwatchClient(
        "http://sharpwatch.invalid",
        transport=httpx.MockTransport(service),
        spool_dir=tmp_path / "spool",
        flush_interval=0.0,
    )
    client.register_run("r", group_size=G, kl_beta=0.04)
    return client


CASES = [{"seed": 0}, {"seed": 1, "nan": True}, {"seed": 2, "none_keys": True}]


def test_the_training_thread_builds_no_per_query_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builders: list[threading.Thread] = []
    original = record_mod.build_queries

    def counted(*args: Any, **kwargs: Any) -> dict[str, list[object]]:
        builders.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(record_mod, "build_queries", counted)
    service = _Service()
    client = _client(service, tmp_path)
    monitor = Monitor(group_size=G, kl_beta=0.04, sender=client)
    results = [monitor.step(_inputs(**case)) for case in CASES]  # type: ignore[arg-type]
    on_trainer = [t for t in builders if t is threading.current_thread()]
    assert on_trainer == []  # step() built nothing per query here
    assert all(r.metrics["success_rate"] is not None for r in results)  # metrics are ready
    assert client.flush(timeout=30), client.flush_error
    client.close()
    assert len(builders) == len(CASES)  # each record built once, on the client's thread
    assert all(t is not threading.current_thread() for t in builders)
    assert len(service.steps) == len(CASES)


def test_records_reaching_the_service_equal_the_synchronous_build(tmp_path: Path) -> None:
    service = _Service()
    client = _client(service, tmp_path)
    monitor = Monitor(group_size=G, kl_beta=0.04, sender=client)
    reference = Monitor(group_size=G, kl_beta=0.04)
    reference._defer_records = False
    expected = []
    for case in CASES:
        inputs = _inputs(**case)  # type: ignore[arg-type]
        result = monitor.step(inputs)
        result.metrics["success_rate"] = -1.0  # a caller's later change does not travel
        expected.append(json.loads(json.dumps(sanitize_record(reference.step(inputs).record))))
    assert client.flush(timeout=30), client.flush_error
    client.close()
    sent = sorted(service.steps, key=lambda r: int(r["step"]))
    assert len(sent) == len(expected)
    for got, want in zip(sent, expected, strict=True):
        assert got.pop("time")
        assert want.pop("time")
        assert got == want
    assert all(isinstance(r["queries"], dict) for r in sent)  # the columnar shape was sent
    assert rows_of(sent[1])[1]["entropy"] is None  # NaN → None survived the deferral
    assert "loss" in sent[1]["non_finite"]
    assert sent[0]["metrics"]["success_rate"] != -1.0


def test_result_record_builds_on_demand_and_matches_what_was_sent(tmp_path: Path) -> None:
    service = _Service()
    client = _client(service, tmp_path)
    monitor = Monitor(group_size=G, kl_beta=0.04, sender=client)
    result = monitor.step(_inputs(1, nan=True))
    assert client.flush(timeout=30), client.flush_error
    client.close()
    record = result.record
    assert record is result.record  # built once
    assert record["metrics"] is result.metrics
    (sent,) = service.steps
    assert json.loads(json.dumps(sanitize_record(record))) == sent
    queries = rows_of(record)
    assert len(queries) == B
    assert queries[1]["entropy"] is None
    assert math.isfinite(queries[0]["entropy"])


def test_a_deferred_record_reports_skipped_spool_lines(tmp_path: Path) -> None:
    service = _Service()
    client = _client(service, tmp_path)
    client.bad_lines = 2  # as if the sender had skipped two damaged lines
    monitor = Monitor(group_size=G, kl_beta=0.04, sender=client)
    result = monitor.step(_inputs(0))
    assert client.flush(timeout=30), client.flush_error
    client.close()
    (sent,) = service.steps
    assert sent["metrics"][BAD_LINES_METRIC] == 2.0
    assert BAD_LINES_METRIC not in result.metrics  # the caller's metrics are not touched


def test_answer_key_hashing_matches_the_per_key_reference() -> None:
    keys: list[str | None] = ["a", None, "b", "a", None, "c", "c", "a"]
    layout = make_layout(torch.zeros(2, 4), None)
    reference = [hash((_NO_KEY_SALT, i)) if k is None else hash(k) for i, k in enumerate(keys)]
    want = modes_from_keys(torch.tensor(reference, dtype=torch.int64), layout)
    got = assign_modes(keys, layout)
    assert torch.equal(got.mode_index, want.mode_index)
    assert torch.equal(got.n_modes, want.n_modes)
    assert got.n_modes.tolist() == [3.0, 3.0]  # {a, None, b} | {None, c, a}: each None its own


def test_with_metrics_keeps_the_queries_built_or_not() -> None:
    host = {"q_size": [4.0, 4.0], "q_successes": [1.0, 4.0], "q_entropy": [0.5, float("nan")]}
    rec = record_mod.DeferredRecord(
        step=3, time="t", metrics={"a": 1.0}, non_finite=[], host=host, query_ids=None, num_groups=2
    )
    unbuilt = rec.with_metrics({"a": 1.0, "b": None}, ["b"])
    built_first = rec.build()
    built = rec.with_metrics({"c": 2.0}, [])
    assert not unbuilt.built
    assert built.built
    for other, metrics in ((unbuilt, {"a": 1.0, "b": None}), (built, {"c": 2.0})):
        out = other.build()
        assert out["metrics"] == metrics
        assert out["queries"] == built_first["queries"]
        assert out["step"] == 3
    assert built_first["metrics"] == {"a": 1.0}
    assert built_first["queries"] == {  # no host column for a field: the column is left out
        "query_id": ["q0", "q1"], "group_size": [4, 4], "successes": [1, 4], "entropy": [0.5, None]
    }  # fmt: skip
    assert rows_of(built_first)[1] == {
        "query_id": "q1", "group_size": 4, "successes": 4, "entropy": None, "log_zprime": None,
        "log_zprime_raw": None, "n_modes": None, "reward_accuracy": None, "response_length": None,
    }  # fmt: skip


class _Sink:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    def submit(self, record: dict[str, object]) -> None:
        self.records.append(record)


def test_framework_integrations_keep_the_record_unbuilt_through_deferred_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builders: list[threading.Thread] = []
    original = record_mod.build_queries

    def counted(*args: Any, **kwargs: Any) -> dict[str, list[object]]:
        builders.append(threading.current_thread())
        return original(*args, **kwargs)

    service = _Service()
    client = _client(service, tmp_path)
    deferred = DeferredSender(client)
    monitor = Monitor(group_size=G, kl_beta=0.04, sender=deferred)
    sink = _Sink()
    reference_sender = DeferredSender(sink)
    reference = Monitor(group_size=G, kl_beta=0.04, sender=reference_sender)
    reference._defer_records = False
    framework = {"policy_entropy": 0.25, "loss": 9.0, "clip": float("inf")}
    monkeypatch.setattr(record_mod, "build_queries", counted)
    for case in CASES:
        inputs = _inputs(**case)  # type: ignore[arg-type]
        monitor.step(inputs)
        assert deferred.pending_step == monitor.last_step
        assert deferred.complete(framework) == monitor.last_step
        assert deferred.last_completed_metrics is not None
        assert deferred.last_completed_metrics["policy_entropy"] == 0.25
        reference.step(inputs)
        reference_sender.complete(framework)
    assert [t for t in builders if t is threading.current_thread()] == len(CASES) * [
        threading.current_thread()
    ]  # only the synchronous reference built here
    assert client.flush(timeout=30), client.flush_error
    client.close()
    sent = sorted(service.steps, key=lambda r: int(r["step"]))
    want = [json.loads(json.dumps(sanitize_record(r))) for r in sink.records]
    assert len(sent) == len(want) == len(CASES)
    for got, ref in zip(sent, want, strict=True):
        got.pop("time")
        ref.pop("time")
        assert got == ref
    assert sent[0]["metrics"]["policy_entropy"] == 0.25
    assert "clip" in sent[0]["non_finite"]
    assert sent[0]["metrics"]["loss"] == 0.5  # the monitor's own value wins
    assert sent[1]["metrics"]["loss"] == 9.0  # the framework's fills the monitor's NaN
