from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import QueryStat, Step
from service.wire.query import QUERY_FIELDS, QUERY_ROW_FIELDS
from tests.service._helpers import as_columns, run_body, step_record


@pytest.fixture
def run_id(client: TestClient) -> int:
    return int(client.post("/api/v1/runs", json=run_body()).json()["id"])


def _counts(session_factory: sessionmaker[Session]) -> tuple[int, int]:
    with session_factory() as session:
        steps = session.scalar(select(func.count()).select_from(Step))
        rows = session.scalar(select(func.count()).select_from(QueryStat))
    return int(steps or 0), int(rows or 0)


def test_steps_round_trip(client: TestClient, run_id: int) -> None:
    batch = [step_record(s, custom_metric=float(s)) for s in range(5)]
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": batch})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": [0, 1, 2, 3, 4], "duplicates": []}

    series = client.get(f"/api/v1/runs/{run_id}/steps").json()
    assert [s["step"] for s in series["items"]] == [0, 1, 2, 3, 4]
    for sent, got in zip(batch, series["items"], strict=True):
        for name, value in sent["metrics"].items():
            assert got["metrics"][name] == pytest.approx(value)
        assert got["n_queries"] == 3
        assert got["time"] == "2026-11-23T10:00:00Z"

    picked = client.get(
        f"/api/v1/runs/{run_id}/steps", params={"from": 1, "to": 3, "metrics": "entropy"}
    ).json()
    assert [s["step"] for s in picked["items"]] == [1, 2, 3]
    assert all(set(s["metrics"]) == {"entropy"} for s in picked["items"])

    detail = client.get(f"/api/v1/runs/{run_id}/steps/2").json()
    assert [q["query_id"] for q in detail["queries"]] == ["q0", "q1", "q2"]
    assert detail["queries"][1]["successes"] == batch[2]["queries"][1]["successes"]

    history = client.get(f"/api/v1/runs/{run_id}/queries/q1").json()
    assert [p["step"] for p in history["points"]] == [0, 1, 2, 3, 4]
    for point, record in zip(history["points"], batch, strict=True):
        sent = record["queries"][1]
        assert point["successes"] == sent["successes"]
        assert point["success_rate"] == pytest.approx(sent["successes"] / sent["group_size"])
        assert point["entropy"] == pytest.approx(sent["entropy"])

    run = client.get(f"/api/v1/runs/{run_id}").json()
    assert run["last_step"] == 4


def test_series_pagination(client: TestClient, run_id: int) -> None:
    client.post(
        f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(s, 0) for s in range(7)]}
    )
    page = client.get(f"/api/v1/runs/{run_id}/steps", params={"limit": 3}).json()
    assert [s["step"] for s in page["items"]] == [0, 1, 2]
    assert page["next_cursor"] == "3"
    rest = client.get(f"/api/v1/runs/{run_id}/steps", params={"from": 6, "limit": 3}).json()
    assert [s["step"] for s in rest["items"]] == [6]
    assert rest["next_cursor"] is None


def test_identical_resend_is_a_duplicate_and_stores_nothing(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session]
) -> None:
    batch = {"steps": [step_record(0), step_record(1)]}
    assert client.post(f"/api/v1/runs/{run_id}/steps", json=batch).status_code == 200
    before = _counts(session_factory)
    batch["steps"].append(step_record(2))
    again = client.post(f"/api/v1/runs/{run_id}/steps", json=batch)
    assert again.json() == {"accepted": [2], "duplicates": [0, 1]}
    assert _counts(session_factory) == (before[0] + 1, before[1] + 3)


def test_changed_resend_is_409_naming_the_step_and_stores_nothing(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session]
) -> None:
    client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(0)]})
    before = _counts(session_factory)
    changed = step_record(0, entropy=0.1)
    response = client.post(
        f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(1), changed]}
    )
    assert response.status_code == 409
    body = response.json()
    assert body["field"] == "steps[1].step"
    assert "step 0" in body["detail"]
    assert _counts(session_factory) == before


