"""The app factory. The lifespan owns the engine, the command broker and the metrics registry;
each can be handed in (tests pass their own), like ``registry=`` in prometheus-client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

import service
from service import run_metrics
from service.auth import TokenCache
from service.broker import CommandBroker, InProcessBroker, RedisBroker
from service.db.engine import make_engine, make_session_factory
from service.errors import SharpwatchError
from service.log_throttle import OutageLog
from service.middleware import BodySizeLimit, RequestTiming
from service.notifications.worker import DeliveryWorker
from service.observability import ServiceMetrics
from service.routes import (
    alerts,
    commands,
    health,
    metrics,
    notifications,
    projects,
    runs,
    steps,
)
from service.routes.ui import mount_ui
from service.schemas.common import Problem, ValidationProblem
from service.settings import Settings
from service.trusted_hosts import TrustedHosts

log = logging.getLogger(__name__)

DESCRIPTION = """Training-health monitoring for RLVR (GRPO, DAPO, RLOO).

Trainers register a run, then stream one record per step: step metrics (entropy, success rate,
degenerate-group fractions, Z'(q) summary, reward accuracy, ...) and per-query rows. Every field's
unit and range is documented on its schema. Errors name the field and the reason.
"""


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    broker: CommandBroker | None = None,
    registry: CollectorRegistry | None = None,
    session_factory: sessionmaker[Session] | None = None,
    notify_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    service_metrics = ServiceMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        app.state.engine = engine if engine is not None else make_engine(settings.database_url)
        app.state.session_factory = (
            session_factory
            if session_factory is not None
            else make_session_factory(app.state.engine)
        )
        own_broker = broker is None
        if broker is not None:
            app.state.broker = broker
        elif settings.redis_url:
            app.state.broker = RedisBroker(settings.redis_url)
        else:
            app.state.broker = InProcessBroker()
        if own_broker:
            await app.state.broker.start()
        worker_task: asyncio.Task[None] | None = None
        if settings.notify_worker:
            # Its own sessions on the engine: never a request's (a test's joined) connection.
            app.state.notifier = DeliveryWorker(
                make_session_factory(app.state.engine), settings, transport=notify_transport
            )
            worker_task = asyncio.create_task(app.state.notifier.run_forever())
        try:
            yield
        finally:
            if worker_task is not None:
                await app.state.notifier.stop(worker_task)
            if own_broker:
                await app.state.broker.close()
            if own_engine:
                app.state.engine.dispose()

    app = FastAPI(
        title="sharpwatch",
        version=service.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = service_metrics
    app.state.token_cache = TokenCache()
    run_metrics.install(app, registry, settings)  # run state for /metrics, read at scrape
    app.add_middleware(RequestTiming, metrics=service_metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(TrustedHosts, allowed=settings.allowed_hosts)  # outermost: first to run
    _install_error_handlers(app)
    _document_error_shapes(app)
    # Probes and scrapers poll health and /metrics with whatever their tool appends; every API
    # route refuses query parameters it does not declare (its QueryParameters model, or NO_QUERY).
    app.include_router(health.router)
    app.include_router(metrics.router)
    for router in (
        runs.router,
        steps.router,
        alerts.router,
        commands.router,
        projects.router,
        notifications.router,
    ):
        app.include_router(router)
    mount_ui(app)
    return app


# The field an HTTP-level error is about, so every error answer names one.
_HTTP_ERROR_FIELD = {
    400: "body",
    401: "authorization",
    403: "authorization",
    404: "path",
    405: "method",
    413: "body",
    415: "content-type",
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail: Any = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route matches {request.method} {request.url.path!r}"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"method {request.method} is not allowed on {request.url.path!r}"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "body is not valid JSON"
        return JSONResponse(
            {"detail": detail, "field": _HTTP_ERROR_FIELD.get(exc.status_code)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(SharpwatchError)
    async def _domain_error(_request: Request, exc: SharpwatchError) -> Response:
        content: dict[str, Any] = {"detail": exc.message, "field": exc.field}
        if exc.status_code == 422:  # the one 422 shape: `errors` lists the field as well
            content["errors"] = [
                {"field": exc.field or "body", "reason": exc.message, "type": "invalid_input"}
            ]
        return JSONResponse(content, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors = [_describe(error) for error in exc.errors()]
        return JSONResponse(
            {
                "detail": "; ".join(f"{e['field']}: {e['reason']}" for e in errors),
                "errors": errors,
            },
            status_code=422,
        )

    database_outage = OutageLog(log, "database unavailable; answering 503 until it is back")

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_down(_request: Request, exc: Exception) -> Response:
        orig = getattr(exc, "orig", None)
        database_outage.failure(orig if isinstance(orig, BaseException) else exc)
        return JSONResponse(
            {"detail": "database unavailable; nothing was stored, retry later", "field": None},
            status_code=503,
            headers={"Retry-After": "1"},
        )


def _document_error_shapes(app: FastAPI) -> None:
    """Make the OpenAPI document describe the 422 body the handler above really sends (FastAPI's
    default documents a list under ``detail``), and add the shape of every other error."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name, model in (("HTTPValidationError", ValidationProblem), ("Problem", Problem)):
            shape = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(shape.pop("$defs", {}))
            components[name] = shape
        components.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _describe(error: Any) -> dict[str, str]:
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        position = error.get("loc", ("body", "?"))[-1]
        detail = error.get("ctx", {}).get("error", "parse error")
        return {
            "field": "body",
            "reason": f"body is not valid JSON: {detail} at character {position}",
            "type": "json_invalid",
        }
    location = [str(part) for part in error.get("loc", ())]
    if location and location[0] in ("body", "query", "path", "header"):
        location = location[1:]
    field = ""
    for part in location:
        field += f"[{part}]" if part.isdigit() else (f".{part}" if field else part)
    return {"field": field or "body", "reason": reason, "type": str(error.get("type", ""))}
