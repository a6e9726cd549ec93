"""Snapshots: small immutable copies of what the controller reads of ExportJobs, Jobs and Pods.

The informers' caches hold these instead of whole objects (one is made per watch event from the
raw body): they are what the status derivation and admission read, they compare by value (so an
unchanged pod does not wake its ExportJob), and the pure functions that use them are tested from
plain dicts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Mapping
from typing import Any

from export_operator import resource
from export_operator.controller.split_plan import NOT_PREPARED, Prepared
from export_operator.resource import MAX_OBJECT_BYTES

PROCESSOR_CONTAINER = "processor"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
"""The annotation the job controller puts on each pod of an Indexed Job."""

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FINISHED_PHASES = frozenset(p.value for p in resource.Phase if p.finished)


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 timestamp from the API (or a datetime) as an aware datetime; None if absent."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    """RFC 3339 with second precision in UTC, as Kubernetes writes timestamps."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(value: Mapping[str, Any]) -> str:
    """A canonical JSON text: hashable, compares by value, and exact when loaded back."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digits(text: Any, longest: int) -> int | None:
    """An annotation's number: 1 to `longest` ASCII digits, else None."""
    if isinstance(text, str) and 0 < len(text) <= longest and text.isascii() and text.isdigit():
        return int(text)
    return None


@dataclasses.dataclass(frozen=True)
class ExportView:
    """What the controller needs of one ExportJob."""

    namespace: str
    name: str
    uid: str
    created: dt.datetime
    generation: int
    deleting: bool
    spec_json: str
    status_json: str
    source_size: int | None
    phase_value: str = ""
    """`status.phase` (kept apart from the JSON: the admission pass reads it for every object)."""
    job_name: str = ""
    """`status.jobName`."""
    submitted_ns: int = 0
    """When the webhook accepted it (`exportjobs.dev/submitted-ns`, nanoseconds); 0 = unknown
    (created another way: the one-second creation time orders it)."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ExportView:
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        size_text = annotations.get(resource.ANNOTATION_SOURCE_SIZE)
        try:
            size = int(size_text) if size_text is not None else None
        except ValueError:
            size = None
        return cls(
            namespace=meta.get("namespace") or "",
            name=meta["name"],
            uid=meta.get("uid") or "",
            created=parse_time(meta.get("creationTimestamp")) or EPOCH,
            generation=int(meta.get("generation") or 0),
            deleting=meta.get("deletionTimestamp") is not None,
            spec_json=_canonical(spec),
            status_json=_canonical(status),
            # Within S3's largest object: a hostile annotation must not overflow the sizing.
            source_size=size if size is not None and 0 <= size <= MAX_OBJECT_BYTES else None,
            phase_value=str(status.get("phase") or ""),
            job_name=str(status.get("jobName") or ""),
            submitted_ns=_digits(annotations.get(resource.ANNOTATION_SUBMITTED), 19) or 0,
        )

    @functools.cached_property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @functools.cached_property
    def queue_order(self) -> tuple[int, str, str]:
        """First in, first out: when the webhook accepted it (nanoseconds), else its creation
        time (one-second resolution), then namespace and name."""
        submitted = self.submitted_ns or int(self.created.timestamp()) * 1_000_000_000
        return (submitted, self.namespace, self.name)

    @functools.cached_property
    def cancel_requested(self) -> bool:
        """`spec.cancel` (kept per view, without the spec: admission asks it of every export)."""
        return bool(json.loads(self.spec_json).get("cancel"))

    @functools.cached_property
    def owner(self) -> str:
        """`spec.owner`: the principal that created it ("" for none); kept as `cancel_requested`."""
        return str(json.loads(self.spec_json).get("owner") or "")

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The spec (parsed once per view; callers must not modify it)."""
        spec: dict[str, Any] = json.loads(self.spec_json)
        return spec

    @functools.cached_property
    def status(self) -> dict[str, Any]:
        """The status (parsed once per view; callers must not modify it)."""
        status: dict[str, Any] = json.loads(self.status_json)
        return status

    @property
    def phase(self) -> resource.Phase | None:
        raw = self.phase_value
        return resource.Phase(raw) if raw in set(resource.Phase) else None

    @property
    def finished(self) -> bool:
        # A string lookup, not an enum: the admission pass asks this of every ExportJob.
        return self.phase_value in FINISHED_PHASES


