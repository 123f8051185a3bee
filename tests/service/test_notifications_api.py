"""Notification channels and subscriptions through the API, and the outbox rows events write
(issue 20). Deliveries themselves are in test_notification_delivery.py."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Alert, Command, OutboxRow
from service.notifications.messages import render, sign, summary_lines
from service.storage import commands as command_store
from tests.service._helpers import run_body
from tests.service.detectors import _traces

HOOK = "https://hooks.example.org/services/T000/B000/very-secret-token"
SECRET = "a-signing-secret-of-32-characters"


def _channel(client: TestClient, name: str = "hook", **body: Any) -> dict[str, Any]:
    spec = {"name": name, "kind": "webhook", "url": HOOK, **body}
    response = client.post("/api/v1/notifications/channels", json=spec)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _subscribe(client: TestClient, channel_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/notifications/subscriptions", json={"channel_id": channel_id, **body}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _non_finite_run(client: TestClient, name: str = "nan", project: str = "proj") -> int:
    """A run whose one step opens a critical non_finite alert and issues an automatic stop."""
    run_id = int(client.post("/api/v1/runs", json=run_body(name, project=project)).json()["id"])
    record = {"step": 0, "metrics": {"entropy": 0.5, "loss": None}, "non_finite": ["loss"]}
    assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": [record]}).status_code == 200
    return run_id


def _deliveries(client: TestClient, **query: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/notifications/deliveries", params=query)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_secrets_are_write_only(client: TestClient) -> None:
    created = _channel(client, signing_secret=SECRET)
    assert created["url_hint"] == "https://hooks.example.org/…"
    assert created["signed"] is True
    assert created["signing_secret"] is None
    generated = _channel(client, "generated")
    assert len(generated["signing_secret"]) >= 32  # shown once, at creation
    slack = _channel(client, "slack", kind="slack")
    assert slack["signed"] is False
    listing = client.get("/api/v1/notifications/channels")
    assert listing.status_code == 200
    text = listing.text
    for secret in ("very-secret-token", SECRET, generated["signing_secret"], "/services/"):
        assert secret not in text
    assert [c["name"] for c in listing.json()["items"]] == ["hook", "generated", "slack"]
    openapi = client.get("/openapi.json").json()["components"]["schemas"]["ChannelOut"]
    assert "url" not in openapi["properties"]
    assert "signing_secret" not in openapi["properties"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.org/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"kind": "email"}, "kind"),
        ({"signing_secret": "short"}, "signing_secret"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_channels_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    spec = {"name": "x", "kind": "webhook", "url": HOOK, **body}
    response = client.post("/api/v1/notifications/channels", json=spec)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert client.get("/api/v1/notifications/channels").json()["items"] == []


def test_duplicate_name_is_409_and_subscription_checks(client: TestClient) -> None:
    channel = _channel(client)
    assert (
        client.post(
            "/api/v1/notifications/channels", json={"name": "hook", "kind": "slack", "url": HOOK}
        ).status_code
        == 409
    )
    bad_rule = client.post(
        "/api/v1/notifications/subscriptions",
        json={"channel_id": channel["id"], "rules": ["no_such_rule"]},
    )
    assert bad_rule.status_code == 422
    assert bad_rule.json()["errors"][0]["field"] == "rules"
    missing = client.post("/api/v1/notifications/subscriptions", json={"channel_id": 999})
    assert missing.status_code == 404
    assert missing.json()["field"] == "channel_id"
    bad_event = client.post(
        "/api/v1/notifications/subscriptions",
        json={"channel_id": channel["id"], "events": ["alert_exploded"]},
    )
    assert bad_event.status_code == 422
    sub = _subscribe(client, channel["id"], severities=["critical"])
    assert client.get("/api/v1/notifications/subscriptions").json()["items"][0]["id"] == sub["id"]
    assert client.delete(f"/api/v1/notifications/channels/{channel['id']}").status_code == 204
    assert client.get("/api/v1/notifications/subscriptions").json()["items"] == []


def test_events_write_outbox_rows_per_matching_subscription(client: TestClient) -> None:
    everything = _channel(client, "everything")
    _subscribe(client, everything["id"])
    alerts_only = _channel(client, "alerts")
    _subscribe(client, alerts_only["id"], events=["alert_opened"], severities=["critical"])
    warnings = _channel(client, "warnings")
    _subscribe(client, warnings["id"], severities=["warning"], events=["alert_opened"])
    other_project = _channel(client, "other")
    _subscribe(client, other_project["id"], project="elsewhere")
    other_rule = _channel(client, "rule")
    _subscribe(client, other_rule["id"], rules=["entropy_floor"])

    run_id = _non_finite_run(client)
    rows = _deliveries(client)
    got = sorted((r["channel_id"], r["event"]) for r in rows)
    assert got == sorted(
        [
            (everything["id"], "alert_opened"),
            (everything["id"], "stop_issued"),
            (alerts_only["id"], "alert_opened"),
        ]
    )
    assert {r["run_id"] for r in rows} == {run_id}
    assert {r["status"] for r in rows} == {"pending"}

    stop = client.get(f"/api/v1/runs/{run_id}/commands").json()[0]
    ack = client.post(
        f"/api/v1/runs/{run_id}/commands/{stop['id']}/ack", json={"status": "applied", "step": 1}
    )
    assert ack.status_code == 200, ack.text
    assert next(r["event"] for r in _deliveries(client, run_id=run_id)) == "command_applied"
    assert _deliveries(client, status="dead") == []


def test_run_subscription_and_expiry_and_alpha_events(client: TestClient) -> None:
    channel = _channel(client)
    mine = _non_finite_run(client, "mine")
    _subscribe(client, channel["id"], run_id=mine)
    _non_finite_run(client, "theirs")  # not subscribed: no rows
    assert _deliveries(client) == []
    first = client.post(
        f"/api/v1/runs/{mine}/commands", json={"kind": "adjust_alpha", "alpha": 0.5, "reason": "a"}
    )
    assert first.status_code == 201
    client.post(
        f"/api/v1/runs/{mine}/commands", json={"kind": "adjust_alpha", "alpha": 0.4, "reason": "b"}
    )
    rows = _deliveries(client, run_id=mine)
    assert [r["event"] for r in rows] == ["command_expired"]  # the first, superseded


def test_the_outbox_row_commits_or_rolls_back_with_its_event(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop's outbox write fails: detection rolls back whole, so neither the alert nor its
    outbox row is stored (they share one transaction); the steps stay stored."""
    channel = _channel(client)
    _subscribe(client, channel["id"])

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("outbox down")

    monkeypatch.setattr(command_store, "enqueue", broken)
    run_id = _non_finite_run(client)
    assert client.get(f"/api/v1/runs/{run_id}/alerts").json()["items"] == []
    assert _deliveries(client) == []
    assert client.get(f"/api/v1/runs/{run_id}").json()["last_step"] == 0


