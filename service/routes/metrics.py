"""Prometheus exposition: the service's own instruments (every worker's, in multiprocess mode),
then the run state read from the store at scrape time (``service.run_metrics``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.deps import FleetReader
from service.run_metrics import RunState

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (read or operator token when authentication is on)",
    response_class=Response,
)
def prometheus_metrics(request: Request, _: FleetReader) -> Response:
    registry: CollectorRegistry = request.app.state.exposition
    run_state: RunState = request.app.state.run_state
    return Response(generate_latest(registry) + run_state.render(), media_type=CONTENT_TYPE_LATEST)
