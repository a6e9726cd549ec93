"""The batch/v1 Job of an ExportJob, built as a plain dict (DESIGN.md "The Job").

Pure: no API calls. The name is deterministic (`resource.job_name_for`), so creating it twice is a
no-op (`AlreadyExists`). The processor's exit codes map through `podFailurePolicy`: 2 (bad input)
and 3 (source missing) fail the Job at once, a disrupted pod (eviction, preemption) is retried
without counting, anything else counts against `backoffLimit`. `JobFactory.manifest` is what
the reconciler calls: the manifest, sized from the source when so configured, or why there is none.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from export_operator import resource
from export_operator.controller.quantities import GIB, format_mebibytes, parse_bytes
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import PROCESSOR_CONTAINER, ExportView
from export_operator.controller.sources import SourceSizer
from export_operator.controller.split_jobs import exit_codes, ranges_job, step_job
from export_operator.controller.split_plan import NOT_PREPARED, Prepared, plan, ranges_wanted
from export_operator.resource import ExitCode

MAX_DEADLINE_SECONDS = 86400
PLACEMENT_KEYS = (
    "imagePullSecrets",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
)
"""The keys of EXPORTJOBS_OPERATOR_PROCESSOR_POD that go into the pod spec as they are (labels
and annotations go into the pod template's metadata)."""
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
PROCESSOR_UID = 65532
"""The non-root user of the processor image (distroless `nonroot`)."""
BAD_INPUT = (ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError)
"""What bad input of one export (a template field, a quantity) raises while its Job is built:
that export fails, alone."""


class InvalidSpecError(ValueError):
    """An ExportJob spec that can never run (no destination, unresolvable datasetId, ...)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ExportInputs:
    """What the processor is asked to do, resolved from the spec and the operator defaults."""

    source_uri: str
    destination_uri: str
    export_format: resource.ExportFormat


def resolve_inputs(*, export: ExportView, settings: OperatorSettings) -> ExportInputs:
    """The source, destination and format of an ExportJob.

    Raises:
        InvalidSpecError: when the spec cannot be resolved, with a message for `status.error`.
    """
    spec = export.spec
    source = (spec.get("source") or {}).get("uri")
    if not source:
        dataset_id = spec.get("datasetId")
        if dataset_id and settings.dataset_uri_template:
            source = settings.dataset_uri_template.format(dataset_id=dataset_id)
        elif dataset_id:
            raise InvalidSpecError(
                "spec.datasetId is given without spec.source and the operator has no "
                "dataset URI template (EXPORTJOBS_OPERATOR_DATASET_URI_TEMPLATE)"
            )
        else:
            raise InvalidSpecError("spec.source.uri is required")
    try:
        resource.parse_s3_uri(source)
    except ValueError as exc:
        raise InvalidSpecError(f"spec.source.uri: {exc}") from exc
    destination = (spec.get("destination") or {}).get("uri") or settings.default_destination_uri
    if not destination:
        raise InvalidSpecError(
            "spec.destination.uri is not given and the operator has no default destination "
            "(EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI)"
        )
    if not destination.endswith("/"):
        destination += "/"
    try:
        resource.parse_s3_uri(destination, prefix=True)
        export_format = resource.ExportFormat(str(spec.get("format")))
    except ValueError as exc:
        raise InvalidSpecError(str(exc)) from exc
    return ExportInputs(source, destination, export_format)


def processor_env(
    *, export: ExportView, inputs: ExportInputs, settings: OperatorSettings
) -> list[dict[str, str]]:
    """The processor's environment (docs/configuration.md, "Processor").

    Raises:
        InvalidSpecError: when a value could not be passed to a container.
    """
    spec = export.spec
    source = spec.get("source") or {}
    csv = spec.get("csv") or {}
    env: dict[str, str] = dict(settings.job.processor_env)
    env.update(
        {
            "EXPORTJOBS_SOURCE_URI": inputs.source_uri,
            "EXPORTJOBS_FORMAT": inputs.export_format.value,
            "EXPORTJOBS_DESTINATION_URI": inputs.destination_uri,
            "EXPORTJOBS_CSV_DELIMITER": str(csv.get("delimiter", ",")),
            "EXPORTJOBS_CSV_HEADER": "true" if csv.get("header", True) else "false",
            "EXPORTJOBS_CSV_QUOTE": str(csv.get("quote", '"')),
            "EXPORTJOBS_CSV_ENCODING": str(csv.get("encoding", "utf-8")),
            "EXPORTJOBS_EXPORT_NAME": export.name,
            "EXPORTJOBS_EXPORT_NAMESPACE": export.namespace,
            "EXPORTJOBS_TERMINATION_MESSAGE_PATH": TERMINATION_MESSAGE_PATH,
        }
    )
    if source.get("versionId"):
        env["EXPORTJOBS_SOURCE_VERSION_ID"] = str(source["versionId"])
    if source.get("etag"):
        env["EXPORTJOBS_SOURCE_ETAG"] = str(source["etag"])
    for name, value in env.items():
        if "\x00" in value:
            # The API server stores it, but no container runtime can start with it: the pod
            # would wait forever (CreateContainerError) holding a slot.
            raise InvalidSpecError(f"{name} would contain a NUL byte (from the spec)")
    return [{"name": k, "value": v} for k, v in env.items()]


def scaled_resources(
    *, source_size: int | None, settings: OperatorSettings
) -> dict[str, dict[str, str]]:
    """Requests and limits; memory grows with the source size when it is known, up to a cap."""
    request = parse_bytes(settings.pod.memory_request)
    limit = parse_bytes(settings.pod.memory_limit)
    if source_size:
        extra = int(parse_bytes(settings.pod.memory_per_gib) * source_size / GIB)
        cap = parse_bytes(settings.pod.memory_limit_max)
        limit = max(limit, min(cap, limit + extra))
        request = min(limit, max(request, min(cap, request + extra)))
    return {
        "requests": {"cpu": settings.pod.cpu_request, "memory": format_mebibytes(request)},
        "limits": {"cpu": settings.pod.cpu_limit, "memory": format_mebibytes(limit)},
    }


def deadline_seconds(
    *, export: ExportView, source_size: int | None, settings: OperatorSettings
) -> int:
    """The spec's deadline, else the default plus a per-GiB allowance (capped at a day)."""
    given = export.spec.get("activeDeadlineSeconds")
    if given:
        return int(given)
    seconds = settings.job.active_deadline_seconds
    if source_size:
        seconds += int(settings.job.deadline_seconds_per_gib * source_size / GIB)
    return min(seconds, MAX_DEADLINE_SECONDS)


def job_labels(export_name: str) -> dict[str, str]:
    """The labels on the Job and its pods (`exportjobs.dev/export` names the ExportJob)."""
    return {
        resource.LABEL_EXPORT: export_name,
        "app.kubernetes.io/name": "exportjobs",
        resource.LABEL_COMPONENT: "processor",
        resource.LABEL_MANAGED_BY: "exportjobs-operator",
    }


def pod_failure_policy() -> dict[str, Any]:
    """Exit 2 and 3 fail the Job at once; disruptions are retried free; the rest counts."""
    final = (ExitCode.BAD_INPUT, ExitCode.SOURCE_MISSING)
    return {
        "rules": [
            {"action": "FailJob", "onExitCodes": exit_codes("In", final)},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Count", "onExitCodes": exit_codes("NotIn", (ExitCode.OK, *final))},
        ]
    }


def build_job(
    *,
    export: ExportView,
    inputs: ExportInputs,
    settings: OperatorSettings,
    source_size: int | None = None,
) -> dict[str, Any]:
    """The Job manifest for an ExportJob (a dict ready for `create_namespaced_job`)."""
    size = source_size if source_size is not None else export.source_size
    labels = job_labels(export.name)
    backoff = export.spec.get("backoffLimit")
    container: dict[str, Any] = {
        "name": PROCESSOR_CONTAINER,
        "image": settings.job.processor_image,
        "imagePullPolicy": settings.job.image_pull_policy,
        "env": processor_env(export=export, inputs=inputs, settings=settings),
        "resources": scaled_resources(source_size=size, settings=settings),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if settings.job.processor_env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.job.processor_env_secret}}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.job.service_account,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": PROCESSOR_UID,
            "runAsGroup": PROCESSOR_UID,
            "fsGroup": PROCESSOR_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.pod.tmp_size_limit}}],
    }
    if settings.job.node_selector:
        pod_spec["nodeSelector"] = dict(settings.job.node_selector)
    placement = settings.job.processor_pod
    for key in PLACEMENT_KEYS:
        if key in placement:
            pod_spec[key] = copy.deepcopy(placement[key])
    # Extra labels first: the operator's own (its selectors and look-ups) win.
    template_meta: dict[str, Any] = {"labels": {**placement.get("labels", {}), **labels}}
    if placement.get("annotations"):
        template_meta["annotations"] = dict(placement["annotations"])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": resource.job_name_for(export.name),
            "namespace": export.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": resource.API_VERSION,
                    "kind": resource.KIND,
                    "name": export.name,
                    "uid": export.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": int(backoff) if backoff is not None else settings.job.backoff_limit,
            "activeDeadlineSeconds": deadline_seconds(
                export=export, source_size=size, settings=settings
            ),
            "ttlSecondsAfterFinished": settings.job.ttl_seconds_after_finished,
            "podFailurePolicy": pod_failure_policy(),
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


