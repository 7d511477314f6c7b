"""Prometheus metrics of the service, in a registry of its own (several services may share a process)."""

from __future__ import annotations

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class ServeMetrics:
    """Requests by status, request latency, queue depth and the rows of each backend call."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("sr_requests", "Upscale requests by HTTP status", ["status"], registry=self.registry)
        self.latency = Histogram("sr_request_seconds", "Upscale request latency, admission to response",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("sr_queue_depth", "Requests admitted and not finished (running + waiting)",
                                 registry=self.registry)
        self.batch_size = Histogram("sr_batch_size", "Tiles per backend call", buckets=_BATCH_BUCKETS,
                                    registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