def test_non_finite_metrics_are_stored_missing_with_their_names(
    client: TestClient, run_id: int
) -> None:
    record = step_record(0)
    record["metrics"]["entropy"] = None
    record["non_finite"] = ["entropy", "grad_norm"]
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]})
    assert response.status_code == 200, response.text
    stored = client.get(f"/api/v1/runs/{run_id}/steps/0").json()
    assert stored["non_finite"] == ["entropy", "grad_norm"]
    assert stored["metrics"].get("entropy") is None


def _nan_body() -> bytes:
    record = step_record(0)
    record["metrics"]["entropy"] = math.nan
    return json.dumps({"steps": [record]}).encode()  # json.dumps writes the literal NaN


def _columns(step: int, **columns: list[Any]) -> dict[str, Any]:
    record = as_columns(step_record(step))
    record["queries"].update(columns)
    return record


BAD_STEPS: dict[str, tuple[Any, int, str, str]] = {
    # name: (body, status, field, words in the reason)
    "wrong type": (
        {"steps": [step_record(0) | {"step": "abc"}]},
        422,
        "steps[0].step",
        "valid integer",
    ),
    "negative step": (
        {"steps": [step_record(0) | {"step": -1}]},
        422,
        "steps[0].step",
        "greater than or equal to 0",
    ),
    "successes above group size": (
        {
            "steps": [
                step_record(1, group_size=8)
                | {"queries": [{"query_id": "q", "group_size": 8, "successes": 9}]}
            ]
        },
        422,
        "steps[0].queries[0]",
        "successes (9) must not exceed group_size (8)",
    ),
    "group size below one": (
        {
            "steps": [
                step_record(0) | {"queries": [{"query_id": "q", "group_size": 0, "successes": 0}]}
            ]
        },
        422,
        "steps[0].queries[0].group_size",
        "greater than or equal to 1",
    ),
    "missing query id": (
        {"steps": [step_record(0) | {"queries": [{"group_size": 8, "successes": 1}]}]},
        422,
        "steps[0].queries[0].query_id",
        "Field required",
    ),
    "NaN literal": (_nan_body(), 422, "steps[0].metrics.entropy", "finite number"),
    "duplicate step in batch": (
        {"steps": [step_record(3), step_record(3)]},
        422,
        "steps",
        "steps[1].step 3 appears twice",
    ),
    "duplicate query id": (
        {
            "steps": [
                step_record(0)
                | {
                    "queries": [
                        {"query_id": "q", "group_size": 8, "successes": 1},
                        {"query_id": "q", "group_size": 8, "successes": 2},
                    ]
                }
            ]
        },
        422,
        "steps[0].queries",
        "queries[1].query_id 'q' appears twice",
    ),
    "empty batch": ({"steps": []}, 422, "steps", "at least 1 item"),
    "unknown field": (
        {"steps": [step_record(0) | {"extra": 1}]},
        422,
        "steps[0].extra",
        "Extra inputs are not permitted",
    ),
    "bad metric name": (
        {"steps": [step_record(0) | {"metrics": {"bad name!": 1.0}}]},
        422,
        "steps[0].metrics.bad name!.[key]",
        "pattern",
    ),
    "finite value listed as non-finite": (
        {"steps": [step_record(0) | {"non_finite": ["entropy"]}]},
        422,
        "steps[0]",
        "non_finite names 'entropy'",
    ),
    "not JSON": (b'{"steps": [', 422, "body", "not valid JSON"),
    # The same rules on queries sent as columns, errors naming the column and the element.
    "unknown column": (
        {"steps": [_columns(0, bogus=[1, 2, 3])]},
        422,
        "steps[0].queries.bogus",
        "Extra inputs are not permitted",
    ),
    "missing column": (
        {"steps": [step_record(0) | {"queries": {"query_id": ["q"], "successes": [1]}}]},
        422,
        "steps[0].queries.group_size",
        "Field required",
    ),
    "short column": (
        {"steps": [_columns(0, entropy=[0.5, None])]},
        422,
        "steps[0].queries.entropy",
        "has 2 elements but query_id has 3",
    ),
    "column element out of range": (
        {"steps": [_columns(0, entropy=[0.5, None, 1e5])]},
        422,
        "steps[0].queries.entropy[2]",
        "less than or equal to 10000",
    ),
    "column element of the wrong type": (
        {"steps": [_columns(0, n_modes=[1, "2", 3])]},
        422,
        "steps[0].queries.n_modes[1]",
        "valid integer",
    ),
    "column successes above group_size": (
        {"steps": [_columns(0, successes=[0, 9, 1])]},
        422,
        "steps[0].queries.successes[1]",
        "successes (9) must not exceed group_size (8)",
    ),
    "duplicate id in columns": (
        {"steps": [_columns(0, query_id=["q0", "q1", "q0"])]},
        422,
        "steps[0].queries.query_id[2]",
        "query_id 'q0' appears twice",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STEPS))
