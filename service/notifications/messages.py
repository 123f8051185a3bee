"""What a notification says, per channel kind, and how a generic webhook is signed.

- ``webhook``: the event as JSON (``id`` is the outbox id, ``url`` the run's live page), signed
  with HMAC-SHA256 over ``f"{timestamp}.{body}"`` (the scheme Stripe and Slack use: the
  timestamp inside the signature lets a receiver refuse replays). Headers:
  ``X-Sharpwatch-Timestamp`` (Unix seconds), ``X-Sharpwatch-Signature`` (``sha256=<hex>``) and
  ``Idempotency-Key`` (the outbox id: a receiver that sees it twice drops the repeat).
- ``slack``: an incoming-webhook message, ``text`` plus ``blocks``.
- ``discord``: a webhook message, ``content`` plus one embed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from service.wire import Severity

SIGNATURE_HEADER = "X-Sharpwatch-Signature"
TIMESTAMP_HEADER = "X-Sharpwatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Sharpwatch-Event"

_TITLES = {
    "alert_opened": "Alert opened",
    "alert_resolved": "Alert resolved",
    "stop_issued": "Automatic stop issued",
    "alpha_changed": "Automatic alpha change issued",
    "command_applied": "Command applied",
    "command_rejected": "Command rejected",
    "command_expired": "Command expired",
}
_COLOURS: dict[str, int] = {Severity.CRITICAL: 0xD7263D, Severity.WARNING: 0xF4A259}


def run_link(public_url: str, run_id: int) -> str:
    """The run's live page (the web UI routes ``#/runs/<id>``)."""
    return f"{public_url.rstrip('/')}/#/runs/{run_id}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def comparison(payload: dict[str, Any]) -> str:
    """``name = value (threshold t)`` for every observed value, its threshold beside it."""
    observed: dict[str, Any] = payload.get("observed") or {}
    thresholds: dict[str, Any] = payload.get("thresholds") or {}
    parts = []
    for name, value in observed.items():
        text = f"{name} = {_number(value)}"
        limit = thresholds.get(name)
        if limit is not None:
            text += f" (threshold {_number(limit)})"
        parts.append(text)
    parts += [
        f"threshold {name} = {_number(v)}" for name, v in thresholds.items() if name not in observed
    ]
    return "; ".join(parts)


def summary_lines(payload: dict[str, Any], link: str) -> tuple[str, list[str]]:
    """A title and the lines a person acts on."""
    run = payload["run"]
    title = _TITLES.get(payload["event"], payload["event"])
    if payload.get("severity"):
        title += f" [{payload['severity']}]"
    if payload.get("rule"):
        title += f": {payload['rule']}"
    title += f" on {run['project']}/{run['name']}"
    lines = []
    if payload.get("step") is not None:
        lines.append(f"Step: {payload['step']}")
    values = comparison(payload)
    if values:
        lines.append(f"Value: {values}")
    if payload.get("message"):
        lines.append(f"What: {payload['message']}")
    command = payload.get("command")
    if command and command.get("detail"):
        lines.append(f"Trainer said: {command['detail']}")
    if payload.get("action"):
        lines.append(f"Recommended action: {payload['action']}")
    if payload.get("best_step") is not None:
        lines.append(f"Best step (roll back to): {payload['best_step']}")
    lines.append(f"Live page: {link}")
    return title, lines


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes
    headers: dict[str, str]


def webhook_body(row_id: int, payload: dict[str, Any], link: str) -> bytes:
    document = {"id": row_id, **payload, "url": link}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def render(
    kind: str,
    row_id: int,
    payload: dict[str, Any],
    *,
    link: str,
    secret: str | None,
    timestamp: int,
) -> Request:
    headers = {"Content-Type": "application/json", "User-Agent": "sharpwatch-notify"}
    title, lines = summary_lines(payload, link)
    if kind == "webhook":
        body = webhook_body(row_id, payload, link)
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[IDEMPOTENCY_HEADER] = str(row_id)
        headers[EVENT_HEADER] = str(payload["event"])
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        return Request(body, headers)
    if kind == "slack":
        document: dict[str, Any] = {
            "text": f"{title}\n" + "\n".join(lines),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open the run"},
                            "url": link,
                        }
                    ],
                },
            ],
        }
    elif kind == "discord":
        document = {
            "content": title[:2000],
            "embeds": [
                {
                    "title": title[:256],
                    "description": "\n".join(lines)[:4096],
                    "url": link,
                    "color": _COLOURS.get(str(payload.get("severity")), 0x4C8BF5),
                    "footer": {"text": f"sharpwatch notification {row_id}"},
                }
            ],
            "allowed_mentions": {"parse": []},
        }
    else:
        raise ValueError(f"unknown channel kind {kind!r}")
    return Request(json.dumps(document).encode(), headers)
