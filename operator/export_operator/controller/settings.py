"""The operator's settings: one pydantic-settings class read once from `EXPORTJOBS_OPERATOR_*`.

Every field documents its unit, default and why (its docstring is its description).
`OperatorSettings.from_env()` is the only reader of the environment; everything else receives the
object. docs/configuration.md ("## Operator") lists the same variables.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator
from pydantic_settings import NoDecode

from export_operator.callbacks import ENV_ALLOW_HTTP, ENV_ALLOWLIST, CallbackPolicy
from export_operator.controller.admission import OwnerShare
from export_operator.controller.job_settings import JobSettings, PodSettings
from export_operator.controller.signing import read_secrets
from export_operator.resource import parse_s3_uri
from export_processor.common import Backoff
from export_processor.env_settings import EnvSettings, Flag, ReadBy, from_text

PREFIX = "EXPORTJOBS_OPERATOR_"


def _dataset_template(template: str) -> str:
    if template:
        try:
            template.format(dataset_id="00000000-0000-0000-0000-000000000000")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"only {{dataset_id}} may be used ({exc!r})") from None
    return template


def _destination(uri: str) -> str:
    if uri:
        if not uri.endswith("/"):
            raise ValueError("must end in '/'")
        parse_s3_uri(uri, prefix=True)
    return uri


def _secrets(inline: str) -> str:
    read_secrets(inline=inline, path="")
    return inline


class _Share(BaseModel):
    """One owner's entry of OWNER_SHARES (its JSON names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: StrictInt = Field(default=1, ge=1)
    maxRunning: StrictInt | None = Field(default=None, ge=1)  # noqa: N815 - the JSON's name


class AdmissionSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """How many Jobs run at once and how the slots are shared between owners."""

    max_running: int = Field(default=10, ge=0)
    """MAX_RUNNING: how many Jobs may be unfinished at once; beyond it ExportJobs are Queued and
    admitted first-in first-out. 0 = no limit. Default 10: protects S3 and the nodes."""

    owner_shares: Annotated[dict[str, _Share | None], NoDecode, from_text(json.loads)] = Field(
        default_factory=dict
    )
    """OWNER_SHARES: a JSON object of owner (principal) → `{"weight": n, "maxRunning": m}`,
    how the slots are shared between owners (default: weight 1, no cap of their own). Admission
    is fair between owners whatever this says: round-robin by slots held per weight, first in,
    first out within an owner (docs/security.md, "Principals")."""

    @property
    def shares(self) -> dict[str, OwnerShare]:
        """`owner_shares` as admission takes them."""
        return {
            owner: OwnerShare(share.weight, share.maxRunning) if share else OwnerShare()
            for owner, share in self.owner_shares.items()
        }


class ApiSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """The reconcile workers and their calls to the API server: timeouts, retries, resync."""

    workers: int = Field(default=32, ge=1)
    """WORKERS: ExportJobs reconciled at once (each creates its Job and writes its status), so
    also the API requests in flight at once. Default 32: enough to keep the API server busy
    without monopolising it."""

    resync_interval_seconds: float = 60.0
    """RESYNC_INTERVAL_SECONDS: how often every unfinished ExportJob is re-derived even without
    a watch event (seconds), a safety net. Default 60."""

    retry_base_seconds: float = 0.5
    """RETRY_BASE_SECONDS: the first retry delay of an ExportJob whose reconcile failed (Job
    create refused, API down); it doubles with each failure in a row (seconds). Default 0.5."""

    retry_max_seconds: float = 30.0
    """RETRY_MAX_SECONDS: the cap of that delay (plus up to 20 % jitter) (seconds). Default 30."""

    request_timeout_seconds: float = 30.0
    """REQUEST_TIMEOUT_SECONDS: the timeout of one API request (a write, or one page of a
    list) (seconds)."""

    watch_server_timeout_seconds: int = 300
    """WATCH_SERVER_TIMEOUT_SECONDS: asks the API server to end each watch after this (seconds);
    the informer then watches again from the last resourceVersion it saw. Default 300."""

    watch_client_timeout_seconds: int = 330
    """WATCH_CLIENT_TIMEOUT_SECONDS: the client gives up on a silent watch after this (seconds);
    above the server timeout so the server ends watches normally. Default 330."""

    connect_timeout_seconds: float = 10.0
    """CONNECT_TIMEOUT_SECONDS: TCP/TLS connect timeout to the API server (seconds)."""

    @property
    def retry(self) -> Backoff:
        """A failed reconcile's backoff: RETRY_BASE_SECONDS, doubling up to RETRY_MAX_SECONDS."""
        return Backoff(base=self.retry_base_seconds, cap=self.retry_max_seconds)

    @model_validator(mode="after")
    def _check(self) -> ApiSettings:
        if self.retry_base_seconds <= 0 or self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(f"{PREFIX}RETRY_MAX_SECONDS must be >= RETRY_BASE_SECONDS > 0")
        return self


class ProcessSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """The process: its logs, its metrics and liveness endpoints, leader election on or off."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL. Logs are JSON lines in the webhook's
    format (time, level, logger, message and any extra fields). Default INFO."""

    metrics_host: str = "0.0.0.0"  # noqa: S104 - a pod serves Prometheus on its pod IP
    """METRICS_HOST: the address `/metrics` listens on. Default 0.0.0.0 (in a pod)."""

    metrics_port: int = 8080
    """METRICS_PORT: the port of `/metrics` (Prometheus). 0 = disabled. Default 8080."""

    liveness_host: str = "0.0.0.0"  # noqa: S104 - a pod serves its probe on its pod IP
    """LIVENESS_HOST: the address of kopf's liveness endpoint `/healthz`."""

    liveness_port: int = 8081
    """LIVENESS_PORT: the port of kopf's `/healthz`. 0 = disabled. Default 8081."""

    standalone: Flag = False
    """STANDALONE: `true` = no leader election: this process acts at once (one replica only,
    e.g. in tests). Default false: replicas elect a leader through a Lease; the others watch
    and stand by."""


class LeaseSettings(EnvSettings, env_prefix=PREFIX + "LEASE_", component="operator"):
    """The Lease the replicas elect their leader with (`LEASE_*`)."""

    name: str = "exportjobs-operator"
    """LEASE_NAME: the coordination.k8s.io Lease the replicas elect their leader with."""

    namespace: str = ""
    """LEASE_NAMESPACE: the Lease's namespace (the chart sets the release namespace). Empty =
    the watched namespace, or `default` when watching all namespaces."""

    duration_seconds: float = 8.0
    """LEASE_DURATION_SECONDS: a standby takes the Lease over when it has seen no renewal for
    this long (seconds). Default 8: failover within about 10 s of a crash."""

    renew_deadline_seconds: float = 6.0
    """LEASE_RENEW_DEADLINE_SECONDS: the leader stops acting when it could not renew for this
    long (below the duration, so it stops before a standby may start) (seconds). Default 6."""

    retry_period_seconds: float = 1.0
    """LEASE_RETRY_PERIOD_SECONDS: how often the Lease is renewed or tried (seconds). Default 1
    (a GET and, when held, a PUT: light)."""

    @model_validator(mode="after")
    def _check(self) -> LeaseSettings:
        if not 0 < self.renew_deadline_seconds < self.duration_seconds:
            raise ValueError(
                f"{PREFIX}LEASE_RENEW_DEADLINE_SECONDS must be > 0 and below "
                f"{PREFIX}LEASE_DURATION_SECONDS"
            )
        return self


class NotifySettings(EnvSettings, env_prefix=PREFIX + "NOTIFY_", component="operator"):
    """Completion callbacks (`NOTIFY_*`) and where they may go (the shared callback policy)."""

    window_seconds: float = Field(default=24 * 3600.0, gt=0)
    """NOTIFY_WINDOW_SECONDS: how long after the final phase (`completionTime`) a completion
    callback is retried before its notification is Failed (seconds). Default 86400 (24 h)."""

    backoff_base_seconds: float = Field(default=5.0, gt=0)
    """NOTIFY_BACKOFF_BASE_SECONDS: the first retry delay of a callback; it doubles per attempt,
    with jitter (each delay is 100-120 % of the nominal one). Default 5."""

    backoff_max_seconds: float = 3600.0
    """NOTIFY_BACKOFF_MAX_SECONDS: the longest delay between two callback attempts (seconds);
    a receiver's Retry-After may ask for more, up to the window. Default 3600."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    """NOTIFY_TIMEOUT_SECONDS: one callback attempt, DNS to response, must finish within this
    (seconds); a slow receiver then counts as a network error and is retried. Default 10."""

    concurrency: int = Field(default=16, ge=1)
    """NOTIFY_CONCURRENCY: callback attempts in flight at once; more wait their turn, so slow
    receivers cannot take the operator's sockets or CPU. Default 16."""

    secrets: Annotated[str, AfterValidator(_secrets)] = Field(default="", repr=False)
    """NOTIFY_SECRETS: comma-separated Standard Webhooks signing secrets (`whsec_<base64>`).
    Prefer NOTIFY_SECRETS_FILE (a mounted Secret). Every secret signs each callback, so during a
    rotation two are valid at once. Without any secret, callbacks are not sent (Failed)."""

    secrets_file: str = ""
    """NOTIFY_SECRETS_FILE: a file with one secret per line, or a mounted Secret directory (every
    file read). Read before each delivery, so a rotated Secret applies without a restart."""

    source: str = "/apis/exportjobs.dev/v1alpha1"
    """NOTIFY_SOURCE: the CloudEvents `source` prefix; the event's source is
    `<this>/namespaces/<namespace>/exportjobs`. Default `/apis/exportjobs.dev/v1alpha1`."""

    presign_endpoint_url: str = ""
    """NOTIFY_PRESIGN_ENDPOINT_URL: the S3 endpoint written into the callback's presigned
    download URL (as the webhook's). Empty = AWS_ENDPOINT_URL, else AWS."""

    presign_expiry_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    """NOTIFY_PRESIGN_EXPIRY_SECONDS: lifetime of that URL (seconds), fresh at each attempt."""

    callback_policy: Annotated[
        CallbackPolicy, ReadBy(CallbackPolicy.from_env, (ENV_ALLOWLIST, ENV_ALLOW_HTTP))
    ] = Field(default_factory=CallbackPolicy)
    """CALLBACK_POLICY: not one variable but `EXPORTJOBS_CALLBACK_ALLOWLIST` and
    `EXPORTJOBS_CALLBACK_ALLOW_HTTP`, shared with the webhook: where callbacks may go
    (export_operator.callbacks)."""

    @model_validator(mode="after")
    def _check(self) -> NotifySettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError(f"{PREFIX}NOTIFY_BACKOFF_MAX_SECONDS must be >= the base delay")
        return self


