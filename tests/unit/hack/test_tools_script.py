"""hack/tools.sh fails clearly, and leaves nothing half-built, when it cannot build."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.cluster import REPO

TOOLS = REPO / "hack" / "tools.sh"


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "EXPORTJOBS_TOOLS_DIR": str(tmp_path / "tools"), **env}
    return subprocess.run(
        [str(TOOLS), *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def test_missing_go_toolchain_is_named(tmp_path: Path) -> None:
    result = _run(tmp_path, "helm", PATH="/usr/bin:/bin")
    assert result.returncode == 1
    assert "no Go toolchain on PATH" in result.stderr
    assert not list((tmp_path / "tools").glob("helm-*"))


def test_failed_build_names_the_tool_and_leaves_no_partial_output(tmp_path: Path) -> None:
    result = _run(tmp_path, "helm", HELM_VERSION="v3.0.0-does-not-exist", GOFLAGS="")
    assert result.returncode == 1
    assert "building helm v3.0.0-does-not-exist-k8s1.34 failed" in result.stderr
    leftovers = sorted(
        p.name for p in (tmp_path / "tools").iterdir() if not p.name.endswith(".log")
    )
    assert leftovers == [".helm-v3.0.0-does-not-exist-k8s1.34.lock"]


def test_unknown_tool_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path, "kubelet")
    assert result.returncode == 1
    assert "unknown tool 'kubelet'" in result.stderr


def test_path_lists_one_versioned_folder_per_tool(tmp_path: Path) -> None:
    result = _run(tmp_path, "path")
    assert result.returncode == 0
    names = [Path(line).parent.name for line in result.stdout.splitlines()]
    assert [n.split("-v")[0] for n in names] == [
        "kube",
        "etcd",
        "kwok",
        "helm",
        "minio",
        "promql",
        "toxiproxy",
        "s3admin",
        "node",
    ]