def test_bad_step_input_is_4xx_naming_field_and_stores_nothing(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session], case: str
) -> None:
    body, status, field, reason = BAD_STEPS[case]
    if isinstance(body, dict):
        # A valid step rides along first: the batch is all or nothing.
        body = {"steps": [step_record(100), *body["steps"]]} if body["steps"] else body
        field = _shift(field)
        reason = reason.replace("steps[1].step 3", "steps[2].step 3")
        content = json.dumps(body).encode()
    else:
        content = body
    response = client.post(
        f"/api/v1/runs/{run_id}/steps",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert field in response.json()["detail"]
    assert _counts(session_factory) == (0, 0)


def _shift(field: str) -> str:
    if field.startswith("steps[0]"):
        return "steps[1]" + field.removeprefix("steps[0]")
    return field


def test_unknown_run_is_404_and_stores_nothing(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    response = client.post("/api/v1/runs/4242/steps", json={"steps": [step_record(0)]})
    assert response.status_code == 404
    assert response.json() == {"detail": "run 4242 does not exist", "field": "run_id"}
    assert _counts(session_factory) == (0, 0)


def test_oversized_body_is_413(client: TestClient, run_id: int) -> None:
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = client.post(
        f"/api/v1/runs/{run_id}/steps",
        content=b" " * (limit + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "SHARPWATCH_MAX_BODY_BYTES" in response.json()["detail"]


def test_unknown_query_and_step_are_404(client: TestClient, run_id: int) -> None:
    assert client.get(f"/api/v1/runs/{run_id}/queries/nope").status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}/steps/5").status_code == 404


def test_openapi_documents_units_and_ranges(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    query = schema["QueryIn"]["properties"]
    assert "nats" in query["entropy"]["description"]
    assert query["successes"]["minimum"] == 0
    metrics_doc = schema["StepIn"]["properties"]["metrics"]["description"]
    for name in ("entropy", "zprime_gt1_frac", "reward_accuracy", "grad_norm"):
        assert f"`{name}`" in metrics_doc


def test_series_pages_with_the_cursor_like_every_listing(client: TestClient, run_id: int) -> None:
    client.post(
        f"/api/v1/runs/{run_id}/steps", json={"steps": [step_record(s, 0) for s in range(7)]}
    )
    seen: list[int] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        page = client.get(f"/api/v1/runs/{run_id}/steps", params=params).json()
        assert set(page) == {"run_id", "items", "next_cursor"}
        seen += [s["step"] for s in page["items"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": page["next_cursor"]}
    assert seen == list(range(7))


def test_every_paged_listing_has_one_shape(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    paged = {name for name, s in schemas.items() if "next_cursor" in s.get("properties", {})}
    assert {"StepSeries"} <= paged
    for name in paged:
        assert schemas[name]["properties"]["items"]["type"] == "array", name
    assert not [name for name, s in schemas.items() if "next_from" in s.get("properties", {})]


QUERY_IDS = [
    "gsm8k/train/000017",
    "math/test/algebra/42/",
    "/leading-slash",
    "a//double",
    "with space and tab\tinside",
    "ünïcødé/数学/題-7",
    "reserved?chars#and%25&=+;",
    "emoji 🧮 sum",
]


@pytest.mark.parametrize("encode_slash", [False, True])
def test_any_printable_query_id_is_readable(server: Any, encode_slash: bool) -> None:
    """Issue 14: an id with '/' was accepted at ingest but its history was a 404."""
    from urllib.parse import quote

    import httpx

    url = server.url
    run = httpx.post(f"{url}/api/v1/runs", json=run_body("ids")).json()["id"]
    record = step_record(0, n_queries=0)
    record["queries"] = [
        {"query_id": qid, "group_size": 8, "successes": i} for i, qid in enumerate(QUERY_IDS)
    ]
    stored = httpx.post(f"{url}/api/v1/runs/{run}/steps", json={"steps": [record]})
    assert stored.status_code == 200, stored.text
    for i, qid in enumerate(QUERY_IDS):
        path = quote(qid, safe="" if encode_slash else "/")
        got = httpx.get(f"{url}/api/v1/runs/{run}/queries/{path}")
        assert got.status_code == 200, (qid, got.text)
        body = got.json()
        assert body["query_id"] == qid
        assert [p["successes"] for p in body["points"]] == [i]
    prefix = httpx.get(f"{url}/api/v1/runs/{run}/queries/gsm8k/train")
    assert prefix.status_code == 404  # a prefix of an id is not the id


def test_columns_round_trip_like_rows(client: TestClient, run_id: int) -> None:
    rows = step_record(0, n_queries=4)
    rows["queries"][2] = {"query_id": "sparse", "group_size": 4, "successes": 4}
    columns = as_columns(step_record(1, n_queries=4))
    columns["queries"]["entropy"][1] = None
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [rows, columns]})
    assert response.status_code == 200, response.text
    for record, sent in (
        (rows, rows["queries"]),
        (columns, step_record(1, n_queries=4)["queries"]),
    ):
        if record is columns:
            sent[1]["entropy"] = None
        detail = client.get(f"/api/v1/runs/{run_id}/steps/{record['step']}").json()
        assert detail["n_queries"] == 4
        stored = [{k: v for k, v in q.items() if v is not None} for q in detail["queries"]]
        assert stored == [{k: v for k, v in q.items() if v is not None} for q in sent]


def test_a_resend_in_the_other_shape_is_a_duplicate_and_a_changed_one_409(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session]
) -> None:
    sent = [step_record(0), as_columns(step_record(1))]
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": sent}).status_code == 200
    before = _counts(session_factory)
    swapped = [as_columns(step_record(0)), step_record(1)]
    again = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": swapped})
    assert again.json() == {"accepted": [], "duplicates": [0, 1]}
    changed = as_columns(step_record(1))
    changed["queries"]["log_zprime"][2] += 1e-12
    response = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [changed]})
    assert response.status_code == 409, response.text
    assert response.json()["field"] == "steps[0].step"
    assert _counts(session_factory) == before


def test_a_step_stored_with_the_legacy_digest_is_still_a_duplicate(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session]
) -> None:
    """Steps stored before digest version 2 carry the old digest: an upgrade must not turn an
    identical re-send into a conflict, nor a changed one into a duplicate."""
    from service.schemas.steps import StepIn

    record = step_record(0)
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]}).status_code == 200
    legacy = StepIn.model_validate(record).legacy_content_hash()
    with session_factory() as session:
        stored = session.scalars(select(Step)).one()
        assert stored.content_hash == StepIn.model_validate(record).content_hash() != legacy
        stored.content_hash = legacy
        session.commit()
    before = _counts(session_factory)
    for same in (record, as_columns(record)):
        again = client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [same]})
        assert again.json() == {"accepted": [], "duplicates": [0]}, again.text
    changed = step_record(0, entropy=0.25)
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [changed]}).status_code == 409
    assert _counts(session_factory) == before


