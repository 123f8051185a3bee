"""The service's own Prometheus instruments, registered on a registry the app owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ServiceMetrics:
    """Request latency, ingest volume and detector time of this process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.request_seconds = Histogram(
            "sharpwatch_http_request_duration_seconds",
            "HTTP request latency by route template and status class.",
            ["method", "route", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
        )
        self.ingested_steps = Counter(
            "sharpwatch_ingested_steps", "Step records stored.", registry=registry
        )
        self.ingested_query_rows = Counter(
            "sharpwatch_ingested_query_rows", "Per-query rows stored.", registry=registry
        )
        self.duplicate_steps = Counter(
            "sharpwatch_duplicate_steps",
            "Re-sent identical steps (not stored again).",
            registry=registry,
        )
        self.detector_failures = Counter(
            "sharpwatch_detector_failures",
            "Ingests whose detection raised (the steps were stored; see the logs).",
            registry=registry,
        )
        self.detector_seconds = Histogram(
            "sharpwatch_detector_duration_seconds",
            "Time to run the detectors on one ingested step.",
            registry=registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
        )
