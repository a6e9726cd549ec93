"""The whole product on the local cluster: chart objects via Helm, operator, webhook, pod runner."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.local_cluster import REPO, LocalCluster


def _load_stack_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("exportjobs_stack", REPO / "hack" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def product(cluster: LocalCluster, kube_api: k8s.ApiClient, tmp_path_factory: Any) -> Iterator[Any]:
    """The running product in a fresh namespace; `.webhook_url`, `.token`, `.namespace`."""
    stack_module = _load_stack_module()
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    state_dir: Path = tmp_path_factory.mktemp("stack")
    stack = stack_module.up(namespace=namespace, state_dir=state_dir)
    try:
        yield stack
    finally:
        stack.stop()
        stack_module.down(namespace=namespace, state_dir=state_dir)
        k8s.CoreV1Api(kube_api).delete_namespace(namespace)