EXTREME_FLOATS = [
    -0.0,
    0.0,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,  # the smallest normal
    1.0000000000000002,
    0.1 + 0.2,
    1e-300,
    999999.9999999999,
    -999999.9999999999,
    -1e6,
    1 / 3,
    123456.78901234567,
]


@pytest.mark.parametrize("shape", ["rows", "columns"])
def test_stored_floats_equal_the_sent_ones_bit_for_bit(
    client: TestClient,
    run_id: int,
    session_factory: sessionmaker[Session],
    shape: str,
    backend: str,
) -> None:
    """PostgreSQL's rows are written as COPY text: the floats' text must read back exactly.
    (SQLite stores an integral REAL as an integer, so its -0.0 reads back as 0.0.)"""
    count = len(EXTREME_FLOATS)
    record = step_record(0, n_queries=count)
    for i, value in enumerate(EXTREME_FLOATS):
        record["queries"][i]["log_zprime"] = value
        record["queries"][i]["log_zprime_raw"] = EXTREME_FLOATS[-1 - i]
        record["queries"][i]["response_length"] = [1e9, 5e-324, 0.0, 1e-9][i % 4]
    body = {"steps": [as_columns(record) if shape == "columns" else record]}
    response = client.post(f"/api/v1/runs/{run_id}/steps", json=body)
    assert response.status_code == 200, response.text
    with session_factory() as session:
        stored = session.execute(
            select(
                QueryStat.log_zprime, QueryStat.log_zprime_raw, QueryStat.response_length
            ).order_by(QueryStat.id)
        ).all()
    if backend == "sqlite":
        stored = [tuple(0.0 if value == 0 else value for value in row) for row in stored]
        for query in record["queries"]:
            query["log_zprime"] += 0.0  # -0.0 + 0.0 is 0.0
            query["log_zprime_raw"] += 0.0
    bits = [tuple(struct.pack("<d", value) for value in row) for row in stored]
    expected = [
        tuple(
            struct.pack("<d", q[name])
            for name in ("log_zprime", "log_zprime_raw", "response_length")
        )
        for q in record["queries"]
    ]
    assert bits == expected


