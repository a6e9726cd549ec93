"""The chart's ValidatingAdmissionPolicy on the real API server: with a real processor token
(`kubectl create token`, bound to a pod of the ExportJob's Job as the kubelet's projected token
is) the processor changes status.progress of its own ExportJob and nothing else.

Issue 11, finding 1: a processor token patched another ExportJob's status to Succeeded with a
forged result, and the webhook then presigned the forged object.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client as k8s

from export_operator import resource
from tests.support.cluster import LocalCluster
from tests.support.helm import objects, run, template, tool

FORGED = {
    "status": {
        "phase": "Succeeded",
        "error": None,
        "result": {"uri": "s3://exports-output/tenant-b/secret-report.csv"},
    }
}


@dataclass
class Installed:
    namespace: str
    service_account: str
    policy: str


@pytest.fixture
def confinement(
    cluster: LocalCluster, kube_api: k8s.ApiClient, namespace: str, crd: str
) -> Iterator[Installed]:
    """The chart's processor ServiceAccount, Role, RoleBinding and admission policy, applied."""
    release = f"c{uuid.uuid4().hex[:6]}"
    rendered = objects(
        template(
            release=release, namespace=namespace, values={"exportsNamespace": namespace}
        ).stdout
    )
    wanted = [
        doc
        for doc in rendered
        if doc["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        or (
            doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")
            and doc["metadata"]["name"].endswith("-processor")
        )
    ]
    assert {d["kind"] for d in wanted} == {
        "ServiceAccount", "Role", "RoleBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    }  # fmt: skip
    manifest = yaml.safe_dump_all(wanted)
    run([tool("kubectl"), "apply", "-f", "-"], stdin=manifest)
    [policy] = [d for d in wanted if d["kind"] == "ValidatingAdmissionPolicy"]
    [sa] = [d for d in wanted if d["kind"] == "ServiceAccount"]
    try:
        yield Installed(namespace, sa["metadata"]["name"], policy["metadata"]["name"])
    finally:
        run([tool("kubectl"), "delete", "--ignore-not-found", "-f", "-"], stdin=manifest)


def _exportjob(kube_api: k8s.ApiClient, namespace: str, name: str) -> None:
    custom = k8s.CustomObjectsApi(kube_api)
    custom.create_namespaced_custom_object(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL,
        {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "metadata": {"name": name},
            "spec": {"source": {"uri": "s3://exports-input/a.csv"}, "format": "csv"},
        },
    )  # fmt: skip
    # What the operator writes once the Job runs (the admin identity, not the processor).
    custom.patch_namespaced_custom_object_status(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name,
        {"status": {
            "phase": "Running" if name.endswith("a") else "Failed",
            "jobName": resource.job_name_for(name),
            "error": {"code": "BAD_CSV", "message": "row 3", "retryable": False}
            if not name.endswith("a") else None,
        }},
    )  # fmt: skip


def _pod(kube_api: k8s.ApiClient, namespace: str, name: str, service_account: str) -> str:
    """A pod as the Job controller names them (`<job>-<5 chars>`); its uid."""
    pod = k8s.CoreV1Api(kube_api).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": False,
                "containers": [{"name": "processor", "image": "exportjobs-processor:test"}],
            },
        },
    )
    return str(pod.metadata.uid)


def _token(namespace: str, service_account: str, *, pod: tuple[str, str] | None) -> str:
    """`kubectl create token`, bound to a pod (name, uid) like a projected token, or not."""
    args = [tool("kubectl"), "-n", namespace, "create", "token", service_account]
    if pod is not None:
        args += [
            "--bound-object-kind", "Pod",
            "--bound-object-name", pod[0],
            "--bound-object-uid", pod[1],
        ]  # fmt: skip
    return run(args).stdout.strip()


class AsProcessor:
    """Merge patches on ExportJobs' /status with a bearer token, as the processor sends them."""

    def __init__(self, cluster: LocalCluster, tmp_path: Path, namespace: str) -> None:
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        entry = config["clusters"][0]["cluster"]
        if "certificate-authority-data" in entry:
            self.ca = tmp_path / "ca.crt"
            self.ca.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
        else:
            self.ca = Path(entry["certificate-authority"])
        self.server = entry["server"]
        self.namespace = namespace
        self.http = urllib3.PoolManager(ca_certs=str(self.ca), retries=False)

    def patch_status(self, token: str, name: str, body: dict[str, Any]) -> tuple[int, str]:
        url = (
            f"{self.server}/apis/{resource.API_VERSION}/namespaces/{self.namespace}/"
            f"{resource.PLURAL}/{name}/status"
        )
        response = self.http.request(
            "PATCH",
            url,
            body=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
            },
        )
        return response.status, response.data.decode()

    def wait_for_policy(self, unbound_token: str, name: str) -> None:
        """Return once the policy is enforced (it takes a moment to reach the API server's
        admission chain): a token bound to no pod is then refused even for progress."""
        probe = {"status": {"progress": {"bytesRead": 0}}}
        deadline = time.monotonic() + 30
        while self.patch_status(unbound_token, name, probe)[0] != 403:
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.3)


