"""Fixtures for the operator against the real API server: the CRD, the operator as a subprocess
(`exportjobs-operator`, exactly as deployed), a kubelet stand-in for processor pods, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.support.callback_receiver import allow_loopback, receiver, secrets_dir
from tests.support.cluster import LocalCluster
from tests.support.operator_process import (
    Exports,
    OperatorProcess,
)

# The callback fixtures of callbacks.py, for every module of the folder.
__all__ = ["allow_loopback", "receiver", "secrets_dir"]


@pytest.fixture
def exports(kube_api: k8s.ApiClient, namespace: str, crd: str) -> Exports:
    return Exports(kube_api, namespace)


@pytest.fixture
def operator(
    cluster: LocalCluster, namespace: str, crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator for the test's namespace (call `.start(**settings)`); stopped afterwards,
    its log printed when the test failed."""
    process = OperatorProcess(cluster=cluster, namespace=namespace, log_dir=tmp_path)
    try:
        yield process
    finally:
        process.stop()
        print(process.logs()[-20000:])


@pytest.fixture
def second_operator(
    cluster: LocalCluster, namespace: str, crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """Another operator process for the same namespace (a second replica)."""
    process = OperatorProcess(
        cluster=cluster, namespace=namespace, log_dir=tmp_path, name="operator-b"
    )
    try:
        yield process
    finally:
        process.stop()
        print(process.logs()[-20000:])
