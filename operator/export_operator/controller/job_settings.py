"""What the operator puts into each processor Job: the image and its environment, the pod's fit to
the cluster, its resources (scaled by the source's size), its deadlines and how long a pod may
take to start (the watchdog). Part of `OperatorSettings` (settings.py), same variables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from export_operator.controller.quantities import parse_bytes
from export_processor.env_settings import EnvSettings, Flag, JsonObject, JsonStrings

PREFIX = "EXPORTJOBS_OPERATOR_"


def _quantity(value: str) -> str:
    parse_bytes(value)
    return value


def _processor_pod(pod: dict[str, Any]) -> dict[str, Any]:
    problem = processor_pod_problem(pod)
    if problem:
        raise ValueError(problem)
    return pod


Quantity = Annotated[str, AfterValidator(_quantity)]


class JobSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """The processor Job: image, environment, the pod's fit, retries and deadlines."""

    processor_image: str = "exportjobs-processor:latest"
    """PROCESSOR_IMAGE: the image of the Job's `processor` container."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """IMAGE_PULL_POLICY: the container's imagePullPolicy (Always, IfNotPresent, Never)."""

    service_account: str = "exportjobs-processor"
    """SERVICE_ACCOUNT: the processor pods' ServiceAccount; it needs `patch` on
    `exportjobs/status` (progress) and whatever S3 identity (IRSA, pod identity) it carries."""

    processor_env: JsonStrings = Field(default_factory=dict)
    """PROCESSOR_ENV: a JSON object of extra environment for the processor container, e.g.
    `{"AWS_ENDPOINT_URL": "http://minio:9000"}`. Default `{}`."""

    processor_env_secret: str = ""
    """PROCESSOR_ENV_SECRET: a Secret in the ExportJob's namespace added with `envFrom` (e.g. AWS
    keys for MinIO). Empty (default) = none; in AWS use IRSA/pod identity instead."""

    node_selector: JsonStrings = Field(default_factory=dict)
    """NODE_SELECTOR: a JSON object used as the processor pods' nodeSelector. Default `{}`."""

    processor_pod: Annotated[JsonObject, AfterValidator(_processor_pod)] = Field(
        default_factory=dict
    )
    """PROCESSOR_POD: a JSON object of what the processor pods need to fit the cluster, each key
    optional: `imagePullSecrets` ([{"name": ...}]), `tolerations`, `affinity`,
    `topologySpreadConstraints`, `priorityClassName`, and `labels` / `annotations` (string maps
    added to the pod template, e.g. a sidecar opt-out or a cost label). Default `{}`. The
    chart fills it from `processor.*` and the global `imagePullSecrets`."""

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


class PodSettings(EnvSettings, env_prefix=PREFIX, component="operator"):
    """The processor pod's resources (scaled by the source's size) and the watchdog's limits."""

    cpu_request: str = "250m"
    """CPU_REQUEST: the processor's CPU request. Default 250m."""

    cpu_limit: str = "1"
    """CPU_LIMIT: the processor's CPU limit. Default 1."""

    memory_request: Quantity = "256Mi"
    """MEMORY_REQUEST: the processor's memory request for a small or unknown-size source."""

    memory_limit: Quantity = "1Gi"
    """MEMORY_LIMIT: the processor's memory limit for a small or unknown-size source."""

    memory_per_gib: Quantity = "64Mi"
    """MEMORY_PER_GIB: added to request and limit per GiB of source when its size is known (the
    processor streams; large row groups still grow with the input). Default 64Mi."""

    memory_limit_max: Quantity = "4Gi"
    """MEMORY_LIMIT_MAX: the cap of the scaled memory limit (and request). Default 4Gi."""

    tmp_size_limit: str = "1Gi"
    """TMP_SIZE_LIMIT: sizeLimit of the emptyDir mounted at /tmp (the root filesystem is
    read-only). Default 1Gi."""

    head_source: Flag = False
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
