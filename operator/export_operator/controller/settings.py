"""The operator's settings: one typed object read from `EXPORTJOBS_OPERATOR_*` once at start-up.

Every field documents its unit, default and why. `OperatorSettings.from_env()` is the only reader
of the environment; everything else receives the object. docs/configuration.md ("## Operator")
lists the same variables.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from export_operator.callbacks import ENV_ALLOW_HTTP, ENV_ALLOWLIST, CallbackPolicy
from export_operator.controller.admission import OwnerShare
from export_operator.controller.quantities import parse_bytes
from export_operator.controller.signing import read_secrets
from export_operator.resource import parse_s3_uri
from export_processor.common import parse_bool

PREFIX = "EXPORTJOBS_OPERATOR_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """Everything the operator is configured with (env var = `EXPORTJOBS_OPERATOR_` + NAME)."""

    namespace: str = ""
    """`EXPORTJOBS_NAMESPACE` (shared with the webhook): the namespace whose ExportJobs are
    reconciled. Empty (default) = all namespaces (cluster-wide RBAC needed)."""

    processor_image: str = "exportjobs-processor:latest"
    """PROCESSOR_IMAGE: the image of the Job's `processor` container."""

    image_pull_policy: str = "IfNotPresent"
    """IMAGE_PULL_POLICY: the container's imagePullPolicy (Always, IfNotPresent, Never)."""

    service_account: str = "exportjobs-processor"
    """SERVICE_ACCOUNT: the processor pods' ServiceAccount; it needs `patch` on
    `exportjobs/status` (progress) and whatever S3 identity (IRSA, pod identity) it carries."""

    processor_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """PROCESSOR_ENV: a JSON object of extra environment for the processor container, e.g.
    `{"AWS_ENDPOINT_URL": "http://minio:9000"}`. Default `{}`."""

    processor_env_secret: str = ""
    """PROCESSOR_ENV_SECRET: a Secret in the ExportJob's namespace added with `envFrom` (e.g. AWS
    keys for MinIO). Empty (default) = none; in AWS use IRSA/pod identity instead."""

    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """NODE_SELECTOR: a JSON object used as the processor pods' nodeSelector. Default `{}`."""

    processor_pod: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """PROCESSOR_POD: a JSON object of what the processor pods need to fit the cluster, each key
    optional: `imagePullSecrets` ([{"name": ...}]), `tolerations`, `affinity`,
    `topologySpreadConstraints`, `priorityClassName`, and `labels` / `annotations` (string maps
    added to the pod template, e.g. a sidecar opt-out or a cost label). Default `{}`. The
    chart fills it from `processor.*` and the global `imagePullSecrets`."""

    default_destination_uri: str = ""
    """DEFAULT_DESTINATION_URI: `s3://bucket/prefix/` used when an ExportJob names no
    destination. Empty (default) = such ExportJobs fail with INVALID_SPEC."""

    dataset_uri_template: str = ""
    """DATASET_URI_TEMPLATE: e.g. `s3://datasets/{dataset_id}.csv`, resolves an ExportJob that
    carries only `spec.datasetId` (created without the webhook). Empty (default) = such
    ExportJobs fail with INVALID_SPEC."""

    max_running: int = 10
    """MAX_RUNNING: how many Jobs may be unfinished at once; beyond it ExportJobs are Queued and
    admitted first-in first-out. 0 = no limit. Default 10: protects S3 and the nodes."""

    owner_shares: str = ""
    """OWNER_SHARES: a JSON object of owner (principal) → `{"weight": n, "maxRunning": m}`,
    how the slots are shared between owners (default: weight 1, no cap of their own). Admission
    is fair between owners whatever this says: round-robin by slots held per weight, first in,
    first out within an owner (docs/security.md, "Principals")."""

    backoff_limit: int = 3
    """BACKOFF_LIMIT: retries of a retryable failure when the spec gives none. Default 3."""

    active_deadline_seconds: int = 3600
    """ACTIVE_DEADLINE_SECONDS: the Job's deadline when the spec gives none, before size scaling
    (seconds). Default 3600."""

    deadline_seconds_per_gib: int = 600
    """DEADLINE_SECONDS_PER_GIB: added to the default deadline per GiB of source when its size is
    known (seconds). Default 600 (a slow 1.7 MiB/s floor). Capped at 86400 in total."""

    ttl_seconds_after_finished: int = 3600
    """TTL_SECONDS_AFTER_FINISHED: finished Jobs (and pods) are removed after this (seconds); the
    ExportJob keeps the outcome. Default 3600, time enough to read logs."""

    retention_seconds: int = 7 * 24 * 3600
    """RETENTION_SECONDS: finished ExportJobs are deleted this long after completion (seconds).
    0 = keep forever. Default 7 days."""

    cpu_request: str = "250m"
    """CPU_REQUEST: the processor's CPU request. Default 250m."""

    cpu_limit: str = "1"
    """CPU_LIMIT: the processor's CPU limit. Default 1."""

    memory_request: str = "256Mi"
    """MEMORY_REQUEST: the processor's memory request for a small or unknown-size source."""

    memory_limit: str = "1Gi"
    """MEMORY_LIMIT: the processor's memory limit for a small or unknown-size source."""

    memory_per_gib: str = "64Mi"
    """MEMORY_PER_GIB: added to request and limit per GiB of source when its size is known (the
    processor streams; large row groups still grow with the input). Default 64Mi."""

    memory_limit_max: str = "4Gi"
    """MEMORY_LIMIT_MAX: the cap of the scaled memory limit (and request). Default 4Gi."""

    tmp_size_limit: str = "1Gi"
    """TMP_SIZE_LIMIT: sizeLimit of the emptyDir mounted at /tmp (the root filesystem is
    read-only). Default 1Gi."""

    head_source: bool = False
    """HEAD_SOURCE: `true` = HEAD the source object (boto3, standard AWS chain) to scale resources
    and deadline from its size. Default false: the size comes only from the
    `exportjobs.dev/source-size-bytes` annotation, keeping S3 off the admission path."""

    unschedulable_timeout_seconds: int = 600
    """UNSCHEDULABLE_TIMEOUT_SECONDS: a processor pod unschedulable for longer fails the export
    with UNSCHEDULABLE (seconds). Default 600."""

    image_pull_timeout_seconds: int = 300
    """IMAGE_PULL_TIMEOUT_SECONDS: a processor pod that cannot pull its image for longer fails
    the export with IMAGE_PULL (seconds). Default 300."""

    start_timeout_seconds: int = 300
    """START_TIMEOUT_SECONDS: a processor pod whose container cannot be created or started
    (CreateContainerConfigError, CreateContainerError, RunContainerError) for longer fails the
    export with POD_START_FAILED and frees its slot (seconds). Default 300."""

    resync_interval_seconds: float = 60.0
    """RESYNC_INTERVAL_SECONDS: how often every unfinished ExportJob is re-derived even without
    a watch event (seconds), a safety net. Default 60."""

    workers: int = 32
    """WORKERS: ExportJobs reconciled at once (each creates its Job and writes its status), so
    also the API requests in flight at once. Default 32: enough to keep the API server busy
    without monopolising it."""

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

    log_level: str = "INFO"
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

    standalone: bool = False
    """STANDALONE: `true` = no leader election: this process acts at once (one replica only,
    e.g. in tests). Default false: replicas elect a leader through a Lease; the others watch
    and stand by."""

    lease_name: str = "exportjobs-operator"
    """LEASE_NAME: the coordination.k8s.io Lease the replicas elect their leader with."""

    lease_namespace: str = ""
    """LEASE_NAMESPACE: the Lease's namespace (the chart sets the release namespace). Empty =
    the watched namespace, or `default` when watching all namespaces."""

    lease_duration_seconds: float = 8.0
    """LEASE_DURATION_SECONDS: a standby takes the Lease over when it has seen no renewal for
    this long (seconds). Default 8: failover within about 10 s of a crash."""

    lease_renew_deadline_seconds: float = 6.0
    """LEASE_RENEW_DEADLINE_SECONDS: the leader stops acting when it could not renew for this
    long (below the duration, so it stops before a standby may start) (seconds). Default 6."""

    lease_retry_period_seconds: float = 1.0
    """LEASE_RETRY_PERIOD_SECONDS: how often the Lease is renewed or tried (seconds). Default 1
    (a GET and, when held, a PUT: light)."""

    notify_window_seconds: float = 24 * 3600.0
    """NOTIFY_WINDOW_SECONDS: how long after the final phase (`completionTime`) a completion
    callback is retried before its notification is Failed (seconds). Default 86400 (24 h)."""

    notify_backoff_base_seconds: float = 5.0
    """NOTIFY_BACKOFF_BASE_SECONDS: the first retry delay of a callback; it doubles per attempt,
    with jitter (each delay is 100-120 % of the nominal one). Default 5."""

    notify_backoff_max_seconds: float = 3600.0
    """NOTIFY_BACKOFF_MAX_SECONDS: the longest delay between two callback attempts (seconds);
    a receiver's Retry-After may ask for more, up to the window. Default 3600."""

    notify_timeout_seconds: float = 10.0
    """NOTIFY_TIMEOUT_SECONDS: one callback attempt, DNS to response, must finish within this
    (seconds); a slow receiver then counts as a network error and is retried. Default 10."""

    notify_concurrency: int = 16
    """NOTIFY_CONCURRENCY: callback attempts in flight at once; more wait their turn, so slow
    receivers cannot take the operator's sockets or CPU. Default 16."""

    notify_secrets: str = dataclasses.field(default="", repr=False)
    """NOTIFY_SECRETS: comma-separated Standard Webhooks signing secrets (`whsec_<base64>`).
    Prefer NOTIFY_SECRETS_FILE (a mounted Secret). Every secret signs each callback, so during a
    rotation two are valid at once. Without any secret, callbacks are not sent (Failed)."""

    notify_secrets_file: str = ""
    """NOTIFY_SECRETS_FILE: a file with one secret per line, or a mounted Secret directory (every
    file read). Read before each delivery, so a rotated Secret applies without a restart."""

    notify_source: str = "/apis/exportjobs.dev/v1alpha1"
    """NOTIFY_SOURCE: the CloudEvents `source` prefix; the event's source is
    `<this>/namespaces/<namespace>/exportjobs`. Default `/apis/exportjobs.dev/v1alpha1`."""

    notify_presign_endpoint_url: str = ""
    """NOTIFY_PRESIGN_ENDPOINT_URL: the S3 endpoint written into the callback's presigned
    download URL (as the webhook's). Empty = AWS_ENDPOINT_URL, else AWS."""

    notify_presign_expiry_seconds: int = 3600
    """NOTIFY_PRESIGN_EXPIRY_SECONDS: lifetime of that URL (seconds), fresh at each attempt."""

    callback_policy: CallbackPolicy = dataclasses.field(default_factory=CallbackPolicy)
    """CALLBACK_POLICY: not one variable but `EXPORTJOBS_CALLBACK_ALLOWLIST` and
    `EXPORTJOBS_CALLBACK_ALLOW_HTTP`, shared with the webhook: where callbacks may go
    (export_operator.callbacks)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read the settings from `environ` (default `os.environ`).

        Raises:
            ValueError: naming the variable, when a value cannot be parsed.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if "EXPORTJOBS_NAMESPACE" in env:
            values["namespace"] = env["EXPORTJOBS_NAMESPACE"].strip()
        values["callback_policy"] = CallbackPolicy.from_env(env)
        for field in dataclasses.fields(cls):
            if field.name in ("namespace", "callback_policy"):
                continue
            name = PREFIX + field.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, raw, field.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse settings that cannot work.

        Raises:
            ValueError: naming the offending variable.
        """
        if self.max_running < 0:
            raise ValueError(f"{PREFIX}MAX_RUNNING must be >= 0")
        if self.workers < 1:
            raise ValueError(f"{PREFIX}WORKERS must be >= 1")
        if not 0 < self.lease_renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(
                f"{PREFIX}LEASE_RENEW_DEADLINE_SECONDS must be > 0 and below "
                f"{PREFIX}LEASE_DURATION_SECONDS"
            )
        if self.retry_base_seconds <= 0 or self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError(f"{PREFIX}RETRY_MAX_SECONDS must be >= RETRY_BASE_SECONDS > 0")
        for field in ("memory_request", "memory_limit", "memory_per_gib", "memory_limit_max"):
            try:
                parse_bytes(getattr(self, field))
            except ValueError as exc:
                raise ValueError(f"{PREFIX}{field.upper()}: {exc}") from exc
        if self.dataset_uri_template:
            try:
                self.dataset_uri_template.format(dataset_id="00000000-0000-0000-0000-000000000000")
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise ValueError(
                    f"{PREFIX}DATASET_URI_TEMPLATE: only {{dataset_id}} may be used ({exc!r})"
                ) from exc
        if self.default_destination_uri:
            if not self.default_destination_uri.endswith("/"):
                raise ValueError(f"{PREFIX}DEFAULT_DESTINATION_URI must end in '/'")
            try:
                parse_s3_uri(self.default_destination_uri, prefix=True)
            except ValueError as exc:
                raise ValueError(f"{PREFIX}DEFAULT_DESTINATION_URI: {exc}") from exc
        if self.notify_window_seconds <= 0 or self.notify_backoff_base_seconds <= 0:
            raise ValueError(
                f"{PREFIX}NOTIFY_WINDOW_SECONDS/NOTIFY_BACKOFF_BASE_SECONDS must be > 0"
            )
        if self.notify_backoff_max_seconds < self.notify_backoff_base_seconds:
            raise ValueError(f"{PREFIX}NOTIFY_BACKOFF_MAX_SECONDS must be >= the base delay")
        if self.notify_timeout_seconds <= 0:
            raise ValueError(f"{PREFIX}NOTIFY_TIMEOUT_SECONDS must be > 0")
        if self.notify_concurrency < 1:
            raise ValueError(f"{PREFIX}NOTIFY_CONCURRENCY must be >= 1")
        if not 1 <= self.notify_presign_expiry_seconds <= 7 * 24 * 3600:
            raise ValueError(f"{PREFIX}NOTIFY_PRESIGN_EXPIRY_SECONDS must be 1 s to 7 days")
        try:
            read_secrets(inline=self.notify_secrets, path="")
        except ValueError as exc:
            raise ValueError(f"{PREFIX}NOTIFY_SECRETS: {exc}") from None
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"{PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        problem = processor_pod_problem(self.processor_pod)
        if problem:
            raise ValueError(f"{PREFIX}PROCESSOR_POD: {problem}")
        try:
            _ = self.shares
        except ValueError as exc:
            raise ValueError(f"{PREFIX}OWNER_SHARES: {exc}") from None
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise ValueError(f"{PREFIX}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never")

    @property
    def shares(self) -> dict[str, OwnerShare]:
        """`owner_shares` parsed.

        Raises:
            ValueError: not a JSON object of owner → {weight >= 1, maxRunning >= 1}.
        """
        if not self.owner_shares.strip():
            return {}
        document = json.loads(self.owner_shares)
        if not isinstance(document, dict):
            raise ValueError("expected a JSON object of owner -> {weight, maxRunning}")
        shares = {}
        for owner, entry in document.items():
            entry = entry if isinstance(entry, dict) else {}
            if set(entry) - {"weight", "maxRunning"}:
                raise ValueError(f"{owner}: only weight and maxRunning may be given")
            weight, cap = entry.get("weight", 1), entry.get("maxRunning")
            if (
                type(weight) is not int
                or weight < 1
                or (cap is not None and (type(cap) is not int or cap < 1))
            ):
                raise ValueError(f"{owner}: weight and maxRunning must be integers >= 1")
            shares[str(owner)] = OwnerShare(weight=weight, max_running=cap)
        return shares

    @property
    def env_names(self) -> dict[str, str]:
        """Field name → environment variable name (for documentation and errors; a field read
        from several variables has one entry per variable, `field.part`)."""
        names = {f.name: PREFIX + f.name.upper() for f in dataclasses.fields(self)}
        names["namespace"] = "EXPORTJOBS_NAMESPACE"
        # One field read from two variables (shared with the webhook).
        del names["callback_policy"]
        names["callback_policy.allowlist"] = ENV_ALLOWLIST
        names["callback_policy.allow_http"] = ENV_ALLOW_HTTP
        return names


