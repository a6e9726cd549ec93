"""The size an S3 event carries becomes the `exportjobs.dev/source-size-bytes` annotation, and the
operator's Job for that ExportJob gets memory and a deadline scaled to it."""

from __future__ import annotations

import copy
from typing import Any

from export_operator import resource
from export_operator.controller.jobs import build_job, resolve_inputs
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView
from tests.support import strategies
from tests.support.webhook_harness import AUTH, Harness

GIB = 1024**3
OPERATOR = OperatorSettings.from_env({}, default_destination_uri="s3://exports-output/out/")


async def stored_for_event(harness: Harness, event: dict[str, Any]) -> dict[str, Any]:
    response = await harness.client.post("/v1/events/s3?format=csv", json=event, headers=AUTH)
    assert response.status == 202, await response.text()
    [name] = (await response.json())["ids"]
    obj = copy.deepcopy(harness.store.objects[name])
    obj["metadata"].update(uid="u1", generation=1)
    return obj


def job_for(obj: dict[str, Any]) -> dict[str, Any]:
    view = ExportView.from_body(obj)
    return build_job(
        export=view, inputs=resolve_inputs(export=view, settings=OPERATOR), settings=OPERATOR
    )


def memory_mib(job: dict[str, Any], kind: str) -> int:
    text = job["spec"]["template"]["spec"]["containers"][0]["resources"][kind]["memory"]
    assert text.endswith("Mi")
    return int(text[:-2])


async def test_a_large_object_gets_scaled_memory_and_deadline(harness: Harness) -> None:
    small = await stored_for_event(harness, strategies.s3_event("exports-input", "s.csv", 1000))
    large = await stored_for_event(harness, strategies.s3_event("exports-input", "l.csv", 40 * GIB))
    assert small["metadata"]["annotations"][resource.ANNOTATION_SOURCE_SIZE] == "1000"
    assert large["metadata"]["annotations"][resource.ANNOTATION_SOURCE_SIZE] == str(40 * GIB)
    small_job, large_job = job_for(small), job_for(large)
    for kind in ("requests", "limits"):
        assert memory_mib(large_job, kind) > memory_mib(small_job, kind), kind
    deadline = "activeDeadlineSeconds"
    assert large_job["spec"][deadline] > small_job["spec"][deadline]
    assert large_job["spec"][deadline] == OPERATOR.job.active_deadline_seconds + int(
        OPERATOR.job.deadline_seconds_per_gib * 40
    )


async def test_an_event_without_a_size_sets_no_annotation(harness: Harness) -> None:
    obj = await stored_for_event(harness, strategies.s3_event("exports-input", "n.csv"))
    assert resource.ANNOTATION_SOURCE_SIZE not in obj["metadata"]["annotations"]
    assert ExportView.from_body(obj).source_size is None