def test_ids_with_copy_delimiters_are_stored_as_sent(
    client: TestClient, run_id: int, session_factory: sessionmaker[Session]
) -> None:
    ids = [
        "back\\slash",
        "tab\tinside",
        "new\nline",
        "carriage\rreturn",
        "\\N",
        "plain",
        "\\\t\n\r",
    ]
    record = step_record(0, n_queries=0)
    record["queries"] = [{"query_id": qid, "group_size": 2, "successes": 1} for qid in ids]
    body = {"steps": [as_columns(record)]}
    assert client.post(f"/api/v1/runs/{run_id}/steps", json=body).status_code == 200
    with session_factory() as session:
        stored = session.scalars(select(QueryStat.query_id).order_by(QueryStat.id)).all()
    assert list(stored) == ids


@pytest.mark.postgres
def test_the_binary_copy_layout_matches_the_table(postgres_database_url: str) -> None:
    """PostgreSQL's binary COPY reads each field as the column's exact type: the layout
    (service.storage.steps._binary_rows) must follow the migrated table's types."""
    from sqlalchemy import text

    from service.db.engine import make_engine
    from service.storage import steps as storage_steps

    engine = make_engine(postgres_database_url)
    with engine.connect() as connection:
        types = dict(
            connection.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'query_stats' AND table_schema = current_schema()"
                )
            ).all()
        )
    engine.dispose()
    expected = {"run_id": "integer", "step": "integer", "query_id": "character varying"}
    expected |= {
        name: "integer" if field.type is int else "double precision"
        for name, field in zip(QUERY_ROW_FIELDS[3:], QUERY_FIELDS, strict=True)
    }
    expected |= {"group_size": "integer", "successes": "integer"}
    assert {name: types[name] for name in storage_steps._QUERY_INSERT_COLUMNS} == expected
    assert storage_steps._FIELD_FORMAT == {"l": "ii", "d": "id"}
