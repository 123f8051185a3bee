"""The delivery worker: an asyncio task in the app's lifespan that drains the outbox.

Each pass claims due rows (service.storage.outbox.claim_due, in a thread: the event loop never
waits on the database) and sends each as its own task (at most ``MAX_IN_FLIGHT`` at once, so one
hanging receiver delays no other) with one ``httpx.AsyncClient`` under a short timeout, then
settles it: sent on a 2xx, else retried with exponential backoff and dead-lettered
after ``notify_max_attempts`` tries. Everything it knows is in the database, so a restart loses
nothing: a row claimed by a worker that died is due again when its lease expires. It runs beside
ingest and detection, never inside them, so a hanging receiver costs them nothing.

Secrets stay out of the logs: errors are recorded as the HTTP status or the exception's type,
never the URL (httpx puts it in its messages), and httpx's own request log line shows only the
scheme and host of a URL (``_HideUrlPaths``): a webhook's path is its secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.db.base import utcnow
from service.notifications.messages import render, run_link
from service.settings import Settings
from service.storage import outbox

log = logging.getLogger(__name__)

BATCH = 20
MAX_IN_FLIGHT = 100
PURGE_EVERY = 600.0  # seconds between deletions of old sent rows


class _HideUrlPaths(logging.Filter):
    """On the ``httpx`` logger: a request's URL is logged as ``scheme://host/…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.host}/…" if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


def hide_url_paths() -> None:
    """Install ``_HideUrlPaths`` on httpx's logger, once."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _HideUrlPaths) for f in httpx_log.filters):
        httpx_log.addFilter(_HideUrlPaths())


class DeliveryWorker:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        # A lease outlives a delivery (its request is bounded by the timeout, then one short
        # database write), so no other worker takes a row while it is being sent.
        self.lease = 3 * settings.notify_timeout + 10.0
        hide_url_paths()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._next_purge = 0.0
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(settings.notify_timeout),
            follow_redirects=False,
        )

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self.run_once()
            except Exception as exc:  # the worker outlives a database outage
                log.warning("notification pass failed", extra={"error": type(exc).__name__})
                claimed = 0
            if claimed < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), self.settings.notify_poll_interval
                    )
        if self._in_flight:  # requests are bounded by the timeout; settling is quick
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Let the deliveries in flight finish (their requests are bounded by the timeout, and
        a database call cut off mid-thread would leak its connection), then close."""
        self._stopping.set()
        try:
            await asyncio.wait_for(task, self.settings.notify_timeout + 5.0)
        except TimeoutError:  # an unsettled claim lapses with its lease: sent again later
            for delivery in list(self._in_flight):
                delivery.cancel()
        await self.client.aclose()

    async def run_once(self) -> int:
        """Claim what there is room for (at most ``MAX_IN_FLIGHT`` deliveries at once) and start
        delivering it; returns how many rows it claimed. Deliveries run as their own tasks, so a
        receiver that hangs holds only its own rows, not the next claim."""
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY
            await asyncio.to_thread(self._purge)
        room = min(BATCH, MAX_IN_FLIGHT - len(self._in_flight))
        if room <= 0:
            return 0
        claimed = await asyncio.to_thread(self._claim, room)
        for row in claimed:
            delivery = asyncio.create_task(self._deliver(row))
            self._in_flight.add(delivery)
            delivery.add_done_callback(self._in_flight.discard)
        return len(claimed)

    def _purge(self) -> None:
        keep = timedelta(days=self.settings.notify_keep_sent_days)
        with self.session_factory() as session:
            outbox.purge_sent(session, older_than=utcnow() - keep)

    def _claim(self, limit: int) -> list[outbox.Claimed]:
        with self.session_factory() as session:
            return outbox.claim_due(session, limit=limit, lease=self.lease)

    async def _deliver(self, row: outbox.Claimed) -> None:
        error = await self._send(row)
        try:
            await asyncio.to_thread(self._settle, row, error)
        except Exception as exc:  # unsettled: the lease lapses and the row is sent again
            log.warning(
                "notification not settled", extra={"outbox_id": row.id, "error": type(exc).__name__}
            )

    async def _send(self, row: outbox.Claimed) -> str | None:
        run_id = int(row.payload["run"]["id"])
        request = render(
            row.channel_kind,
            row.id,
            row.payload,
            link=run_link(self.settings.public_url, run_id),
            secret=row.signing_secret,
            timestamp=int(time.time()),
        )
        try:
            response = await self.client.post(
                row.url, content=request.body, headers=request.headers
            )
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _settle(self, row: outbox.Claimed, error: str | None) -> None:
        with self.session_factory() as session:
            if error is None:
                outbox.mark_sent(session, row.id, row.claim)
                log.info("notification sent", extra={"outbox_id": row.id, "event": row.event})
                return
            status = outbox.mark_failed(
                session,
                row.id,
                row.claim,
                attempts=row.attempts,
                error=error,
                max_attempts=self.settings.notify_max_attempts,
                backoff_base=self.settings.notify_backoff_base,
                backoff_max=self.settings.notify_backoff_max,
            )
        log.warning(
            "notification failed",
            extra={
                "outbox_id": row.id,
                "event": row.event,
                "error": error,
                "attempt": row.attempts,
                "status": status,
            },
        )
