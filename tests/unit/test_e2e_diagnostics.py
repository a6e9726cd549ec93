"""The end-to-end tier's failure report (tests/support/e2e_diagnostics.py) keeps what explains a
stuck pod and stays short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import e2e_diagnostics

DESCRIBED = """Name:               node-1
Roles:              <none>
Taints:             node.kubernetes.io/disk-pressure:NoSchedule
Conditions:
  Type             Status
  DiskPressure     True
Non-terminated Pods:          (2 in total)
  ns  export-a-x  250m (12%)
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource           Requests     Limits
  --------           --------     ------
  cpu                1950m (97%)  7 (350%)
  memory             2240Mi (9%)  8Gi (34%)
  ephemeral-storage  0 (0%)       0 (0%)
Events:              <none>
"""


def test_the_node_part_keeps_the_cpu_and_memory_allocated_only() -> None:
    assert e2e_diagnostics._allocated(DESCRIBED) == (
        "cpu                1950m (97%)  7 (350%)\nmemory             2240Mi (9%)  8Gi (34%)"
    )
    assert e2e_diagnostics._allocated("(connection refused)") == "(connection refused)"


def test_a_long_part_keeps_its_last_lines_and_says_how_many_went() -> None:
    text = "\n".join(f"line {i}" for i in range(100))
    assert e2e_diagnostics._tail(text, 3) == "(97 lines before)\nline 97\nline 98\nline 99"
    assert e2e_diagnostics._tail("a\nb", 3) == "a\nb"


def test_the_report_survives_a_missing_kubectl_and_keeps_errors_and_dead_processes(
    tmp_path: Path,
) -> None:
    node, cluster = tmp_path / "node", tmp_path / "kwok" / "clusters" / "c"
    (cluster / "pids").mkdir(parents=True)
    (cluster / "logs").mkdir()
    node.mkdir()
    (node / "kubelet.log").write_text(
        'I1207 ok\nE1207 12:00:00 failed to "CreatePodSandbox" no IP addresses\nW1207 slow\n'
    )
    (cluster / "logs" / "kube-scheduler.log").write_text("E1207 lost the API server\n")
    (node / "kubelet.pid").write_text(str(os.getpid()))
    (cluster / "pids" / "kube-scheduler.pid").write_text("999999999")
    text = e2e_diagnostics.report({"PATH": str(tmp_path)}, "ns", tmp_path)
    assert "--- node\n(" in text  # kubectl not found: said, not raised
    assert "--- operator log" in text
    assert "kube-scheduler DEAD" in text and "kubelet alive" in text
    assert "no IP addresses" in text and "W1207 slow" in text and "I1207 ok" not in text
    assert "E1207 lost the API server" in text


pytestmark = pytest.mark.unit
