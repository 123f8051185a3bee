"""Hostile input catalogue: malformed and hostile payloads on every write endpoint, and hostile
query parameters and ids on reads. Each is answered with a 4xx whose message names the field,
and leaves the database exactly as it was (every row of every table compared before and after).

One service per backend (SQLite, and PostgreSQL when configured) serves the whole catalogue:
since no case may store anything, sharing it is itself part of what is checked.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select

from service.app import create_app
from service.db.base import Base
from service.db.engine import make_engine
from service.db.migrate import upgrade
from service.settings import Settings
from tests._servers import postgres_url_or_skip, scratch_postgres_database
from tests.service._helpers import run_body, step_record

JSON = {"content-type": "application/json"}
RUN = "{run}"  # replaced by the registered run's id
COMMAND = "{command}"  # replaced by a pending command's id


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes | None = None  # raw bytes: NaN literals, duplicate keys, broken JSON survive
    status: int = 422
    field: str = "body"
    words: str = ""  # expected in the reason
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(JSON))


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"a": node}
    return node


STEPS = f"/api/v1/runs/{RUN}/steps"
COMMANDS = f"/api/v1/runs/{RUN}/commands"
ACK = f"/api/v1/runs/{RUN}/commands/{COMMAND}/ack"
RUN_PATH = f"/api/v1/runs/{RUN}"


def _steps(**record: Any) -> bytes:
    return body({"steps": [step_record(7) | record]})


def _query(**query: Any) -> bytes:
    base = {"query_id": "q", "group_size": 8, "successes": 1}
    return body({"steps": [step_record(7) | {"queries": [base | query]}]})


CASES: dict[str, Case] = {
    # ---- POST /api/v1/runs ------------------------------------------------------------------
    "run: 100 kB name": Case("POST", "/api/v1/runs", body(run_body("x" * 100_000)), field="name"),
    "run: config nested 40 deep": Case(
        "POST", "/api/v1/runs", body(run_body(config=_nested(40))), field="config", words="deeper"
    ),
    "run: body nested 100000 deep": Case(
        "POST",
        "/api/v1/runs",
        raw('{"name":"n","group_size":8,"config":{"a":' + "[" * 100_000 + "]" * 100_000 + "}}"),
        words="nested too deeply",
    ),
    "run: NaN inside config": Case(
        "POST",
        "/api/v1/runs",
        raw('{"name":"n","group_size":8,"config":{"x":NaN}}'),
        field="config",
    ),
    "run: Infinity kl_beta": Case(
        "POST",
        "/api/v1/runs",
        raw('{"name":"n","group_size":8,"kl_beta":Infinity}'),
        field="kl_beta",
        words="finite",
    ),
    "run: group_size 2^63": Case(
        "POST", "/api/v1/runs", body(run_body(group_size=2**63)), field="group_size"
    ),
    "run: group_size -2^63-1": Case(
        "POST", "/api/v1/runs", body(run_body(group_size=-(2**63) - 1)), field="group_size"
    ),
    "run: group_size true (no bool coercion)": Case(
        "POST", "/api/v1/runs", body(run_body(group_size=True)), field="group_size"
    ),
    "run: group_size '8' (no string coercion)": Case(
        "POST", "/api/v1/runs", body(run_body(group_size="8")), field="group_size"
    ),
    "run: group_size 8.0 (no float coercion)": Case(
        "POST", "/api/v1/runs", body(run_body(group_size=8.0)), field="group_size"
    ),
    "run: kl_beta '0.1' (no string coercion)": Case(
        "POST", "/api/v1/runs", body(run_body(kl_beta="0.1")), field="kl_beta"
    ),
    "run: NUL in name": Case(
        "POST", "/api/v1/runs", body(run_body("a\x00b")), field="name", words="NUL"
    ),
    "run: lone surrogate in name": Case(
        "POST", "/api/v1/runs", raw('{"name":"a\\ud800","group_size":8}'), field="name"
    ),
    "run: NUL in a tag key": Case(
        "POST", "/api/v1/runs", body(run_body(tags={"k\x00": "v"})), field="tags", words="NUL"
    ),
    "run: NUL in a config value": Case(
        "POST", "/api/v1/runs", body(run_body(config={"k": "\x00"})), field="config", words="NUL"
    ),
    "run: top-level array": Case("POST", "/api/v1/runs", body([run_body()]), words="dictionary"),
    "run: empty body": Case("POST", "/api/v1/runs", b"", words="required"),
    "run: JSON null": Case("POST", "/api/v1/runs", b"null"),
    "run: truncated JSON": Case("POST", "/api/v1/runs", b'{"name": "n", ', words="not valid"),
    "run: duplicate key": Case(
        "POST",
        "/api/v1/runs",
        raw('{"name":"n","group_size":8,"group_size":9}'),
        field="group_size",
        words="duplicate key",
    ),
    "run: unknown field": Case(
        "POST", "/api/v1/runs", body(run_body(owner="root")), field="owner", words="Extra"
    ),
    "run: text/plain body": Case(
        "POST",
        "/api/v1/runs",
        body(run_body()),
        status=415,
        field="content-type",
        headers={"content-type": "text/plain"},
    ),
    "run: form-encoded body": Case(
        "POST",
        "/api/v1/runs",
        b"name=n&group_size=8",
        status=415,
        field="content-type",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    "run: 5000-digit integer": Case(
        "POST",
        "/api/v1/runs",
        raw('{"name":"n","group_size":8,"config":{"x":' + "9" * 5000 + "}}"),
        words="digits",
    ),
    "run: 65 tags": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(tags={f"t{i}": "v" for i in range(65)})),
        field="tags",
    ),
    "run: 70 KiB config": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(config={"blob": "x" * 70_000})),
        field="config",
        words="bytes",
    ),
    "run: detectors as a string": Case(
        "POST", "/api/v1/runs", body(run_body(detectors="all")), field="detectors"
    ),
    "run: detectors window true (no bool coercion)": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(detectors={"entropy_floor": {"window": True}})),
        field="detectors.entropy_floor.window",
    ),
    "run: detectors floor '0.1'": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(detectors={"entropy_floor": {"floor": "0.1"}})),
        field="detectors.entropy_floor.floor",
    ),
    "run: policy alpha_cooldown_steps false": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(policy={"alpha_cooldown_steps": False})),
        field="policy.alpha_cooldown_steps",
    ),
    "run: policy rule listed twice": Case(
        "POST",
        "/api/v1/runs",
        body(run_body(policy={"auto_stop_rules": ["entropy_floor", "entropy_floor"]})),
        field="policy.auto_stop_rules",
        words="listed twice",
    ),
    # ---- POST /api/v1/runs/{id}/steps -------------------------------------------------------
    "steps: step true": Case("POST", STEPS, _steps(step=True), field="steps[0].step"),
    "steps: step '7'": Case("POST", STEPS, _steps(step="7"), field="steps[0].step"),
    "steps: step 2^63": Case("POST", STEPS, _steps(step=2**63), field="steps[0].step"),
    "steps: step -1": Case("POST", STEPS, _steps(step=-1), field="steps[0].step"),
    "steps: 10^6 queries": Case(
        "POST",
        STEPS,
        raw('{"steps":[{"step":7,"queries":[' + ",".join(["{}"] * 1_000_000) + "]}]}"),
        field="steps[0].queries",
        words="at most 65536",
    ),
    "steps: 10^6 steps": Case(
        "POST",
        STEPS,
        raw('{"steps":[' + ",".join(['{"step":1}'] * 1_000_000) + "]}"),
        field="steps",
        words="at most 1000",
    ),
    "steps: NaN metric literal": Case(
        "POST",
        STEPS,
        raw('{"steps":[{"step":7,"metrics":{"entropy":NaN}}]}'),
        field="steps[0].metrics.entropy",
        words="finite",
    ),
    "steps: -Infinity metric literal": Case(
        "POST",
        STEPS,
        raw('{"steps":[{"step":7,"metrics":{"entropy":-Infinity}}]}'),
        field="steps[0].metrics.entropy",
    ),
    "steps: 1e999 overflows to inf": Case(
        "POST",
        STEPS,
        raw('{"steps":[{"step":7,"metrics":{"entropy":1e999}}]}'),
        field="steps[0].metrics.entropy",
    ),
    "steps: metric value '0.5'": Case(
        "POST", STEPS, _steps(metrics={"entropy": "0.5"}), field="steps[0].metrics.entropy"
    ),
    "steps: time overflows UTC": Case(
        "POST",
        STEPS,
        _steps(time="9999-12-31T23:59:59-12:00"),
        field="steps[0].time",
        words="out of range",
    ),
    "steps: time as a number": Case(
        "POST", STEPS, _steps(time=1_700_000_000), field="steps[0].time", words="ISO-8601"
    ),
    "steps: NUL in query id": Case(
        "POST", STEPS, _query(query_id="a\x00"), field="steps[0].queries[0].query_id"
    ),
    "steps: 300-char query id": Case(
        "POST", STEPS, _query(query_id="q" * 300), field="steps[0].queries[0].query_id"
    ),
    "steps: successes true": Case(
        "POST", STEPS, _query(successes=True), field="steps[0].queries[0].successes"
    ),
    "steps: SQL in a metric name": Case(
        "POST",
        STEPS,
        _steps(metrics={"x'; DROP TABLE steps; --": 1.0}),
        field="steps[0].metrics",
        words="pattern",
    ),
    "steps: steps null": Case("POST", STEPS, body({"steps": None}), field="steps"),
    "steps: duplicate key in a record": Case(
        "POST", STEPS, raw('{"steps":[{"step":7,"step":8}]}'), field="step", words="duplicate"
    ),
    "steps: run id 2^63": Case(
        "POST", "/api/v1/runs/9223372036854775808/steps", _steps(), field="run_id"
    ),
    "steps: run id '1 OR 1=1'": Case(
        "POST", "/api/v1/runs/1%20OR%201=1/steps", _steps(), field="run_id"
    ),
    "steps: run id path traversal": Case(
        "POST", "/api/v1/runs/..%2F..%2F1/steps", _steps(), status=404, field="path"
    ),
    # ---- POST /api/v1/runs/{id}/commands ----------------------------------------------------
    "command: unknown kind": Case(
        "POST", COMMANDS, body({"kind": "drop_tables", "reason": "r"}), field="kind"
    ),
    "command: alpha '0.5'": Case(
        "POST",
        COMMANDS,
        body({"kind": "adjust_alpha", "reason": "r", "alpha": "0.5"}),
        field="alpha",
    ),
    "command: alpha NaN": Case(
        "POST",
        COMMANDS,
        raw('{"kind":"adjust_alpha","reason":"r","alpha":NaN}'),
        field="alpha",
    ),
    "command: 2000-char reason": Case(
        "POST", COMMANDS, body({"kind": "early_stop", "reason": "r" * 2000}), field="reason"
    ),
    "command: NUL in reason": Case(
        "POST", COMMANDS, body({"kind": "early_stop", "reason": "\x00"}), field="reason"
    ),
    "command: best_step -1": Case(
        "POST",
        COMMANDS,
        body({"kind": "early_stop", "reason": "r", "best_step": -1}),
        field="best_step",
    ),
    "command: expires_in 1e308": Case(
        "POST",
        COMMANDS,
        body({"kind": "early_stop", "reason": "r", "expires_in": 1e308}),
        field="expires_in",
    ),
    "command: unknown field": Case(
        "POST",
        COMMANDS,
        body({"kind": "early_stop", "reason": "r", "shell": "rm -rf /"}),
        field="shell",
    ),
    # ---- POST .../commands/{id}/ack ---------------------------------------------------------
    "ack: unknown status": Case("POST", ACK, body({"status": "ignored"}), field="status"),
    "ack: step 2^63": Case("POST", ACK, body({"status": "applied", "step": 2**63}), field="step"),
    "ack: NUL in detail": Case(
        "POST", ACK, body({"status": "rejected", "detail": "\x00"}), field="detail"
    ),
    "ack: command id 2^64": Case(
        "POST",
        f"/api/v1/runs/{RUN}/commands/18446744073709551616/ack",
        body({"status": "applied"}),
        field="command_id",
    ),
    "ack: top-level array": Case("POST", ACK, body([{"status": "applied"}])),
    # ---- PATCH /api/v1/runs/{id} ------------------------------------------------------------
    "patch: status true": Case("PATCH", RUN_PATH, body({"status": True}), field="status"),
    "patch: status 'deleted'": Case("PATCH", RUN_PATH, body({"status": "deleted"}), field="status"),
    "patch: tags as a list": Case("PATCH", RUN_PATH, body({"tags": ["a"]}), field="tags"),
    "patch: rename (unknown field)": Case("PATCH", RUN_PATH, body({"name": "other"}), field="name"),
    "patch: JSON null": Case("PATCH", RUN_PATH, b"null"),
    "patch: policy auto_alpha 1": Case(
        "PATCH", RUN_PATH, body({"policy": {"auto_alpha": 1}}), field="policy.auto_alpha"
    ),
    "patch: alpha_pinned 'false'": Case(
        "PATCH", RUN_PATH, body({"alpha_pinned": "false"}), field="alpha_pinned"
    ),
    "patch: alpha_pinned 0": Case(
        "PATCH", RUN_PATH, body({"alpha_pinned": 0}), field="alpha_pinned"
    ),
    # ---- POST /api/v1/triage (stores nothing by design; still validated) --------------------
    "triage: NaN entropy": Case(
        "POST",
        "/api/v1/triage",
        raw('{"group_size":8,"candidates":[{"name":"a","entropy":NaN,"pass_at_1":0.1}]}'),
        field="candidates[0].entropy",
    ),
    "triage: 10^4 candidates": Case(
        "POST",
        "/api/v1/triage",
        body(
            {
                "group_size": 8,
                "candidates": [
                    {"name": f"c{i}", "entropy": 1.0, "pass_at_1": 0.5} for i in range(10_000)
                ],
            }
        ),
        field="candidates",
    ),
    "triage: group_size 2^63": Case(
        "POST",
        "/api/v1/triage",
        body({"group_size": 2**63, "candidates": [{"name": "a", "entropy": 1, "pass_at_1": 0}]}),
        field="group_size",
    ),
    "triage: empty object": Case("POST", "/api/v1/triage", b"{}", field="group_size"),
    # ---- hostile query parameters and ids on reads ------------------------------------------
    "read: NUL in project": Case("GET", "/api/v1/runs?project=a%00b", field="project"),
    "read: 30-digit cursor": Case("GET", "/api/v1/runs?cursor=" + "9" * 30, field="cursor"),
    "read: 20-digit alerts cursor": Case(
        "GET", "/api/v1/alerts?cursor=" + "9" * 20, field="cursor"
    ),
    "read: limit 2^63": Case("GET", "/api/v1/runs?limit=9223372036854775808", field="limit"),
    "read: limit true": Case("GET", "/api/v1/runs?limit=true", field="limit"),
    "read: since overflows UTC": Case(
        "GET", "/api/v1/alerts?since=9999-12-31T23:59:59-14:00", field="since"
    ),
    "read: SQL in rule": Case("GET", "/api/v1/alerts?rule=%27%20OR%201=1--", field="rule"),
    "read: SQL in status": Case(
        "GET", f"/api/v1/runs/{RUN}/commands/history?status=x%27--", field="status"
    ),
    "read: SQL in metrics": Case(
        "GET", f"/api/v1/runs/{RUN}/steps?metrics=entropy;DROP%20TABLE%20steps", field="metrics"
    ),
    "read: NUL in query id": Case("GET", f"/api/v1/runs/{RUN}/queries/a%00b", field="path"),
    # A query id may contain '/' (gsm8k/train/17): this is an id with no rows, nothing more.
    "read: query id path traversal": Case(
        "GET", f"/api/v1/runs/{RUN}/queries/..%2F..%2Fetc%2Fpasswd", status=404, field="query_id"
    ),
    "read: 300-char query id": Case(
        "GET", f"/api/v1/runs/{RUN}/queries/" + "q" * 300, field="query_id"
    ),
    "read: run id 10^20": Case("GET", "/api/v1/runs/100000000000000000000", field="run_id"),
    "read: run id -1": Case("GET", "/api/v1/runs/-1", field="run_id"),
    "read: step 2^31": Case("GET", f"/api/v1/runs/{RUN}/steps/2147483648", field="step"),
    "read: from -1": Case("GET", f"/api/v1/runs/{RUN}/steps?from=-1", field="from"),
    "read: wait NaN": Case("GET", f"/api/v1/runs/{RUN}/commands?wait=nan", field="wait"),
    "read: wait 10^9": Case("GET", f"/api/v1/runs/{RUN}/commands?wait=1e9", field="wait"),
    "read: misspelt query parameter": Case(
        "GET", "/api/v1/runs?limt=5", field="limt", words="unknown query parameter 'limt'"
    ),
    "read: misspelt query parameter on steps": Case(
        "GET", f"/api/v1/runs/{RUN}/steps?form=3", field="form", words="takes: cursor, from, limit"
    ),
}


@dataclass
class Service:
    client: TestClient
    engine: Engine
    run_id: int
    command_id: int

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: "nothing stored" means nothing inserted or changed."""
        with self.engine.connect() as connection:
            return {
                table.name: sorted(
                    (tuple(repr(v) for v in row) for row in connection.execute(select(table))),
                )
                for table in Base.metadata.sorted_tables
            }


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("hostile") / "sharpwatch.db"
        yield from _service(f"sqlite:///{path}")
    else:
        with scratch_postgres_database(postgres_url_or_skip()) as url:
            yield from _service(url)