def _parse(name: str, raw: str, type_name: object) -> Any:
    kind = str(type_name)
    try:
        if kind == "bool":
            return parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Mapping[str, Any]":
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if kind.startswith("Mapping"):
            value = json.loads(raw)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError("expected a JSON object of strings")
            return value
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return raw


PROCESSOR_POD_KINDS: Mapping[str, type] = {
    "imagePullSecrets": list,
    "tolerations": list,
    "affinity": dict,
    "topologySpreadConstraints": list,
    "priorityClassName": str,
    "labels": dict,
    "annotations": dict,
}
"""The keys of PROCESSOR_POD and the JSON type of each (the API server checks the rest)."""


def processor_pod_problem(pod: Mapping[str, Any]) -> str:
    """What is wrong with a PROCESSOR_POD object ("" when nothing is)."""
    for key, value in pod.items():
        kind = PROCESSOR_POD_KINDS.get(key)
        if kind is None:
            return f"unknown key {key!r} (known: {', '.join(PROCESSOR_POD_KINDS)})"
        if not isinstance(value, kind):
            return f"{key} must be a JSON {kind.__name__}"
    for key in ("labels", "annotations"):
        if not all(isinstance(v, str) for v in pod.get(key, {}).values()):
            return f"{key} must map strings to strings"
    for secret in pod.get("imagePullSecrets", []):
        if not (isinstance(secret, dict) and isinstance(secret.get("name"), str)):
            return 'imagePullSecrets must be a list of {"name": ...}'
    for key in ("tolerations", "topologySpreadConstraints"):
        if not all(isinstance(item, dict) for item in pod.get(key, [])):
            return f"{key} must be a list of objects"
    return ""
