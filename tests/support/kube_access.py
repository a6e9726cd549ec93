"""The API-server access a processor run needs for its progress patches: a ServiceAccount token
(allowed to patch exportjobs/status, or not), the server's address and CA, and an ExportJob."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from kubernetes import client as k8s

from tests.support.cluster import LocalCluster


def service_account_token(kube_api: k8s.ApiClient, namespace: str, *, allowed: bool) -> str:
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "processor"}})
    if allowed:
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "processor"},
                "rules": [
                    {
                        "apiGroups": ["exportjobs.dev"],
                        "resources": ["exportjobs/status"],
                        "verbs": ["patch"],
                    }
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "processor"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "processor",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": "processor", "namespace": namespace}
                ],
            },
        )
    request = core.create_namespaced_service_account_token(
        "processor", namespace, {"spec": {"expirationSeconds": 3600}}
    )
    return str(request.status.token)


def ca_file_of(cluster: LocalCluster, tmp_path: Path) -> tuple[str, Path]:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = config["clusters"][0]["cluster"]
    if "certificate-authority-data" in entry:
        ca = tmp_path / "ca.crt"
        ca.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
    else:
        ca = Path(entry["certificate-authority"])
    return entry["server"], ca


def create_exportjob(
    kube_api: k8s.ApiClient, namespace: str, bucket: str, *, name: str = "ej", key: str = "in.csv"
) -> None:
    k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "exportjobs.dev",
        "v1alpha1",
        namespace,
        "exportjobs",
        {
            "apiVersion": "exportjobs.dev/v1alpha1",
            "kind": "ExportJob",
            "metadata": {"name": name},
            "spec": {"source": {"uri": f"s3://{bucket}/{key}"}, "format": "csv"},
        },
    )