def _service(url: str) -> Iterator[Service]:
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(Settings(database_url=url), engine=engine, registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as client:
        run_id = client.post("/api/v1/runs", json=run_body("target")).json()["id"]
        ok = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(0)]})
        assert ok.status_code == 200, ok.text
        command = client.post(
            f"/api/v1/runs/{run_id}/commands",
            json={"kind": "adjust_alpha", "reason": "fixture", "alpha": 0.5},
        )
        assert command.status_code == 201, command.text
        yield Service(client, engine, int(run_id), int(command.json()["id"]))
    engine.dispose()


def _fields(answer: dict[str, Any]) -> list[str]:
    fields = [e.get("field") for e in answer.get("errors") or []] + [answer.get("field")]
    return [f for f in fields if isinstance(f, str)]


def _names(found: str, expected: str) -> bool:
    return found == expected or found.startswith((expected + ".", expected + "["))


def test_catalogue_is_large_and_covers_every_write_endpoint() -> None:
    assert len(CASES) >= 30
    writes = {(c.method, c.path.split("?")[0]) for c in CASES.values() if c.method != "GET"}
    for endpoint in [
        ("POST", "/api/v1/runs"),
        ("POST", STEPS),
        ("POST", COMMANDS),
        ("POST", ACK),
        ("PATCH", RUN_PATH),
        ("POST", "/api/v1/triage"),
    ]:
        assert endpoint in writes, endpoint


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_4xx_naming_the_field_and_stores_nothing(
    service: Service, name: str
) -> None:
    case = CASES[name]
    path = case.path.replace(RUN, str(service.run_id)).replace(COMMAND, str(service.command_id))
    before = service.snapshot()
    response = service.client.request(case.method, path, content=case.body, headers=case.headers)
    assert response.status_code == case.status, (name, response.status_code, response.text[:500])
    answer = response.json()
    fields = _fields(answer)
    assert any(_names(f, case.field) for f in fields), (name, fields, answer)
    assert isinstance(answer["detail"], str)
    assert case.words in answer["detail"], (name, answer["detail"][:500])
    if response.status_code == 422:
        assert case.field in answer["detail"], (name, answer["detail"][:500])
    assert service.snapshot() == before, f"{name} changed the database"


