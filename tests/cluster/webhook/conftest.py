"""The webhook against the real API server: the CRD, the app served on a real local port, and a
TCP proxy in front of the API server that tests can cut or freeze ("API server down" without
disturbing the session cluster other tests use)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.support.cluster import LocalCluster
from tests.support.exportjobs import ExportJobs
from tests.support.net import free_port
from tests.support.webhook_process import ApiProxy, kubeconfig_via, start_webhook

# The fixture that starts the webhook, for every module of the folder (and the operator's).
__all__ = ["start_webhook"]


@pytest.fixture
def exportjobs(kube_api: k8s.ApiClient, namespace: str, crd: str) -> ExportJobs:
    return ExportJobs(kube_api, namespace)


@pytest.fixture
async def api_proxy(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[tuple[ApiProxy, Path]]:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host_port = server.split("://", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    proxy = ApiProxy(host, int(port))
    await proxy.start()
    path = kubeconfig_via(
        cluster.kubeconfig, f"https://127.0.0.1:{proxy.port}", tmp_path / "kubeconfig"
    )
    yield proxy, path
    await proxy.close()


@pytest.fixture
def dead_kubeconfig(cluster: LocalCluster, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig whose server is a closed local port."""
    yield kubeconfig_via(
        cluster.kubeconfig, f"https://127.0.0.1:{free_port()}", tmp_path / "dead-kubeconfig"
    )
