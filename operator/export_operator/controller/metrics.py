"""The operator's Prometheus metrics (prefix `exportjobs_`), served by prometheus-client.

Counted on transitions this process observes; a finished phase is sticky, so a restart does not
count an outcome twice. Processor results (bytes, rows, throughput) come from the termination
message the operator reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from export_operator.resource import NO_OWNER_LABEL, Phase

if TYPE_CHECKING:
    from export_operator.controller.snapshots import ExportView
    from export_operator.controller.status import Decision

RECONCILES = Counter(
    "exportjobs_operator_reconciles_total",
    "Reconciliations of an ExportJob, by what triggered them.",
    ["trigger"],
)
RECONCILE_ERRORS = Counter(
    "exportjobs_operator_reconcile_errors_total",
    "API errors while reconciling (retried), by operation.",
    ["operation"],
)
STATUS_PATCHES = Counter(
    "exportjobs_operator_status_patches_total", "Status patches written to ExportJobs."
)
JOBS_CREATED = Counter("exportjobs_operator_jobs_created_total", "Jobs created for ExportJobs.")
PHASE_TRANSITIONS = Counter(
    "exportjobs_operator_phase_transitions_total",
    "ExportJob phase transitions written by the operator, by new phase.",
    ["phase"],
)


LEADER = Gauge(
    "exportjobs_operator_leader",
    "1 while this replica holds the Lease and acts (or runs standalone), 0 while it stands by.",
)
NO_OWNER = NO_OWNER_LABEL
"""The owner label of exports without `spec.owner` (made before principals, or by kubectl)."""
OTHER_OWNER = "_other"
"""The owner label of every owner not configured (principal names are DNS labels: no `_`)."""


class Owners:
    """Owner label values of bounded cardinality: the owners configured in
    `EXPORTJOBS_OPERATOR_OWNER_SHARES` (the chart fills it from `auth.principals`) by name,
    `_none` for no owner, `_other` for any other `spec.owner` (anyone who may create an
    ExportJob can write any string there)."""

    def __init__(self) -> None:
        self.known: frozenset[str] = frozenset()

    def configure(self, owners: Collection[str]) -> None:
        self.known = frozenset(owners)

    def label(self, owner: str) -> str:
        if not owner:
            return NO_OWNER
        return owner if owner in self.known else OTHER_OWNER


OWNERS = Owners()


class LeaderFigure(Collector):
    """A gauge only the leader's admission pass sets, read at each scrape: on a standby (a
    replica that lost the Lease would otherwise go on exporting the queue it last saw, and sum()
    over replicas would count it twice) it reads 0, or by owner it has no samples.

    `set(value)`; by owner `set(counts)`, the counts by `spec.owner` labelled through OWNERS,
    which replace every owner's value at once (an owner with nothing left drops out)."""

    def __init__(self, name: str, documentation: str, *, by_owner: bool = False) -> None:
        self.name, self.documentation = name, documentation
        self.labels = ["owner"] if by_owner else []
        self.values: dict[str, float] = {}
        self.leading: asyncio.Event | None = None
        REGISTRY.register(self)

    def set(self, value: float | Mapping[str, int]) -> None:
        if not isinstance(value, Mapping):
            self.values = {"": float(value)}
            return
        values: dict[str, float] = {}
        for owner, count in value.items():
            label = OWNERS.label(owner)
            values[label] = values.get(label, 0.0) + count
        self.values = values

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        leading = self.leading is None or self.leading.is_set()
        if not self.labels:
            family.add_metric([], self.values.get("", 0.0) if leading else 0.0)
        elif leading:
            for owner, value in sorted(self.values.items()):
                family.add_metric([owner], value)
        yield family


QUEUE_DEPTH = LeaderFigure(
    "exportjobs_operator_queue_depth", "ExportJobs waiting for a free slot (the leader's)."
)
RUNNING_JOBS = LeaderFigure(
    "exportjobs_operator_running_jobs",
    "Unfinished Jobs counting against the concurrency limit (the leader's).",
)
QUEUE_DEPTH_BY_OWNER = LeaderFigure(
    "exportjobs_operator_owner_queue_depth",
    "ExportJobs waiting for a free slot, by owner (the leader's).",
    by_owner=True,
)
RUNNING_JOBS_BY_OWNER = LeaderFigure(
    "exportjobs_operator_owner_running_jobs",
    "Unfinished Jobs counting against the concurrency limit, by owner (the leader's).",
    by_owner=True,
)
OWNER_PHASE_TRANSITIONS = Counter(
    "exportjobs_operator_owner_phase_transitions_total",
    "ExportJob phase transitions written by the operator, by owner and new phase (Queued, "
    "Running, Succeeded, Failed, Cancelled: exports started and finished per owner).",
    ["owner", "phase"],
)