def test_oversized_bodies_are_413_declared_or_streamed(service: Service) -> None:
    limit = service.client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    path = f"/api/v1/runs/{service.run_id}/steps"
    before = service.snapshot()
    declared = service.client.post(path, content=b" " * (limit + 1), headers=JSON)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced as it streams
        yield b'{"steps": ['
        for _ in range(limit // (1 << 20) + 2):
            yield b" " * (1 << 20)

    streamed = service.client.post(path, content=chunks(), headers=JSON)
    for response in (declared, streamed):
        assert response.status_code == 413, response.text[:300]
        assert response.json()["field"] == "body"
        assert "SHARPWATCH_MAX_BODY_BYTES" in response.json()["detail"]
    assert service.snapshot() == before


def test_declared_query_parameters_and_lists_as_sets_still_pass(service: Service) -> None:
    runs = service.client.get("/api/v1/runs", params={"limit": 5, "project": "default"})
    assert runs.status_code == 200, runs.text
    steps = service.client.get(
        f"/api/v1/runs/{service.run_id}/steps", params={"from": 0, "metrics": "entropy"}
    )
    assert steps.status_code == 200, steps.text
    created = service.client.post(
        "/api/v1/runs",
        json=run_body(
            "lists-as-sets",
            policy={"auto_stop_rules": ["entropy_floor"], "alpha_min": 0},
            detectors={"entropy_floor": {"severity": "warning", "floor": 1}},
        ),
    )
    assert created.status_code == 201, created.text
    stored = service.client.get(f"/api/v1/runs/{created.json()['id']}").json()
    assert stored["policy"]["auto_stop_rules"] == ["entropy_floor"]
    assert stored["detectors"]["entropy_floor"]["floor"] == 1.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"group_size": True}, "group_size"),
        ({"group_size": "8"}, "group_size"),
        ({"group_size": 8.0}, "group_size"),
        ({"candidates": [{"name": "a", "entropy": 1, "pass_at_1": False}]}, "pass_at_1"),
        ({"candidates": [{"name": "a", "entropy": "1", "pass_at_1": 0.1}]}, "entropy"),
        ({"candidates": [{"name": 7, "entropy": 1, "pass_at_1": 0.1}]}, "name"),
    ],
)
def test_triage_refuses_wrong_json_types(
    service: Service, body: dict[str, object], field: str
) -> None:
    good = {"group_size": 8, "candidates": [{"name": "a", "entropy": 1, "pass_at_1": 0.1}]}
    response = service.client.post("/api/v1/triage", json=good | body)
    assert response.status_code == 422, response.text
    assert field in response.text
    # An integer stays a valid float, as in every other request body.
    assert service.client.post("/api/v1/triage", json=good).status_code == 200


