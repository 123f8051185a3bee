"""The run's one-word health verdict from its open alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from service.detectors.transitions import OpenAlert
from service.wire import Severity, Verdict

__all__ = ["Verdict", "verdict"]


def verdict(
    open_alerts: Mapping[str, OpenAlert] | Iterable[OpenAlert], *, stopped: bool
) -> Verdict:
    """``stopped`` if the run was stopped; else ``critical`` if any open alert is critical;
    ``warning`` if any alert is open; ``healthy`` otherwise."""
    if stopped:
        return Verdict.STOPPED
    alerts = open_alerts.values() if isinstance(open_alerts, Mapping) else open_alerts
    worst = Verdict.HEALTHY
    for alert in alerts:
        if alert.severity is Severity.CRITICAL:
            return Verdict.CRITICAL
        worst = Verdict.WARNING
    return worst