@dataclasses.dataclass(frozen=True, slots=True)
class JobCondition:
    type: str
    status: str
    reason: str
    message: str
    last_transition: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobStatus:
    """A Job's `status`: its pods counted by the job controller, its times and conditions."""

    active: int
    succeeded: int
    failed: int
    start_time: dt.datetime | None
    completion_time: dt.datetime | None
    conditions: tuple[JobCondition, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class JobView:
    """What the controller needs of one batch/v1 Job."""

    namespace: str
    name: str
    export_name: str
    uid: str
    deleting: bool
    status: JobStatus
    step: str = ""
    """`exportjobs.dev/step` of a split export's Job ("" for a whole export's)."""
    parallelism: int = 1
    """`spec.parallelism`: the pods it runs at once (the slots it holds)."""
    ranges: int = 1
    """A split export's number of ranges (`exportjobs.dev/ranges`; 1 for a whole export)."""
    suspended: bool = False
    prepared: Prepared = NOT_PREPARED
    """What the ranges Job's pod template carries of its `prepare` step: the upload id and the
    source version (`exportjobs.dev/upload-id`, `source-etag`, `source-version-id`)."""
    failed_indexes: str = ""
    """`status.failedIndexes` of an Indexed Job (e.g. "1,3-4")."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        labels = meta.get("labels") or {}
        ranges = _digits((meta.get("annotations") or {}).get(resource.ANNOTATION_RANGES), 6)
        conditions = tuple(
            JobCondition(
                type=c.get("type", ""),
                status=c.get("status", ""),
                reason=c.get("reason") or "",
                message=c.get("message") or "",
                last_transition=parse_time(c.get("lastTransitionTime")),
            )
            for c in status.get("conditions") or []
        )
        return cls(
            namespace=meta.get("namespace") or "",
            name=meta["name"],
            export_name=labels.get(resource.LABEL_EXPORT, ""),
            uid=meta.get("uid") or "",
            deleting=meta.get("deletionTimestamp") is not None,
            status=JobStatus(
                active=int(status.get("active") or 0),
                succeeded=int(status.get("succeeded") or 0),
                failed=int(status.get("failed") or 0),
                start_time=parse_time(status.get("startTime")),
                completion_time=parse_time(status.get("completionTime")),
                conditions=conditions,
            ),
            step=labels.get(resource.LABEL_STEP, ""),
            parallelism=int(spec.get("parallelism") or 1),
            ranges=1 if ranges is None else ranges,
            suspended=bool(spec.get("suspend")),
            prepared=Prepared.from_annotations(template_meta.get("annotations") or {}),
            failed_indexes=str(status.get("failedIndexes") or ""),
        )

    def condition(self, type_: str) -> JobCondition | None:
        """The condition of that type when its status is True."""
        for cond in self.status.conditions:
            if cond.type == type_ and cond.status == "True":
                return cond
        return None

    @property
    def complete(self) -> bool:
        return self.condition("Complete") is not None

    @property
    def failed_condition(self) -> JobCondition | None:
        """`Failed`, or `FailureTarget` (set first, while the pods are being terminated)."""
        return self.condition("Failed") or self.condition("FailureTarget")

    @property
    def finished(self) -> bool:
        return self.complete or self.condition("Failed") is not None

    @property
    def ending(self) -> bool:
        """The job controller has decided the outcome (pods may still be terminating)."""
        return (
            self.finished
            or self.failed_condition is not None
            or self.condition("SuccessCriteriaMet") is not None
        )

    @property
    def occupies_slot(self) -> bool:
        """Whether the Job counts against the concurrency limit."""
        return not self.deleting and not self.finished

    @property
    def slots(self) -> int:
        """The `maxRunning` slots it holds while unfinished: a pod each it runs at once (a
        split export's preparing and cleaning steps hold none: its ranges Job holds them)."""
        return 0 if self.step in ("prepare", "clean") else self.parallelism


@dataclasses.dataclass(frozen=True, slots=True)
class PodScheduled:
    """The pod's `PodScheduled` condition ("" / None when it has none)."""

    status: str
    reason: str
    message: str
    since: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class ContainerState:
    """The state of the processor container."""

    waiting_reason: str
    waiting_message: str
    running_since: dt.datetime | None
    exit_code: int | None
    terminated_reason: str
    termination_message: str
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class PodView:
    """What the controller needs of one processor pod."""

    namespace: str
    name: str
    export_name: str
    created: dt.datetime
    deleting: bool
    phase: str
    scheduled: PodScheduled
    container: ContainerState
    step: str = ""
    """`exportjobs.dev/step` of a split export's pod ("" for a whole export's)."""
    index: int | None = None
    """The completion index of a ranges pod."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        index = (meta.get("annotations") or {}).get(COMPLETION_INDEX)
        status = body.get("status") or {}
        scheduled: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
        )
        container: Mapping[str, Any] = next(
            (
                c
                for c in status.get("containerStatuses") or []
                if c.get("name") == PROCESSOR_CONTAINER
            ),
            {},
        )
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        running = state.get("running") or {}
        terminated = state.get("terminated") or {}
        exit_code = terminated.get("exitCode")
        return cls(
            namespace=meta.get("namespace") or "",
            name=meta["name"],
            export_name=labels.get(resource.LABEL_EXPORT, ""),
            created=parse_time(meta.get("creationTimestamp")) or EPOCH,
            deleting=meta.get("deletionTimestamp") is not None,
            phase=status.get("phase") or "Pending",
            scheduled=PodScheduled(
                status=scheduled.get("status") or "",
                reason=scheduled.get("reason") or "",
                message=scheduled.get("message") or "",
                since=parse_time(scheduled.get("lastTransitionTime")),
            ),
            container=ContainerState(
                waiting_reason=waiting.get("reason") or "",
                waiting_message=waiting.get("message") or "",
                running_since=parse_time(running.get("startedAt")) if running else None,
                exit_code=int(exit_code) if exit_code is not None else None,
                terminated_reason=terminated.get("reason") or "",
                termination_message=terminated.get("message") or "",
                finished_at=parse_time(terminated.get("finishedAt")),
            ),
            step=labels.get(resource.LABEL_STEP, ""),
            index=_digits(index, 6),
        )

    @property
    def exit_code(self) -> int | None:
        return self.container.exit_code

    @property
    def running(self) -> bool:
        running = self.container.running_since is not None
        return running or (self.phase == "Running" and not self.terminated)

    @property
    def terminated(self) -> bool:
        return self.container.exit_code is not None
