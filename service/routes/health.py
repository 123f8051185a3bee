"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from service.deps import BrokerDep, SettingsDep
from service.storage.schema import schema_status

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Process alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database_check(engine: Engine) -> dict[str, Any]:
    status = schema_status(engine)
    if not status.ready:
        return {
            "ok": False,
            "error": f"{status.problem}: {status.fix}" if status.fix else status.problem,
        }
    return {"ok": True, "revision": status.current}


@router.get(
    "/readyz",
    summary="Ready to serve: database reachable, schema at head, Redis reachable if configured",
    responses={503: {"description": "A dependency is not ready; `checks` says which."}},
)
async def readyz(request: Request, settings: SettingsDep, broker: BrokerDep) -> JSONResponse:
    checks: dict[str, Any] = {
        "database": await run_in_threadpool(_database_check, request.app.state.engine)
    }
    if settings.redis_url:
        reachable = await broker.ping()
        checks["redis"] = {"ok": reachable} | ({} if reachable else {"error": "redis unreachable"})
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
