"""``sharpwatch doctor``: checks a deployment and says what is wrong and how to fix it.

It reads the same settings as ``sharpwatch serve`` (environment, ``SHARPWATCH_`` prefix) and checks,
in order: the database is reachable and migrated; Redis answers when it is configured; the
authentication settings; the clock against the database's; and a round trip through the running
service at ``--url``: register a scratch run, ingest steps, let the detectors raise an alert and an
automatic stop, deliver and acknowledge a command, delete the run. Each check prints one line,
``ok``/``warn``/``FAIL``, and every failure its fix. Exit code 1 when any check failed.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import httpx

from service.errors import ConfigurationError
from service.settings import Settings
from service.wire import CommandKind, CommandStatus

__all__ = ["Check", "add_doctor_parser", "run_doctor"]

MAX_CLOCK_SKEW_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "FAIL"]
    detail: str
    fix: str = ""


def _database(settings: Settings) -> Check:
    from service.db.engine import make_engine
    from service.preflight import check_database
    from service.storage.schema import schema_status

    try:
        check_database(settings)
    except ConfigurationError as exc:
        return Check("database", "FAIL", exc.message)
    engine = make_engine(settings.database_url)
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    if not status.ready:
        detail = f"{status.problem} ({status.cause})" if status.cause else status.problem
        return Check("database", "FAIL", detail, status.fix)
    return Check("database", "ok", f"reachable, schema at head ({status.head})")


def _redis(settings: Settings) -> Check:
    from service.preflight import check_redis

    if not settings.redis_url:
        detail = "not configured: in-process broker"
        if settings.workers > 1:  # pragma: no cover - Settings refuses this combination
            return Check("redis", "FAIL", detail, "set SHARPWATCH_REDIS_URL for several workers")
        return Check("redis", "ok", f"{detail} (one worker)")
    try:
        check_redis(settings)
    except ConfigurationError as exc:
        return Check("redis", "FAIL", exc.message)
    return Check("redis", "ok", "answers PING")


def _auth(settings: Settings) -> Check:
    if not settings.auth:
        if settings.env == "prod" or not settings.binds_loopback:  # pragma: no cover - refused
            return Check("auth", "FAIL", "off outside the loopback dev default")
        return Check(
            "auth",
            "warn",
            "off (fine for the loopback dev default: anyone on this machine can stop a run)",
            "on a shared machine set SHARPWATCH_AUTH=true and create tokens with "
            "`sharpwatch tokens create --kind operator --name you`",
        )
    from service.db.engine import make_engine, make_session_factory
    from service.storage import tokens as token_store

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            operators = [t for t in token_store.list_tokens(session) if t.kind == "operator"]
    finally:
        engine.dispose()
    if not operators:
        return Check(
            "auth",
            "FAIL",
            "on, but no operator token exists: nobody can register runs or send commands",
            "create one: `sharpwatch tokens create --kind operator --name you`",
        )
    return Check("auth", "ok", f"on, {len(operators)} active operator token(s)")


def _clock(settings: Settings) -> Check:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from service.db.engine import make_engine

    if settings.is_sqlite:
        return Check("clock", "ok", "SQLite shares this machine's clock")
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            before = time.time()
            db_now = connection.execute(text("SELECT now()")).scalar_one()
            after = time.time()
    except SQLAlchemyError as exc:
        return Check("clock", "FAIL", f"cannot read the database's clock: {exc}")
    finally:
        engine.dispose()
    here = datetime.fromtimestamp((before + after) / 2, UTC)
    skew = (db_now - here).total_seconds()
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return Check(
            "clock",
            "FAIL",
            f"this machine's clock is {skew:+.1f} s off the database's",
            "synchronise both clocks (NTP / chrony): step times, command expiry and the "
            "/metrics grace period compare them",
        )
    return Check("clock", "ok", f"{skew:+.2f} s against the database")


def _round_trip(url: str, token: str | None, settings: Settings) -> Check:
    """register → ingest → detect → command → ack → delete, through the running service."""
    if settings.auth and not token:
        return Check(
            "round trip",
            "FAIL",
            "authentication is on and no operator token was given",
            "pass --token TOKEN or set SHARPWATCH_TOKEN (an operator token)",
        )
    operator = {"Authorization": f"Bearer {token}"} if token else {}
    name = f"doctor-{uuid.uuid4().hex[:12]}"
    run_id: int | None = None
    try:
        with httpx.Client(base_url=url, timeout=10.0) as http:
            ready = http.get("/readyz")
            if ready.status_code != 200:
                return Check(
                    "round trip", "FAIL", f"{url}/readyz answers {ready.status_code}: {ready.text}"
                )
            registered = _ok(
                http.post(
                    "/api/v1/runs",
                    headers=operator,
                    json={"project": "sharpwatch-doctor", "name": name, "group_size": 4},
                ),
                "register",
            )
            run_id = int(registered["id"])
            ingest_token = registered.get("ingest_token") or token
            trainer = {"Authorization": f"Bearer {ingest_token}"} if ingest_token else {}
            steps = [_doctor_step(s) for s in range(3)]
            steps[-1]["metrics"]["entropy"] = None
            steps[-1]["non_finite"] = ["entropy"]  # the non_finite rule must fire and stop
            _ok(
                http.post(f"/api/v1/runs/{run_id}/steps", headers=trainer, json={"steps": steps}),
                "ingest",
            )
            alerts = _ok(http.get(f"/api/v1/runs/{run_id}/alerts", headers=operator), "alerts")
            if "non_finite" not in {a["rule"] for a in alerts["items"]}:
                return Check("round trip", "FAIL", "the detectors raised no non_finite alert")
            commands = _ok(
                http.get(f"/api/v1/runs/{run_id}/commands", headers=trainer), "command poll"
            )
            stops = [c for c in commands if c["kind"] == CommandKind.EARLY_STOP]
            if not stops:
                return Check("round trip", "FAIL", "no automatic early_stop was delivered")
            _ok(
                http.post(
                    f"/api/v1/runs/{run_id}/commands/{stops[0]['id']}/ack",
                    headers=trainer,
                    json={"status": CommandStatus.APPLIED, "step": 2},
                ),
                "ack",
            )
            deleted = http.delete(f"/api/v1/runs/{run_id}", headers=operator)
            if deleted.status_code != 204:
                return Check("round trip", "FAIL", f"delete answered {deleted.status_code}")
            run_id = None
    except httpx.HTTPError as exc:
        return Check(
            "round trip",
            "FAIL",
            f"cannot reach the service at {url} ({type(exc).__name__}: {exc})",
            "start it with `sharpwatch serve`, or pass --url",
        )
    except _StepFailedError as exc:
        return Check("round trip", "FAIL", str(exc), exc.fix)
    finally:
        if run_id is not None:  # leave nothing behind when a check failed half-way
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{url}/api/v1/runs/{run_id}", headers=operator, timeout=10.0)
    return Check(
        "round trip",
        "ok",
        f"{url}: registered, ingested 3 steps, non_finite alert + automatic early_stop, "
        "delivered, acknowledged, deleted",
    )


class _StepFailedError(Exception):
    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


def _ok(answer: httpx.Response, what: str) -> Any:
    if answer.status_code in (401, 403):
        raise _StepFailedError(
            f"{what} refused ({answer.status_code}: {answer.text[:200]})",
            "pass an operator token with --token (`sharpwatch tokens create --kind operator`)",
        )
    if answer.status_code >= 300:
        raise _StepFailedError(f"{what} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _doctor_step(step: int) -> dict[str, Any]:
    return {
        "step": step,
        "metrics": {"entropy": 0.5, "success_rate": 0.5},
        "queries": [{"query_id": "doctor/q0", "group_size": 4, "successes": 2}],
    }


def run_doctor(
    *,
    url: str | None = None,
    token: str | None = None,
    out: TextIO | None = None,
    settings_factory: Callable[[], Settings] | None = None,
) -> list[Check]:
    """Run every check, print one line each, and return them."""
    from service.preflight import load_settings

    stream = out or sys.stdout
    checks: list[Check] = []

    def say(check: Check) -> None:
        checks.append(check)
        line = f"{check.status:<4}  {check.name:<10}  {check.detail}"
        if check.fix:
            line += f"\n      {'':<10}  fix: {check.fix}"
        print(line, file=stream, flush=True)

    try:
        settings = (settings_factory or load_settings)()
    except ConfigurationError as exc:
        say(Check("settings", "FAIL", exc.message))
        return checks
    say(Check("settings", "ok", f"database {settings.database_url}"))
    database = _database(settings)
    say(database)
    say(_redis(settings))
    if database.status == "ok":
        say(_auth(settings))
        say(_clock(settings))
    target = (url or f"http://{_client_host(settings.host)}:{settings.port}").rstrip("/")
    say(_round_trip(target, token, settings))
    return checks


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _main(args: Any) -> int:
    checks = run_doctor(url=args.url, token=args.token)
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def add_doctor_parser(commands: Any) -> None:
    """Register ``sharpwatch doctor`` on the CLI's subcommands."""
    import os

    doctor = commands.add_parser(
        "doctor",
        help="check a deployment (database, Redis, auth, clock, a scratch run's round trip) and "
        "say how to fix what is wrong",
    )
    doctor.add_argument(
        "--url",
        default=os.environ.get("SHARPWATCH_URL"),
        help="the running service for the round trip (default $SHARPWATCH_URL, else "
        "http://SHARPWATCH_HOST:SHARPWATCH_PORT)",
    )
    doctor.add_argument(
        "--token",
        default=os.environ.get("SHARPWATCH_TOKEN"),
        help="operator token when authentication is on (default $SHARPWATCH_TOKEN)",
    )
    doctor.set_defaults(handler=_main)
