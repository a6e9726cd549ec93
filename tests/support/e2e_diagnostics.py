"""What the end-to-end tier prints when one of its tests fails: which of the cluster's and the
node's processes are alive, the node's taints, conditions and allocated CPU and memory, the
pods that are not done, the latest events, the product's exports, Jobs, Deployments and
ReplicaSets, the operator's last lines and the last errors of the kubelet and of the control
plane. A failure on a CI machine is then explained by its own report (the cluster is gone when
someone reads it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

LINES = 25
"""At most this many lines of each part: the report stays readable in a CI log."""


def _run(args: list[str], env: Mapping[str, str]) -> str:
    """Its output and errors, never an exception (E2ECluster.kubectl drops stderr, which here
    is often the answer: "connection refused", "not found")."""
    try:
        result = subprocess.run(
            args, env=dict(env), capture_output=True, text=True, check=False, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return (result.stdout + result.stderr).strip()


def _tail(text: str, lines: int = LINES) -> str:
    kept = text.splitlines()
    cut = len(kept) - lines
    return "\n".join(([f"({cut} lines before)"] if cut > 0 else []) + kept[-lines:])


def _allocated(described: str) -> str:
    """`kubectl describe node`'s cpu and memory rows of "Allocated resources" (all of it when
    it has none: an error says why)."""
    out: list[str] = []
    keep = False
    for line in described.splitlines():
        if line and not line[0].isspace():
            keep = line.startswith("Allocated resources:")
        elif keep and line.split()[:1] in (["cpu"], ["memory"]):
            out.append(line.strip())
    return "\n".join(out) if out else described


NODE_STATE = (
    '{range .items[*]}{.metadata.name} taints={.spec.taints}{"\\n"}'
    '{range .status.conditions[*]}  {.type}={.status} {.reason}: {.message}{"\\n"}{end}{end}'
)
"""Each node's taints, then one line per condition (why Ready is False, if it is)."""


def _alive(pid_file: Path) -> str:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return "DEAD"
    return "alive"


def _errors(log: Path, lines: int) -> str:
    """The log's last error and warning lines (klog's E and W)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return _tail("\n".join(x for x in text.splitlines() if x.startswith(("E", "W"))), lines)


def processes(local_dir: Path) -> str:
    """`name alive|DEAD` for each pid file of the cluster (kwokctl's) and of the node, one line."""
    pid_files = sorted(local_dir.glob("kwok/clusters/*/pids/*.pid"))
    pid_files += sorted((local_dir / "node").glob("*.pid"))
    return ", ".join(f"{f.stem} {_alive(f)}" for f in pid_files)


def report(env: Mapping[str, str], namespace: str | None, local_dir: Path | None) -> str:
    def kubectl(*args: str) -> str:
        return _run(["kubectl", *args], env)

    # The local cluster's real node (its simulated one runs nothing); another cluster's nodes.
    real_node = ["-l", "exportjobs.dev/real-node=true"] if local_dir is not None else []
    parts = [("processes", processes(local_dir))] if local_dir is not None else []
    parts += [
        (
            "node",
            kubectl("get", "nodes", *real_node, "-o", f"jsonpath={NODE_STATE}")
            + "\n"
            + _allocated(kubectl("describe", "nodes", *real_node)),
        ),
        (
            "pods not done (all namespaces)",
            _tail(
                kubectl(
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "wide",
                    "--field-selector=status.phase!=Succeeded,status.phase!=Failed",
                )
            ),
        ),
        ("events", _tail(kubectl("get", "events", "-A", "--sort-by=.lastTimestamp"))),
    ]
    if namespace:
        parts += [
            (
                "exportjobs, jobs, deployments, replicasets",
                _tail(kubectl("-n", namespace, "get", "exportjobs,jobs,deploy,rs", "-owide"), 40),
            ),
            (
                "operator log",
                _tail(
                    kubectl("-n", namespace, "logs", "deploy/exportjobs-operator", "--tail=200"),
                    15,
                ),
            ),
        ]
    if local_dir is not None:
        logs = [local_dir / "node" / "kubelet.log"]
        logs += sorted(local_dir.glob("kwok/clusters/*/logs/kube-*.log"))
        parts += [(f"{log.name}: errors and warnings", _errors(log, 10)) for log in logs]
    return "\n".join(f"--- {title}\n{text}" for title, text in parts)
