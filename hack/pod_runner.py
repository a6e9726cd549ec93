"""Play the kubelet for processor pods on the local (kwok) cluster: a dev/test tool.

The local cluster's nodes are simulated, and kwok leaves pods labelled `exportjobs.dev/export`
alone (hack/kwok-stages.yaml). This tool takes those pods once they are scheduled, runs each pod's
container command as a local process with the pod's environment, and reports the pod `Running`,
then `Succeeded` or `Failed` with the exit code and termination message, as a kubelet would. A pod
being deleted (a cancelled export) gets SIGTERM, then SIGKILL after its grace period. Everything
else in the end-to-end run is the real product.

    python hack/pod_runner.py --namespace NS [--kubeconfig PATH]

Differences from a kubelet, on purpose: the container's image is not pulled; its command (or,
without one, `--default-command`, the processor image's entrypoint) runs from this machine's
PATH; the termination message comes from the file named by `EXPORTJOBS_TERMINATION_MESSAGE_PATH`,
which the runner points at a temporary file; the ServiceAccount token is a fresh TokenRequest for
the pod's ServiceAccount, so API calls are authorised exactly as in a cluster.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch

LABEL = "exportjobs.dev/export"
log = logging.getLogger("pod-runner")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodRunner:
    def __init__(
        self, *, api: k8s.ApiClient, namespace: str, default_command: list[str], workdir: Path
    ) -> None:
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.default_command = default_command
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: set[str] = set()
        self.lock = threading.Lock()

    # -- environment -------------------------------------------------------------------------
    def _env_for(self, pod: Any, container: Any, pod_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        for source in container.env_from or []:
            if source.secret_ref is not None:
                data = self.core.read_namespaced_secret(source.secret_ref.name, self.namespace).data
                env.update({k: base64.b64decode(v).decode() for k, v in (data or {}).items()})
            if source.config_map_ref is not None:
                cm = self.core.read_namespaced_config_map(
                    source.config_map_ref.name, self.namespace
                )
                env.update(cm.data or {})
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None:
                resolved = self._resolve(pod, var.value_from)
                if resolved is not None:
                    env[var.name] = resolved
        # Point the in-cluster API settings at this cluster, with a real token of the pod's SA.
        cfg = self.api.configuration
        token = self.core.create_namespaced_service_account_token(
            pod.spec.service_account_name or "default",
            self.namespace,
            k8s.AuthenticationV1TokenRequest(
                spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        ).status.token
        (pod_dir / "token").write_text(token)
        env["EXPORTJOBS_KUBE_API_URL"] = cfg.host
        env["EXPORTJOBS_KUBE_TOKEN_FILE"] = str(pod_dir / "token")
        if cfg.ssl_ca_cert:
            env["EXPORTJOBS_KUBE_CA_FILE"] = cfg.ssl_ca_cert
        env["EXPORTJOBS_TERMINATION_MESSAGE_PATH"] = str(pod_dir / "termination-log")
        env["TMPDIR"] = str(pod_dir)
        return env

    def _resolve(self, pod: Any, value_from: Any) -> str | None:
        if value_from.secret_key_ref is not None:
            ref = value_from.secret_key_ref
            data = self.core.read_namespaced_secret(ref.name, self.namespace).data or {}
            return base64.b64decode(data[ref.key]).decode() if ref.key in data else None
        if value_from.config_map_key_ref is not None:
            ref = value_from.config_map_key_ref
            return (self.core.read_namespaced_config_map(ref.name, self.namespace).data or {}).get(
                ref.key
            )
        if value_from.field_ref is not None:
            path = value_from.field_ref.field_path
            return {
                "metadata.name": pod.metadata.name,
                "metadata.namespace": pod.metadata.namespace,
                "metadata.uid": pod.metadata.uid,
                "spec.nodeName": pod.spec.node_name,
                "spec.serviceAccountName": pod.spec.service_account_name,
            }.get(path) or (pod.metadata.labels or {}).get(
                path.removeprefix("metadata.labels['").removesuffix("']")
            )
        return None

    # -- status ------------------------------------------------------------------------------
    def _patch_status(self, pod: Any, status: dict[str, Any]) -> None:
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})

    def _run(self, pod: Any) -> None:
        name = pod.metadata.name
        container = pod.spec.containers[0]
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        try:
            env = self._env_for(pod, container, pod_dir)
        except Exception as exc:  # a kubelet reports, it does not crash
            log.exception("cannot prepare %s", name)
            self._terminated(pod, container, 128, "ContainerCannotRun", str(exc), _now())
            return
        command = list(container.command or self.default_command) + list(container.args or [])
        started = _now()
        log.info("running pod %s: %s", name, shlex.join(command))
        try:
            proc = subprocess.Popen(command, env=env, cwd=pod_dir)
        except OSError as exc:
            self._terminated(pod, container, 127, "StartError", str(exc), started)
            return
        with self.lock:
            self.processes[name] = proc
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                ],
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )
        code = proc.wait()
        with self.lock:
            self.processes.pop(name, None)
        message_file = pod_dir / "termination-log"
        message = message_file.read_text()[:4096] if message_file.exists() else ""
        reason = "Completed" if code == 0 else "Error"
        if code < 0:  # killed by a signal, as the container runtime reports it
            code = 128 - code
        try:
            self._terminated(pod, container, code, reason, message, started)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
        log.info("pod %s exited %s", name, code)

    def _terminated(
        self, pod: Any, container: Any, code: int, reason: str, message: str, started: str
    ) -> None:
        finished = _now()
        self._patch_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {"type": t, "status": "False", "lastTransitionTime": finished}
                    for t in ("Ready", "ContainersReady")
                ],
                "containerStatuses": [
                    {
                        "name": container.name,
                        "image": container.image,
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": reason,
                                "message": message,
                                "startedAt": started,
                                "finishedAt": finished,
                            }
                        },
                    }
                ],
            },
        )

    def _stop(self, pod: Any) -> None:
        with self.lock:
            proc = self.processes.get(pod.metadata.name)
        if proc is None or proc.poll() is not None:
            return
        grace = pod.spec.termination_grace_period_seconds or 30
        log.info(
            "pod %s is being deleted: SIGTERM, then SIGKILL after %ss", pod.metadata.name, grace
        )
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()

    # -- loop --------------------------------------------------------------------------------
    def serve(self) -> None:
        """Watch this namespace's processor pods until SIGTERM/SIGINT (raised as SystemExit)."""
        try:
            while True:
                stream = watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=LABEL,
                    timeout_seconds=60,
                )
                for event in stream:
                    self._handle(event["object"])
        finally:
            with self.lock:
                for proc in self.processes.values():
                    proc.terminate()

    def _handle(self, pod: Any) -> None:
        if pod.metadata.deletion_timestamp is not None:
            threading.Thread(target=self._stop, args=(pod,), daemon=True).start()
        elif (
            pod.spec.node_name
            and pod.status.phase == "Pending"
            and pod.metadata.uid not in self.started
        ):
            self.started.add(pod.metadata.uid)
            threading.Thread(target=self._run, args=(pod,), daemon=True).start()


def _exit(*_: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument(
        "--default-command",
        default="exportjobs-processor",
        help="command for a container that has none (the image entrypoint)",
    )
    parser.add_argument("--workdir", default=None, help="where pod folders go (default: a tmpdir)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pod-runner %(message)s", stream=sys.stderr
    )
    api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pod-runner-"))
    runner = PodRunner(
        api=api,
        namespace=args.namespace,
        default_command=shlex.split(args.default_command),
        workdir=workdir,
    )
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    runner.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