def _status(kube_api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        resource.GROUP, resource.VERSION, namespace, resource.PLURAL, name
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def test_the_processor_changes_only_its_own_progress(
    cluster: LocalCluster, kube_api: k8s.ApiClient, confinement: Installed, tmp_path: Path
) -> None:
    ns, sa = confinement.namespace, confinement.service_account
    own, other = "api-0123456789abcdef0123a", "api-0123456789abcdef0123b"
    for name in (own, other):
        _exportjob(kube_api, ns, name)
    own_pod = f"{resource.job_name_for(own)}-x7k2p"
    other_pod = f"{resource.job_name_for(other)}-q9z4m"
    own_token = _token(ns, sa, pod=(own_pod, _pod(kube_api, ns, own_pod, sa)))
    other_token = _token(ns, sa, pod=(other_pod, _pod(kube_api, ns, other_pod, sa)))
    unbound_token = _token(ns, sa, pod=None)
    processor = AsProcessor(cluster, tmp_path, ns)
    progress = {"status": {"progress": {"bytesRead": 10, "rows": 1}}}

    processor.wait_for_policy(unbound_token, own)
    before = {name: _status(kube_api, ns, name) for name in (own, other)}

    # The attack: a processor token forges another export's outcome.
    for token in (own_token, unbound_token):
        status, text = processor.patch_status(token, other, FORGED)
        assert status == 403, text
        assert confinement.policy in text
    # Another export's progress, from a pod of another Job.
    status, text = processor.patch_status(own_token, other, progress)
    assert status == 403
    assert f"does not run ExportJob {other}" in text
    status, text = processor.patch_status(other_token, own, progress)
    assert status == 403
    # Its own phase, result, error, conditions or job name.
    for forged in (
        FORGED,
        {"status": {"phase": "Succeeded"}},
        {"status": {"result": {"uri": f"s3://exports-output/{own}/x.csv"}}},
        {"status": {"conditions": []}},
        {"status": {"error": {"code": "INTERNAL", "message": "x", "retryable": True}}},
        {"status": {"jobName": "export-elsewhere"}},
        {"status": {"progress": {"rows": 2}, "phase": "Failed"}},
    ):
        status, text = processor.patch_status(own_token, own, forged)
        assert status == 403, (forged, text)
        assert "may change status.progress only" in text
    # An unbound token (the issue's `kubectl create token exportjobs-processor`) does nothing.
    status, text = processor.patch_status(unbound_token, own, progress)
    assert status == 403
    assert "not bound to a pod" in text
    assert {name: _status(kube_api, ns, name) for name in (own, other)} == before

    # Its own progress goes through.
    status, text = processor.patch_status(own_token, own, progress)
    assert status == 200, text
    assert _status(kube_api, ns, own)["progress"] == {"bytesRead": 10, "rows": 1}
    assert _status(kube_api, ns, own)["phase"] == "Running"
    assert _status(kube_api, ns, other) == before[other]


def test_the_real_progress_reporter_passes_the_policy(
    cluster: LocalCluster, kube_api: k8s.ApiClient, confinement: Installed, tmp_path: Path
) -> None:
    from export_processor.progress import ProgressReporter
    from export_processor.settings import KubeSettings

    ns, sa = confinement.namespace, confinement.service_account
    own = "s3-0123456789abcdef01234567"
    _exportjob(kube_api, ns, own + "a")  # `a`: Running
    own += "a"
    pod = f"{resource.job_name_for(own)}-b5c6d"
    token_file = tmp_path / "token"
    token_file.write_text(_token(ns, sa, pod=(pod, _pod(kube_api, ns, pod, sa))))
    processor = AsProcessor(cluster, tmp_path, ns)
    settings = KubeSettings(api_url=processor.server, token_file=token_file, ca_file=processor.ca)
    sample = {"status": {"progress": {"bytesRead": 5, "bytesTotal": 10, "rows": 3, "percent": 50}}}
    processor.wait_for_policy(_token(ns, sa, pod=None), own)
    reporter = ProgressReporter(settings=settings, namespace=ns, name=own, sample=lambda: sample)
    reporter.patch_once()
    assert reporter.patches_sent == 1
    assert _status(kube_api, ns, own)["progress"] == sample["status"]["progress"]


def test_the_chart_can_leave_the_policy_out() -> None:
    rendered = objects(template(values={"processor.admissionPolicy.enabled": "false"}).stdout)
    assert not [d for d in rendered if d["kind"].startswith("ValidatingAdmissionPolicy")]


def test_a_split_exports_range_pods_report_their_own_progress_only(
    cluster: LocalCluster, kube_api: k8s.ApiClient, confinement: Installed, tmp_path: Path
) -> None:
    """An Indexed Job's pods are `<job>-<index>-<5 chars>` (the Job name cut so that the prefix
    stays within 58): each may patch its range's progress of its own export, not another's."""
    ns, sa = confinement.namespace, confinement.service_account
    short, long = "split-0123456789a", "s3-0123456789abcdef0123456789abcdef0123456789abca"
    other = "split-0123456789b"
    for name in (short, long, other):
        _exportjob(kube_api, ns, name)
    processor = AsProcessor(cluster, tmp_path, ns)
    processor.wait_for_policy(_token(ns, sa, pod=None), short)
    progress = {"status": {"progress": {"ranges": {"3": {"bytesRead": 7, "rows": 2}}}}}
    for name in (short, long):
        job = resource.job_name_for(name)
        prefix = f"{job}-3-"
        if len(prefix) > 58:
            prefix = f"{job[: 58 - 3]}-3-"
        pod = f"{prefix}k2x9q"
        token = _token(ns, sa, pod=(pod, _pod(kube_api, ns, pod, sa)))
        status, text = processor.patch_status(token, name, progress)
        assert status == 200, (name, text)
        assert _status(kube_api, ns, name)["progress"]["ranges"]["3"] == {"bytesRead": 7, "rows": 2}
        status, text = processor.patch_status(token, other, progress)
        assert status == 403, text
        status, text = processor.patch_status(token, name, {"status": {"phase": "Succeeded"}})
        assert status == 403, text
