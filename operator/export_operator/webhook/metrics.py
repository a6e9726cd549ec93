"""The webhook's Prometheus metrics (prefix `exportjobs_webhook_`), in a registry per app."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RequestMetrics:
    """Requests by route, method and code, and their latency; the labelled children looked up
    once per (route, method, code): `labels()` costs more than the increment (bench_webhook.py)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "exportjobs_webhook_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "exportjobs_webhook_request_duration_seconds",
            "HTTP request latency by route and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, *, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route=route, method=method, code=str(code)),
                self.latency.labels(route=route, method=method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class WebhookMetrics:
    """Requests by route and code, latency, ExportJobs created by source, dedup hits, auth
    failures, and the size of the ExportJob cache."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = RequestMetrics(self.registry)
        self.created = Counter(
            "exportjobs_webhook_exports_created",
            "ExportJobs created, by how they were requested (api, s3, sns, eventbridge, minio) "
            "and owner (the principal; `_none` without one).",
            ["source", "owner"],
            registry=self.registry,
        )
        self.limited = Counter(
            "exportjobs_webhook_limited",
            "Requests refused 429 by a principal's limits, by principal and reason "
            "(rate-limited, queue-full).",
            ["owner", "reason"],
            registry=self.registry,
        )
        self.dedup_hits = Counter(
            "exportjobs_webhook_dedup_hits",
            "Requests answered with an existing ExportJob (redelivered events, replayed keys).",
            ["source"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "exportjobs_webhook_auth_failures",
            "Requests refused for missing or invalid credentials or signatures.",
            ["route", "reason"],
            registry=self.registry,
        )
        self.api_unavailable = Counter(
            "exportjobs_webhook_api_unavailable",
            "Requests answered 503 because the API server was down or refused.",
            registry=self.registry,
        )
        self._created: dict[tuple[str, str], Any] = {}
        self.cache_miss_reads = Counter(
            "exportjobs_webhook_cache_miss_reads",
            "Direct API reads of ids the cache missed (read-your-write across replicas), by "
            "result: found, absent, unavailable.",
            ["result"],
            registry=self.registry,
        )
        self.presign_refused = Counter(
            "exportjobs_webhook_presign_refused",
            "Succeeded exports whose result URI lies outside their own <destination>/<id>/ "
            "prefix: no download URL was signed (a forged or misconfigured result).",
            registry=self.registry,
        )
        self.cached_exports = Gauge(
            "exportjobs_webhook_cached_exports",
            "ExportJobs in the watch-fed cache.",
            registry=self.registry,
        )

    def count_created(self, *, source: str, owner: str) -> None:
        """Count one ExportJob created (its child looked up once per source and owner)."""
        child = self._created.get((source, owner))
        if child is None:
            child = self._created[source, owner] = self.created.labels(source=source, owner=owner)
        child.inc()
