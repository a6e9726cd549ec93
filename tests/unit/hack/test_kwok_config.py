"""The kwokctl configuration hack/cluster.sh writes: what each component is started with."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[3] / "hack" / "cluster.sh"


def _patches(real_node: int) -> dict[str, list[dict[str, Any]]]:
    out = subprocess.run(
        ["bash", "-c", f"source {CLUSTER}; real_node={real_node}; kwok_config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (config,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "KwokctlConfiguration"]
    return {p["name"]: p["extraArgs"] for p in config["componentsPatches"]}


@pytest.mark.parametrize("real_node", [0, 1])
def test_one_scheduler_and_controller_manager_without_leader_election(real_node: int) -> None:
    patches = _patches(real_node)
    for component in ("kube-scheduler", "kube-controller-manager"):
        # No `override`: kwokctl applies an override only to a flag it sets itself, and it does
        # not set --leader-elect (the patch was silently dropped).
        assert {"key": "leader-elect", "value": "false"} in patches[component], patches[component]
    apiserver = {a["key"] for a in patches.get("kube-apiserver", [])}
    assert ("advertise-address" in apiserver) is bool(real_node)
