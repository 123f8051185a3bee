"""Our numbers in the trainer's own loggers (W&B, TensorBoard, MLflow...), under ``sharpwatch/``.

:func:`logged_metrics` turns a step record's metrics (the monitor's, completed with the
framework's own entropy where the framework logs it) and the service's view of the run
(:class:`ServiceStatus`) into the flat ``{"sharpwatch/<name>": float}`` dict a framework logger
takes. Only values that exist are logged: no zeros stand in for absent numbers.

What is logged (science.md section in brackets):

- ``entropy`` [§1, §3], ``success_rate`` and ``p_star`` = p*(G) [§1] (plotted together: a
  success rate below p*(G) starves the run), the degenerate all-fail / all-pass fractions [§1];
- Z'(q): ``log_zprime_raw_mean`` (from the raw advantages) and ``log_zprime_mean`` (from the
  advantages used for the update, after IAC), with their Z' > 1 fractions [§2, §7];
- ``reward_accuracy`` and ``model_collapse_step`` [§4] (the service's, else the trainer's own
  tracker's);
- ``open_alerts`` (the service's count of the run's open alerts; absent without a service);
- ``alpha``, the IAC α in effect [§3].
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from trainer_hooks._watch import RunSession

__all__ = ["LOGGED_METRICS", "LOGGED_PREFIX", "ServiceStatus", "logged_metrics"]

log = logging.getLogger("trainer_hooks.integrations")

LOGGED_PREFIX = "sharpwatch/"

#: Record metric names copied to the loggers as ``sharpwatch/<name>`` when the step has them.
LOGGED_METRICS: tuple[str, ...] = (
    "entropy",
    "success_rate",
    "p_star",
    "degenerate_all_fail",
    "degenerate_all_pass",
    "log_zprime_raw_mean",
    "log_zprime_mean",
    "zprime_raw_gt1_frac",
    "zprime_gt1_frac",
    "reward_accuracy",
    "model_collapse_step",
    "alpha",
)


class ServiceStatus:
    """The service's view of the run (open alerts, Model Collapse Step), refreshed in the
    background every ``interval`` seconds from ``GET /api/v1/runs/{id}/collapse``.

    Never blocks the caller and never raises: before the first answer, without a service, or
    while it is unreachable, the values are the last known ones (``None`` at first).
    """

    def __init__(self, session: RunSession, *, interval: float = 5.0) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
        self.session = session
        self.interval = float(interval)
        self.open_alerts: int | None = None
        self.open_alert_rules: list[str] = []
        self.model_collapse_step: int | None = None
        self.verdict: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> ServiceStatus:
        with self._lock:
            if self._thread is None and self.session.client is not None:
                self._thread = threading.Thread(
                    target=self._loop, name="sharpwatch-status", daemon=True
                )
                self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def refresh(self) -> bool:
        """One fetch now (the background loop's body); True when the service answered."""
        client = self.session.client
        if client is None or client.run is None:
            return False
        try:
            response = client.collapse_status(timeout=5.0)
        except httpx.HTTPError as exc:
            log.debug("sharpwatch status fetch failed: %s", exc)
            return False
        if response.status_code != 200:
            log.debug("sharpwatch status fetch: HTTP %s", response.status_code)
            return False
        data: dict[str, Any] = response.json()
        alerts = data.get("open_alerts") or []
        self.open_alert_rules = sorted({str(a.get("rule")) for a in alerts})
        self.open_alerts = len(alerts)
        step = data.get("model_collapse_step")
        self.model_collapse_step = None if step is None else int(step)
        self.verdict = data.get("verdict")
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.session.client is None:
                return  # the session was closed
            try:
                self.refresh()
            except Exception:
                log.exception("sharpwatch status fetch failed (ignored)")
            self._stop.wait(self.interval)


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def logged_metrics(
    metrics: Mapping[str, object], status: ServiceStatus | None = None
) -> dict[str, float]:
    """``{"sharpwatch/<name>": value}`` for a step's record metrics and the service's status."""
    out: dict[str, float] = {}
    for name in LOGGED_METRICS:
        value = _number(metrics.get(name))
        if value is not None:
            out[LOGGED_PREFIX + name] = value
    if status is not None:
        if status.open_alerts is not None:
            out[LOGGED_PREFIX + "open_alerts"] = float(status.open_alerts)
        if status.model_collapse_step is not None:
            # The service's Model Collapse Step (over every stored step) wins over the trainer's.
            out[LOGGED_PREFIX + "model_collapse_step"] = float(status.model_collapse_step)
    return out