SQL_LOOKING = [
    "x'); DROP TABLE runs; --",
    "1 OR 1=1",
    "\"; DELETE FROM steps WHERE ''='",
    "Robert'); DROP TABLE query_stats;--",
    "%' UNION SELECT * FROM tokens --",
]


@pytest.mark.parametrize("text", SQL_LOOKING)
def test_sql_looking_strings_are_stored_verbatim_never_executed(
    client: TestClient, text: str
) -> None:
    run = client.post(
        "/api/v1/runs",
        json=run_body(text, project=text, tags={"t": text}, config={text: text}),
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    record = step_record(0) | {
        "queries": [{"query_id": text, "group_size": 8, "successes": 3}],
    }
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]}).status_code == 200
    command = client.post(
        f"/api/v1/runs/{run_id}/commands", json={"kind": "early_stop", "reason": text}
    )
    assert command.status_code == 201, command.text

    stored = client.get(f"/api/v1/runs/{run_id}").json()
    assert (stored["name"], stored["project"]) == (text, text)
    assert stored["tags"] == {"t": text}
    assert stored["config"] == {text: text}
    listed = client.get("/api/v1/runs", params={"project": text}).json()["items"]
    assert [r["id"] for r in listed] == [run_id]
    history = client.get(f"/api/v1/runs/{run_id}/queries/{_quote(text)}").json()
    assert history["query_id"] == text
    assert [p["successes"] for p in history["points"]] == [3]
    commands = client.get(f"/api/v1/runs/{run_id}/commands/history").json()["items"]
    assert [c["reason"] for c in commands] == [text]
    # The tables the strings name are all still there.
    assert client.get(f"/api/v1/runs/{run_id}/steps").json()["items"][0]["n_queries"] == 1


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
