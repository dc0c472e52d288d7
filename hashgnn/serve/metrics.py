"""Prometheus metrics of the service (``GET /metrics``), with prometheus_client on a registry of its own.

One registry per app, so several apps in one process (tests) never share counters. With several
worker processes each worker exposes its own numbers (scrape each, or see docs/SERVING.md).
"""

from __future__ import annotations

from typing import Any

# Latency buckets in seconds: sub-millisecond searches up to a slow 2.5 s fold-in.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters, histograms and gauges of one app."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        labels = ["endpoint", "mode"]
        self.requests = Counter(
            "hashgnn_requests", "HTTP requests answered, by endpoint, mode and status", [*labels, "status"], registry=r
        )
        self.errors = Counter(
            "hashgnn_request_errors", "Requests answered with a 4xx or 5xx status", [*labels, "status"], registry=r
        )
        self.latency = Histogram(
            "hashgnn_request_seconds", "Request latency in seconds", labels, buckets=BUCKETS, registry=r
        )
        self.batch = Histogram(
            "hashgnn_batch_size",
            "Requests per index search (micro-batch size)",
            ["mode"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.index_items = Gauge("hashgnn_index_items", "Items in the served index", registry=r)
        self.index_users = Gauge("hashgnn_index_users", "Trained users of the served run", registry=r)
        self.index_bits = Gauge("hashgnn_index_bits", "Code length K of the served run", registry=r)
        self.run_info = Gauge("hashgnn_run_info", "The served run (value 1)", ["run_id", "method"], registry=r)
        self.swaps = Counter("hashgnn_swaps", "Run swaps, by result (ok, failed)", ["result"], registry=r)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def served(self, served: Any) -> None:
        """Point the gauges at a newly served run."""
        self.run_info.clear()
        self.run_info.labels(served.run_id, served.method).set(1)
        self.index_items.set(served.codes.n_items)
        self.index_users.set(served.codes.n_users)
        self.index_bits.set(served.codes.bits)

    def observe(self, endpoint: str, mode: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        key = (endpoint, mode, status)
        children = self._children.get(key)
        if children is None:  # labels() looks its child up under a lock; once per label set is enough
            st = str(status)
            errors = self.errors.labels(endpoint, mode, st) if status >= 400 else None
            children = self._children[key] = (
                self.requests.labels(endpoint, mode, st),
                errors,
                self.latency.labels(endpoint, mode),
            )
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