def follow_leadership(leading: asyncio.Event) -> None:
    """The leader gauge and the queue figures read `leading` at each scrape."""
    LEADER.set_function(lambda: 1.0 if leading.is_set() else 0.0)
    QUEUE_DEPTH.leading = RUNNING_JOBS.leading = leading
    QUEUE_DEPTH_BY_OWNER.leading = RUNNING_JOBS_BY_OWNER.leading = leading


FAILURES = Counter(
    "exportjobs_operator_failures_total", "Failed ExportJobs by error code.", ["code"]
)
EXPORT_DURATION = Histogram(
    "exportjobs_export_duration_seconds",
    "ExportJob creation to completion (succeeded), by format.",
    ["format"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
CREATE_TO_JOB = Histogram(
    "exportjobs_operator_create_to_job_seconds",
    "ExportJob creation to its Job being created (includes queueing).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
)
PROCESSOR_BYTES_READ = Counter(
    "exportjobs_processor_bytes_read_total", "Source bytes read by succeeded exports.", ["format"]
)
PROCESSOR_BYTES_WRITTEN = Counter(
    "exportjobs_processor_bytes_written_total",
    "Result bytes written by succeeded exports.",
    ["format"],
)
PROCESSOR_ROWS = Counter(
    "exportjobs_processor_rows_total", "Rows converted by succeeded exports.", ["format"]
)
PROCESSOR_THROUGHPUT = Histogram(
    "exportjobs_processor_throughput_bytes_per_second",
    "Source bytes per second of succeeded exports, by format.",
    ["format"],
    buckets=(1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9),
)

NOTIFICATIONS = Counter(
    "exportjobs_operator_notifications_total",
    "Completion callbacks by final outcome (delivered, failed).",
    ["outcome"],
)
NOTIFICATION_ATTEMPTS = Counter(
    "exportjobs_operator_notification_attempts_total",
    "Completion callback attempts by result (2xx, 3xx, 4xx, 429, 5xx, network, refused, unsigned).",
    ["result"],
)
NOTIFICATION_ATTEMPT_SECONDS = Histogram(
    "exportjobs_operator_notification_attempt_seconds",
    "Duration of one callback attempt, DNS to response.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
NOTIFICATION_DELAY_SECONDS = Histogram(
    "exportjobs_operator_notification_delivery_seconds",
    "Final phase (completionTime) to the callback being delivered, retries included.",
    buckets=(0.5, 1, 5, 15, 60, 300, 1800, 3600, 14400, 86400),
)


def record_transition(export: ExportView, decision: Decision, *, now: dt.datetime) -> None:
    """Count a phase transition this process wrote, and a finished export's figures."""
    PHASE_TRANSITIONS.labels(decision.phase.value).inc()
    OWNER_PHASE_TRANSITIONS.labels(OWNERS.label(export.owner), decision.phase.value).inc()
    if decision.phase is Phase.FAILED and decision.error is not None:
        FAILURES.labels(decision.error.code).inc()
    if decision.phase is Phase.SUCCEEDED:
        fmt = str(export.spec.get("format") or "unknown")
        EXPORT_DURATION.labels(fmt).observe((now - export.created).total_seconds())
    result = decision.result
    if result is not None:  # the processor's figures
        PROCESSOR_BYTES_WRITTEN.labels(result.format).inc(result.bytes)
        PROCESSOR_ROWS.labels(result.format).inc(result.rows)
        if result.bytes_read is not None:
            PROCESSOR_BYTES_READ.labels(result.format).inc(result.bytes_read)
            if result.duration_seconds:
                throughput = result.bytes_read / result.duration_seconds
                PROCESSOR_THROUGHPUT.labels(result.format).observe(throughput)


def serve(*, host: str, port: int) -> None:
    """Serve `/metrics` on a background thread (port 0 = do not serve)."""
    if port:
        start_http_server(port, addr=host)
