"""Raw API bodies (and their snapshots) of ExportJobs, Jobs and pods, for unit tests."""

from __future__ import annotations

from typing import Any

from export_operator.controller.snapshots import ExportView, JobView, PodView


def export_body(
    name: str = "e1",
    *,
    namespace: str = "ns",
    created: str = "2026-01-01T00:00:00Z",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "creationTimestamp": created,
        "generation": 1,
        "annotations": annotations or {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return {
        "metadata": meta,
        "spec": spec
        if spec is not None
        else {"source": {"uri": "s3://src/in.csv"}, "format": "csv"},
        "status": status or {},
    }


def export(name: str = "e1", **kwargs: Any) -> ExportView:
    return ExportView.from_body(export_body(name, **kwargs))


def job(export_name: str = "e1", **kwargs: Any) -> JobView:
    return JobView.from_body(job_body(export_name, **kwargs))


def job_body(
    export_name: str = "e1",
    *,
    namespace: str = "ns",
    active: int = 0,
    succeeded: int = 0,
    failed: int = 0,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": f"export-{export_name}",
        "namespace": namespace,
        "uid": "job-uid",
        "labels": {"exportjobs.dev/export": export_name},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "active": active,
            "succeeded": succeeded,
            "failed": failed,
            "startTime": "2026-01-01T00:00:05Z",
            "conditions": conditions or [],
        },
    }


def condition(type_: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:10:00Z",
    }


def pod(name: str = "p1", **kwargs: Any) -> PodView:
    return PodView.from_body(pod_body(name, **kwargs))


def pod_body(
    name: str = "p1",
    *,
    export_name: str = "e1",
    phase: str = "Pending",
    created: str = "2026-01-01T00:00:05Z",
    state: dict[str, Any] | None = None,
    scheduled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [scheduled] if scheduled else []}
    if state is not None:
        status["containerStatuses"] = [{"name": "processor", "state": state}]
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "creationTimestamp": created,
            "labels": {"exportjobs.dev/export": export_name},
        },
        "status": status,
    }


def terminated(exit_code: int, message: str = "", reason: str = "Error") -> dict[str, Any]:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason,
            "message": message,
            "finishedAt": "2026-01-01T00:09:00Z",
        }
    }