class JobFactory:
    """The Job manifests of ExportJobs, as the reconciler asks for them."""

    def __init__(self, settings: OperatorSettings) -> None:
        self._settings = settings
        self._sizer = SourceSizer()

    async def manifest(
        self, export: ExportView, *, sized: bool, slots: int = 1
    ) -> dict[str, Any] | str:
        """The Job manifest of an ExportJob, or why its spec cannot give one (INVALID_SPEC).

        `sized`: HEAD the source for its size when so configured (only for the real create).
        `slots`: the slots admission granted it (a split export's ranges Job when 2 or more)."""
        settings = self._settings
        try:
            inputs = resolve_inputs(export=export, settings=settings)
            size = export.source_size
            if sized and size is None and settings.pod.head_source:
                version = (export.spec.get("source") or {}).get("versionId")
                size = await self._sizer.size_of(inputs.source_uri, version_id=version)
            whole = build_job(export=export, inputs=inputs, settings=settings, source_size=size)
            split = plan(ranges_wanted(export, settings=settings, size=size), slots)
            if not split.split:
                return whole
            share = -(-size // split.ranges) if size else None
            resources = scaled_resources(source_size=share, settings=settings)
            return ranges_job(whole, split, resources=resources)
        except InvalidSpecError as exc:
            return str(exc)
        except BAD_INPUT as exc:
            return f"the Job could not be built: {type(exc).__name__}: {exc}"

    def step(
        self,
        export: ExportView,
        step: str,
        *,
        ranges: int,
        prepared: Prepared = NOT_PREPARED,
        results: str = "",
    ) -> dict[str, Any] | str:
        """The `prepare`, `finish` or `clean` Job of a split export (split_jobs.py), or why
        there is none."""
        try:
            inputs = resolve_inputs(export=export, settings=self._settings)
            whole = build_job(export=export, inputs=inputs, settings=self._settings)
        except BAD_INPUT as exc:
            return f"the {step} Job could not be built: {exc}"
        return step_job(
            whole,
            step,
            export_name=export.name,
            ranges=ranges,
            prepared=prepared,
            results=results,
        )
