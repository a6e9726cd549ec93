"""The local cluster with its real node comes up and goes down again and again, and each time
leaves the machine as it found it (sysctls, iptables chains, bridge and routes, mounts, cgroups,
the runtime's directories and processes: `hack/node.sh host-state`).

Runs before the rest of the tier (file order): the machine's one real node must be free.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.cluster import CLUSTER_SCRIPT, REPO, read_env_file

NODE_SCRIPT = REPO / "hack" / "node.sh"
NODE_LOCK = Path("/run/lock/exportjobs-node.lock")
LOCK_OWNER = Path("/run/lock/exportjobs-node.lock.owner")
pytestmark = pytest.mark.timeout(1800)


def _host_state(local_dir: Path) -> list[str]:
    out = subprocess.run(
        [str(NODE_SCRIPT), "host-state"],
        env={**os.environ, "EXPORTJOBS_LOCAL_DIR": str(local_dir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.splitlines())


def _wait_for_free_node(timeout: float, lock_path: Path = NODE_LOCK) -> None:
    """Block until no cluster on the machine holds the real node (its lock is free).

    The host state recorded before the first cycle must be the machine without any node: taken
    while another run's node is up, it lists that node's mounts and routes, and the comparison
    after our `down` fails for a reason that is not ours.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with lock_path.open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    owner = LOCK_OWNER.read_text().strip() if LOCK_OWNER.exists() else "?"
                    pytest.fail(f"the real node is still held by {owner} after {timeout:.0f}s")
                time.sleep(1)
                continue
            fcntl.flock(lock, fcntl.LOCK_UN)
            return


def test_the_host_state_is_recorded_only_once_the_node_is_free(tmp_path: Path) -> None:
    lock_path = tmp_path / "node.lock"
    lock_path.touch()
    holder = subprocess.Popen(["flock", str(lock_path), "sleep", "2"])
    try:
        time.sleep(0.5)  # the holder has the lock
        started = time.monotonic()
        _wait_for_free_node(timeout=30, lock_path=lock_path)
        assert time.monotonic() - started >= 1, "recorded while another run held the node"
        assert holder.poll() == 0
    finally:
        holder.kill()
        holder.wait()
    holder = subprocess.Popen(["flock", str(lock_path), "sleep", "30"])
    try:
        time.sleep(0.5)
        with pytest.raises(pytest.fail.Exception, match="still held"):
            _wait_for_free_node(timeout=1, lock_path=lock_path)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(
    bool(os.environ.get("EXPORTJOBS_TEST_KUBECONFIG")),
    reason="tests the local cluster's scripts; the tier runs against a given cluster",
)
def test_up_and_down_ten_times_leaves_the_host_as_it_was(tmp_path: Path) -> None:
    owner = LOCK_OWNER.read_text().strip() if LOCK_OWNER.exists() else ""
    assert not owner.endswith(f"e2e-{os.getpid()}"), "this session's own e2e cluster holds the node"
    cycles = int(os.environ.get("EXPORTJOBS_CLUSTER_CYCLES", "10"))
    local_dir = tmp_path / "cycles"
    env = {
        **os.environ,
        "EXPORTJOBS_LOCAL_DIR": str(local_dir),
        "EXPORTJOBS_CLUSTER_NAME": "exportjobs-cycles",
        "EXPORTJOBS_REAL_NODE": "1",
    }
    _wait_for_free_node(timeout=1500)
    before = _host_state(local_dir)
    timings: list[tuple[float, float]] = []
    try:
        for cycle in range(cycles):
            started = time.monotonic()
            subprocess.run([str(CLUSTER_SCRIPT), "up"], env=env, check=True)
            up = time.monotonic() - started
            values = read_env_file(local_dir / "cluster.env")
            kube = {**env, "KUBECONFIG": values["KUBECONFIG"], "PATH": values["PATH"]}
            ready = subprocess.run(
                [
                    "kubectl",
                    "get",
                    "node",
                    "exportjobs-node",
                    "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                ],
                env=kube,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert ready == "True", f"cycle {cycle}: node not Ready"
            assert _host_state(local_dir) != before, "the node changed nothing: it did not start"
            started = time.monotonic()
            subprocess.run([str(CLUSTER_SCRIPT), "down"], env=env, check=True)
            down = time.monotonic() - started
            timings.append((up, down))
            after = _host_state(local_dir)
            assert after == before, (
                f"cycle {cycle}: host changed\nbefore-only: {sorted(set(before) - set(after))}\n"
                f"after-only: {sorted(set(after) - set(before))}"
            )
    finally:
        subprocess.run([str(CLUSTER_SCRIPT), "down"], env=env, check=False)
    ups = sorted(t[0] for t in timings)
    downs = sorted(t[1] for t in timings)
    print(
        f"{cycles} cycles: up median {ups[len(ups) // 2]:.1f}s max {ups[-1]:.1f}s; "
        f"down median {downs[len(downs) // 2]:.1f}s max {downs[-1]:.1f}s"
    )
