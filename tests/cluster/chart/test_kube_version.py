"""The minimum Kubernetes version is stated once (Chart.yaml `kubeVersion`) and true.

The chart, with every optional object on, is rendered for that version (`helm template
--kube-version`), and so is the Job the operator makes from the chart's settings. Every object's
API must be served by default at that version and no field may be one added after it. The tables
below come from the Kubernetes release notes; an object of a kind not listed fails the test, so a
new template has to be placed in them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from export_operator.controller.jobs import build_job, resolve_inputs
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView
from tests.support.helm import (
    CHART,
    EVERYTHING_ON,
    by_kind,
    container_env,
    objects,
    run,
    set_flags,
    tool,
)

# (apiVersion, kind) -> the first minor version serving it by default (GA or on-by-default beta).
SERVED_SINCE = {
    ("v1", "ServiceAccount"): 0,
    ("v1", "Service"): 0,
    ("v1", "Secret"): 0,
    ("v1", "ConfigMap"): 0,
    ("v1", "Pod"): 0,
    ("apps/v1", "Deployment"): 9,
    ("batch/v1", "Job"): 0,
    ("rbac.authorization.k8s.io/v1", "Role"): 8,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): 8,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): 8,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): 8,
    ("networking.k8s.io/v1", "Ingress"): 19,
    ("networking.k8s.io/v1", "NetworkPolicy"): 7,
    ("policy/v1", "PodDisruptionBudget"): 21,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): 30,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): 30,
}
# Custom resources of other projects (their CRD decides; not Kubernetes' version).
FOREIGN = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

# Field names added to the objects the chart and the operator write, by the minor version that
# turned them on by default (release notes 1.29-1.34). A key of this name anywhere fails when its
# version is above the minimum.
FIELDS_SINCE = {
    "sleep": 30,  # lifecycle.preStop.sleep (PodLifecycleSleepAction beta, on by default)
    "appArmorProfile": 30,
    "trafficDistribution": 31,  # Service
    "successPolicy": 31,  # Job
    "managedBy": 32,  # Job
    "supplementalGroupsPolicy": 33,
    "seLinuxChangePolicy": 33,
    "stopSignal": 34,  # container lifecycle
    "hostnameOverride": 34,
    "podReplacementPolicy": 29,
    "backoffLimitPerIndex": 29,
    "matchLabelKeys": 29,  # topologySpreadConstraints (beta 1.27)...; podAffinity terms in 1.31
    "resizePolicy": 33,  # in-place resize on by default
}


def minimum() -> tuple[int, int]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    constraint = chart["kubeVersion"]
    assert constraint.startswith(">="), constraint
    major, minor = constraint.removeprefix(">=").split(".")[:2]
    return int(major), int(minor)


def _render(version: str, values: dict[str, str]) -> list[dict[str, Any]]:
    out = run(
        [
            tool("helm"),
            "template",
            "ej",
            str(CHART),
            "--namespace",
            "exports",
            "--kube-version",
            version,
            "--api-versions",
            "monitoring.coreos.com/v1",
            *set_flags(values),
        ]
    ).stdout
    return objects(out)


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


def _operator_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Job the operator makes with the settings this rendering gives it."""
    operator = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")
    )
    env = container_env(operator["spec"]["template"]["spec"]["containers"][0])
    settings = OperatorSettings.from_env(env)
    view = ExportView.from_body(
        {
            "metadata": {"name": "e1", "namespace": "exports", "uid": "u1", "generation": 1},
            "spec": {"source": {"uri": "s3://exports-input/a.csv"}, "format": "parquet"},
            "status": {},
        }
    )
    job = build_job(
        export=view, inputs=resolve_inputs(export=view, settings=settings), settings=settings
    )
    return job


def _too_new(docs: list[dict[str, Any]], minor: int) -> list[str]:
    found = []
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in FOREIGN:
            continue
        since = SERVED_SINCE.get(key)
        if since is None:
            found.append(f"{key}: not in SERVED_SINCE, place it")
        elif since > minor:
            found.append(f"{key}: served from 1.{since}")
        for name in _keys(doc):
            if FIELDS_SINCE.get(name, 0) > minor:
                found.append(
                    f"{doc['kind']} {doc['metadata'].get('name')}: {name} (1.{FIELDS_SINCE[name]})"
                )
    return found


def test_the_chart_and_its_jobs_use_nothing_newer_than_the_stated_minimum() -> None:
    major, minor = minimum()
    assert (major, minor) == (1, 30)
    values = {
        **EVERYTHING_ON,
        "processor.admissionPolicy.enabled": "true",
        "notifications.secrets[0]": "whsec_" + "A" * 40,
        "monitoring.prometheusRule.enabled": "true",
        "monitoring.grafanaDashboard.enabled": "true",
        "processor.tolerations[0].key": "batch",
        "processor.tolerations[0].operator": "Exists",
        "processor.topologySpreadConstraints[0].maxSkew": "1",
        "processor.topologySpreadConstraints[0].topologyKey": "kubernetes.io/hostname",
        "processor.topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
        "processor.priorityClassName": "batch",
        "processor.podLabels.team": "data",
    }
    docs = _render(f"{major}.{minor}.0", values)
    kinds = {d["kind"] for d in docs}
    assert {"ValidatingAdmissionPolicy", "Ingress", "ServiceMonitor", "ClusterRole"} <= kinds
    assert {"PrometheusRule", "ConfigMap"} <= kinds
    job = _operator_job(docs)
    assert job["spec"]["template"]["spec"]["tolerations"]  # the placement reached the Job
    docs.append(job)
    assert _too_new(docs, minor) == []


def test_the_check_finds_what_the_minimum_rules_out() -> None:
    """One minor lower, the admission policy and the preStop sleep are what the check names."""
    major, minor = minimum()
    docs = _render(f"{major}.{minor}.0", dict(EVERYTHING_ON))
    found = "\n".join(_too_new(docs, minor - 1))
    assert "ValidatingAdmissionPolicy" in found
    assert "sleep (1.30)" in found


def test_helm_refuses_an_older_cluster() -> None:
    major, minor = minimum()
    result = run(
        [tool("helm"), "template", "ej", str(CHART), "--kube-version", f"{major}.{minor - 1}.9"],
        check=False,
    )
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr
    # and a plain `helm template` (helm's own default version) still renders
    run([tool("helm"), "template", "ej", str(CHART)])
