"""Request dependencies, as ``Annotated`` types the routes declare."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from service.broker import CommandBroker
from service.observability import ServiceMetrics
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


def get_broker(request: Request) -> CommandBroker:
    broker: CommandBroker = request.app.state.broker
    return broker


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BrokerDep = Annotated[CommandBroker, Depends(get_broker)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
