"""The built-in live page: ``/`` serves one static HTML page, ``/static/...`` its assets.

The page is vanilla JavaScript that polls the REST API (``/api/v1``), so it works with any number
of workers and needs no Node at run time: the chart library is vendored under
``service/web/vendor/`` (see its README). Asset URLs in the page carry a digest of the asset files
(``?v=...``), so a versioned asset is cached for a year and a new release is fetched at once; the
page itself is always revalidated.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_PREFIX = "/static"
VERSION_PLACEHOLDER = "__ASSET_VERSION__"

# The page talks only to its own origin; nothing inline, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
IMMUTABLE = "public, max-age=31536000, immutable"


def asset_version(directory: Path = WEB_DIR) -> str:
    """A short digest of every asset file (names and contents), for cache-busting URLs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class CachedStaticFiles(StaticFiles):
    """StaticFiles with explicit caching: a URL with the current ``?v=`` is immutable, any other
    is revalidated (ETag / Last-Modified, 304)."""

    def __init__(self, *, directory: Path, version: str) -> None:
        super().__init__(directory=directory)
        self.version = version

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        query = scope.get("query_string", b"").decode("latin-1")
        versioned = f"v={self.version}" in query.split("&")
        response.headers["Cache-Control"] = IMMUTABLE if versioned else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_ui(app: FastAPI) -> None:
    """Serve the live page at ``/`` and its assets under ``/static``."""
    version = asset_version()
    page = (
        (WEB_DIR / "index.html").read_text(encoding="utf-8").replace(VERSION_PLACEHOLDER, version)
    )

    @app.get("/", include_in_schema=False)
    async def live_page() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    app.mount(STATIC_PREFIX, CachedStaticFiles(directory=WEB_DIR, version=version), name="static")