def test_messages_say_what_to_do() -> None:
    payload = {
        "event": "alert_opened",
        "run": {"id": 7, "project": "proj", "name": "grpo-7b"},
        "rules": ["entropy_floor"],
        "severity": "critical",
        "rule": "entropy_floor",
        "step": 412,
        "observed": {"entropy": 0.0123},
        "thresholds": {"entropy": 0.05},
        "message": "entropy fell below its floor",
        "action": "stop and roll back",
        "best_step": 380,
    }
    link = "https://sw.example.org/#/runs/7"
    title, lines = summary_lines(payload, link)
    assert title == "Alert opened [critical]: entropy_floor on proj/grpo-7b"
    assert lines == [
        "Step: 412",
        "Value: entropy = 0.0123 (threshold 0.05)",
        "What: entropy fell below its floor",
        "Recommended action: stop and roll back",
        "Best step (roll back to): 380",
        f"Live page: {link}",
    ]
    slack = render("slack", 3, payload, link=link, secret=None, timestamp=1).body.decode()
    discord = render("discord", 3, payload, link=link, secret=None, timestamp=1).body.decode()
    for text in (slack, discord):
        assert "Best step (roll back to): 380" in text
        assert link in text
    hook = render("webhook", 3, payload, link=link, secret=SECRET, timestamp=1700000000)
    assert hook.headers["Idempotency-Key"] == "3"
    assert hook.headers["X-Sharpwatch-Signature"] == sign(SECRET, 1700000000, hook.body)


def _post_trace(client: TestClient, run_id: int, trace: list[dict[str, Any]]) -> None:
    for start in range(0, len(trace), 9):
        chunk = [
            {"step": r["step"], "metrics": r["metrics"], "non_finite": r.get("non_finite", [])}
            for r in trace[start : start + 9]
        ]
        assert client.post(f"/api/v1/runs/{run_id}/steps", json={"steps": chunk}).is_success


@pytest.mark.parametrize("name", ["entropy_collapse", "rise_then_fall", "starvation"])
def test_every_alert_and_command_transition_has_its_event(
    client: TestClient, session_factory: sessionmaker[Session], name: str
) -> None:
    """Over a whole trace, the outbox holds exactly one event per alert opened and resolved,
    per automatic stop and α change, and per command expired: none missed, none doubled."""
    channel = _channel(client)
    _subscribe(client, channel["id"])
    run_id = int(client.post("/api/v1/runs", json=run_body(name)).json()["id"])
    _post_trace(client, run_id, getattr(_traces, name)())
    with session_factory() as session:
        rows = list(session.scalars(select(OutboxRow).where(OutboxRow.run_id == run_id)))
        alerts = list(session.scalars(select(Alert).where(Alert.run_id == run_id)))
        commands = list(session.scalars(select(Command).where(Command.run_id == run_id)))
    assert rows, "the trace raised nothing"
    by_event = Counter((r.event, r.payload.get("rule")) for r in rows)
    assert Counter(rule for (event, rule) in by_event.elements() if event == "alert_opened") == (
        Counter(a.rule for a in alerts)
    )
    assert Counter(rule for (event, rule) in by_event.elements() if event == "alert_resolved") == (
        Counter(a.rule for a in alerts if a.status == "resolved")
    )
    events = Counter(r.event for r in rows)
    detector = [c for c in commands if c.source == "detector"]
    assert events["stop_issued"] == sum(c.kind == "early_stop" for c in detector)
    assert events["alpha_changed"] == sum(c.kind == "adjust_alpha" for c in detector)
    assert events["command_expired"] == sum(c.status == "expired" for c in commands)
    for row in rows:
        assert row.payload["run"] == {"id": run_id, "project": "proj", "name": name}
        if row.event.startswith("alert_"):
            assert row.payload["thresholds"]
            assert row.payload["action"]
    opened = next(r for r in rows if r.event == "alert_opened")
    assert opened.payload["step"] is not None


def test_a_command_expiring_before_delivery_has_its_event(client: TestClient) -> None:
    channel = _channel(client)
    _subscribe(client, channel["id"], events=["command_expired"])
    run_id = int(client.post("/api/v1/runs", json=run_body("slow")).json()["id"])
    issued = client.post(
        f"/api/v1/runs/{run_id}/commands",
        json={"kind": "early_stop", "reason": "late", "expires_in": 0.01},
    )
    assert issued.status_code == 201
    time.sleep(0.05)
    assert client.get(f"/api/v1/runs/{run_id}/commands").json() == []  # the trainer's poll
    assert [r["event"] for r in _deliveries(client)] == ["command_expired"]