class SplitSettings(EnvSettings, env_prefix=PREFIX + "SPLIT_", component="operator"):
    """When an export runs as an Indexed Job of byte ranges, and in how many (`SPLIT_*`)."""

    min_bytes: int = Field(default=2 << 30, ge=0)
    """SPLIT_MIN_BYTES: an export whose source is at least this large (bytes, when its size is
    known) runs as an Indexed Job of byte ranges (docs/api.md, "Split exports"). 0 = only
    exports that ask for `parallelism` are split. Default 2 GiB: one pod converts 2 GiB in
    10-20 s at 100-200 MB/s, about what the extra steps of a split cost (a preparing and a
    finishing pod, each range reading the head again); from there on the ranges win
    (docs/benchmarks.md, "Split exports": 3 GB in 1.1-1.7x less time with 2 pods)."""

    range_bytes: int = Field(default=1 << 30, ge=1 << 20)
    """SPLIT_RANGE_BYTES: the bytes of source per range of a split export sized from its
    source: ranges = ceil(size / this), at least 2, at most SPLIT_MAX_PARALLELISM. Default
    1 GiB."""

    max_parallelism: int = Field(default=8, ge=1, le=32)
    """SPLIT_MAX_PARALLELISM: the most ranges (and pods at once) of one split export, also for
    a request's `parallelism`. 1 = no export is split. Default 8. A split export holds one
    MAX_RUNNING slot per pod it runs at once, and runs with the slots free when it is
    admitted (as one pod when only one is)."""


class OperatorSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """Everything the operator is configured with (env var = `EXPORTJOBS_OPERATOR_` + NAME),
    grouped by concern; each group reads its own variables."""

    namespace: Annotated[str, AfterValidator(str.strip)] = Field(
        "", validation_alias="EXPORTJOBS_NAMESPACE"
    )
    """`EXPORTJOBS_NAMESPACE` (shared with the webhook): the namespace whose ExportJobs are
    reconciled. Empty (default) = all namespaces (cluster-wide RBAC needed)."""

    default_destination_uri: Annotated[str, AfterValidator(_destination)] = ""
    """DEFAULT_DESTINATION_URI: `s3://bucket/prefix/` used when an ExportJob names no
    destination. Empty (default) = such ExportJobs fail with INVALID_SPEC."""

    dataset_uri_template: Annotated[str, AfterValidator(_dataset_template)] = ""
    """DATASET_URI_TEMPLATE: e.g. `s3://datasets/{dataset_id}.csv`, resolves an ExportJob that
    carries only `spec.datasetId` (created without the webhook). Empty (default) = such
    ExportJobs fail with INVALID_SPEC."""

    retention_seconds: int = 7 * 24 * 3600
    """RETENTION_SECONDS: finished ExportJobs are deleted this long after completion (seconds).
    0 = keep forever. Default 7 days."""

    job: JobSettings = JobSettings()
    """The processor Job."""
    pod: PodSettings = PodSettings()
    """The processor pod's resources and the watchdog."""
    admission: AdmissionSettings = AdmissionSettings()
    """How many Jobs run at once, shared between owners."""
    api: ApiSettings = ApiSettings()
    """Workers and API calls."""
    process: ProcessSettings = ProcessSettings()
    """Logs, endpoints, leader election on or off."""
    lease: LeaseSettings = LeaseSettings()
    """Leader election."""
    notify: NotifySettings = NotifySettings()
    """Completion callbacks."""
    split: SplitSettings = SplitSettings()
    """Split exports."""
