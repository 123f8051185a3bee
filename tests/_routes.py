"""Every API route of an app, whatever way the routers were included.

FastAPI 0.165 keeps an included router as one ``_IncludedRouter`` entry of ``app.routes``
(``original_router`` holds its routes), so a plain walk of ``app.routes`` sees none of them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import APIRoute


def api_routes(app: Any) -> list[APIRoute]:
    routes = list(_walk(app.routes))
    assert len(routes) > 10, "no API routes found: has FastAPI changed how it keeps them?"
    return routes


def _walk(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes)
        elif isinstance(route, APIRoute):
            yield route
