"""Request dependencies, as ``Annotated`` types the routes declare.

Dependencies that only read ``app.state`` or check a principal are ``async def``: FastAPI runs a
plain ``def`` dependency in the thread pool, a trip per dependency per request (issue 21: the
ingest route paid eight). Those that touch the database (the session, a token lookup) stay
plain functions, off the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from service.auth import DEV_PRINCIPAL, Principal, TokenCache, hash_token
from service.broker import CommandBroker
from service.observability import ServiceMetrics
from service.schemas.query import NoQuery
from service.settings import Settings
from service.storage import tokens as token_store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request. Making one does no I/O; closing one does only when a
    transaction is still open (a read route's), and then runs in the thread pool. Ingest, whose
    storage commits, so costs no thread-pool trip here."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    """For long-running routes that must not hold a connection while they wait."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def get_broker(request: Request) -> CommandBroker:
    broker: CommandBroker = request.app.state.broker
    return broker


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def no_query(_: Annotated[NoQuery, Query()]) -> None:
    """For a route that takes no query parameters: any is a 422 naming it. A route that takes
    some declares them as one :class:`QueryParameters` model instead (``service.schemas.query``);
    health and ``/metrics`` take whatever probes and scrapers append."""


NO_QUERY = Depends(no_query)


async def get_token_cache(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.token_cache
    return cache


SettingsDep = Annotated[Settings, Depends(get_settings)]
TokenCacheDep = Annotated[TokenCache, Depends(get_token_cache)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
BrokerDep = Annotated[CommandBroker, Depends(get_broker)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


# -- authentication and authorisation ---------------------------------------------------------

_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


async def get_principal(request: Request) -> Principal:
    """The caller: the dev principal when authentication is off; else the bearer token's owner,
    or 401. Only a token missing from the cache costs a database lookup (in the thread pool)."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:  # authenticated before the body was read (service.body_guard)
        return known
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return DEV_PRINCIPAL
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>' "
            "(create one with `sharpwatch tokens create`)",
            headers=_UNAUTHENTICATED,
        )
    cache: TokenCache = request.app.state.token_cache
    token_hash = hash_token(token.strip())
    principal = cache.get(token_hash)
    if principal is None:
        factory: sessionmaker[Session] = request.app.state.session_factory
        principal = await run_in_threadpool(_lookup_token, factory, token.strip())
        if principal is None:
            raise HTTPException(401, "invalid or revoked token", headers=_UNAUTHENTICATED)
        cache.put(token_hash, principal)
    return principal


def _lookup_token(factory: sessionmaker[Session], token: str) -> Principal | None:
    with factory() as session:
        return token_store.lookup(session, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
RunIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Run id")]


def _forbidden(what: str) -> HTTPException:
    return HTTPException(403, f"this token may not {what}")


async def require_operator(principal: PrincipalDep) -> Principal:
    if not principal.is_operator:
        raise _forbidden("do this: it needs an operator token")
    return principal


async def require_fleet_reader(principal: PrincipalDep) -> Principal:
    if not principal.can_read_fleet():
        raise _forbidden("read other runs: it needs a read or operator token")
    return principal


async def require_run_reader(run_id: RunIdPath, principal: PrincipalDep) -> Principal:
    if not principal.can_read_run(run_id):
        raise _forbidden(f"read run {run_id}: an ingest token reads only its own run")
    return principal


async def require_run_writer(run_id: RunIdPath, principal: PrincipalDep) -> Principal:
    if not principal.can_write_run(run_id):
        raise _forbidden(f"write to run {run_id}: it needs that run's ingest token")
    return principal


Operator = Annotated[Principal, Depends(require_operator)]
FleetReader = Annotated[Principal, Depends(require_fleet_reader)]
RunReader = Annotated[Principal, Depends(require_run_reader)]
RunWriter = Annotated[Principal, Depends(require_run_writer)]
