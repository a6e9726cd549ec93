"""The processor pods fit the cluster: every placement value the chart passes reaches the Job the
operator creates on the real API server, and the pod the Job controller makes from it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.support.operator_process import Exports, OperatorProcess
from tests.support.wait import wait_for


@pytest.fixture
def priority_class(kube_api: k8s.ApiClient) -> Iterator[str]:
    """A PriorityClass to name (the API server's admission refuses pods naming none)."""
    name = f"batch-low-{uuid.uuid4().hex[:6]}"
    scheduling = k8s.SchedulingV1Api(kube_api)
    scheduling.create_priority_class(
        k8s.V1PriorityClass(metadata=k8s.V1ObjectMeta(name=name), value=10)
    )
    try:
        yield name
    finally:
        scheduling.delete_priority_class(name)


def test_the_job_and_its_pod_carry_every_placement_value(
    exports: Exports, operator: OperatorProcess, priority_class: str
) -> None:
    placement: dict[str, Any] = {
        "imagePullSecrets": [{"name": "global-regcred"}, {"name": "batch-regcred"}],
        "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["batch"]}
                            ]
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "processor"}},
            }
        ],
        "priorityClassName": priority_class,
        "labels": {"cost-center": "reports", "exportjobs.dev/export": "not-this"},
        "annotations": {"sidecar.istio.io/inject": "false"},
    }
    operator.start(
        processor_pod=json.dumps(placement), node_selector=json.dumps({"kubernetes.io/os": "linux"})
    )
    exports.create("placed", format="csv")
    job = wait_for("the Job", lambda: exports.job("placed"))
    spec = exports.batch.api_client.sanitize_for_serialization(job.spec.template)
    pod_spec = spec["spec"]
    assert pod_spec["imagePullSecrets"] == placement["imagePullSecrets"]
    assert pod_spec["tolerations"] == placement["tolerations"]
    assert pod_spec["affinity"] == placement["affinity"]
    assert pod_spec["topologySpreadConstraints"] == placement["topologySpreadConstraints"]
    assert pod_spec["priorityClassName"] == priority_class
    assert pod_spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    labels = spec["metadata"]["labels"]
    assert labels["cost-center"] == "reports"
    assert labels["exportjobs.dev/export"] == "placed", "the operator's own labels win"
    assert spec["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # The Job controller's pod carries them too (and the priority the class gives).
    pod = exports.wait_pod("placed")
    assert pod.spec.priority_class_name == priority_class and pod.spec.priority == 10
    assert [s.name for s in pod.spec.image_pull_secrets] == ["global-regcred", "batch-regcred"]
    assert pod.metadata.annotations["sidecar.istio.io/inject"] == "false"
