"""The product's pods go away under traffic, as they do in a cluster: nothing is lost.

- The operator pod is deleted in the middle of a burst of 50 exports: its Deployment starts a new
  one, and every ExportJob still gets exactly one Job and succeeds.
- A webhook pod is deleted while a client pod posts through the Service: every request is
  answered 202 (a client retries connection errors and 503 + Retry-After, as clients must, but
  the preStop sleep means no connection is refused), no 5xx other than 503, and every id answered
  202 exists as an ExportJob.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_stack import FINAL, INPUT_BUCKET, E2ECluster, call

pytestmark = pytest.mark.timeout(1200)

OPERATOR = "app.kubernetes.io/component=operator"
WEBHOOK = "app.kubernetes.io/component=webhook"


def _pods(cluster: E2ECluster, namespace: str, selector: str) -> list[Any]:
    items = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _wait_ready(cluster: E2ECluster, namespace: str, deployment: str, replicas: int) -> None:
    cluster.kubectl(
        "-n",
        namespace,
        "rollout",
        "status",
        f"deployment/{deployment}",
        "--timeout=180s",
        timeout=200,
    )
    status = cluster.kubectl_json("-n", namespace, "get", "deployment", deployment)["status"]
    assert status.get("readyReplicas") == replicas, status


def test_operator_pod_deleted_mid_burst_every_export_gets_one_job(
    product: Any, e2e_s3: Any, e2e_cluster: E2ECluster
) -> None:
    ns = product.namespace
    key = f"burst/{uuid.uuid4().hex[:6]}/small.csv"
    e2e_s3.put_object(
        Bucket=INPUT_BUCKET,
        Key=key,
        Body=b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(50)),
    )
    (old,) = _pods(e2e_cluster, ns, OPERATOR)
    ids: list[str] = []
    for i in range(50):
        status, body = call(
            product,
            "POST",
            "/v1/exports",
            {"source": f"s3://{INPUT_BUCKET}/{key}", "format": "jsonl"},
        )
        assert status == 202, body
        ids.append(body["id"])
        if i == 15:
            # Mid-burst: the operator has taken some, queued or not yet seen the others.
            e2e_cluster.kubectl("-n", ns, "delete", "pod", old["metadata"]["name"], "--wait=false")
    _wait_ready(e2e_cluster, ns, "exportjobs-operator", 1)
    (new,) = _pods(e2e_cluster, ns, OPERATOR)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]

    deadline = time.monotonic() + 900
    phases: dict[str, str] = {}
    while time.monotonic() < deadline:
        exports = e2e_cluster.kubectl_json("-n", ns, "get", "exportjobs")["items"]
        phases = {
            e["metadata"]["name"]: (e.get("status") or {}).get("phase", "")
            for e in exports
            if e["metadata"]["name"] in ids
        }
        if len(phases) == len(ids) and all(p in FINAL for p in phases.values()):
            break
        time.sleep(2)
    assert set(phases.values()) == {"Succeeded"}, phases

    jobs = e2e_cluster.kubectl_json("-n", ns, "get", "jobs")["items"]
    owners: dict[str, list[str]] = {}
    for job in jobs:
        for ref in job["metadata"].get("ownerReferences", []):
            if ref["kind"] == "ExportJob" and ref["name"] in ids:
                owners.setdefault(ref["name"], []).append(job["metadata"]["name"])
    assert sorted(owners) == sorted(ids), set(ids) - set(owners)
    assert all(len(names) == 1 for names in owners.values()), {
        k: v for k, v in owners.items() if len(v) != 1
    }
    e2e_cluster.kubectl("-n", ns, "delete", "exportjobs", *ids, "--wait=false")


# The client pod: posts N exports through the Service at RATE per second; each request is retried
# (same Idempotency-Key) on a connection error or a 503, as a client must; prints one JSON line.
CLIENT = textwrap.dedent(
    """
    import json, os, time, urllib.error, urllib.request, uuid
    url, token = os.environ["URL"], os.environ["TOKEN"]
    n, rate = int(os.environ["N"]), float(os.environ["RATE"])
    out = {"accepted": [], "codes": {}, "unanswered": 0, "first_error_at": None}
    start = time.monotonic()
    for i in range(n):
        key = uuid.uuid4().hex
        body = json.dumps({"source": os.environ["SOURCE"], "format": "csv"}).encode()
        for attempt in range(100):
            req = urllib.request.Request(url + "/v1/exports", data=body, method="POST", headers={
                "Authorization": "Bearer " + token, "Content-Type": "application/json",
                "Idempotency-Key": key})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    code, payload = r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                code, payload = e.code, None
            except OSError:
                code, payload = 0, None
            out["codes"][str(code)] = out["codes"].get(str(code), 0) + 1
            if code == 202:
                out["accepted"].append(payload["id"])
                break
            if out["first_error_at"] is None:
                out["first_error_at"] = round(time.monotonic() - start, 2)
            if code not in (0, 503):
                break
            time.sleep(0.2)
        else:
            out["unanswered"] += 1
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    out["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(out))
    """
)


def test_webhook_pod_deleted_under_load_loses_no_202(
    product: Any, e2e_cluster: E2ECluster, tmp_path: Path
) -> None:
    ns = product.namespace
    requests, rate = 150, 15.0
    # No processing needed here: the operator is stopped, so the exports stay Pending.
    e2e_cluster.kubectl("-n", ns, "scale", "deployment/exportjobs-operator", "--replicas=0")
    e2e_cluster.kubectl(
        "-n", ns, "wait", "--for=delete", "pod", "-l", OPERATOR, "--timeout=120s", timeout=150
    )
    image = e2e_cluster.kubectl_json("-n", ns, "get", "deployment", "exportjobs-webhook")["spec"][
        "template"
    ]["spec"]["containers"][0]
    cluster_ip = e2e_cluster.kubectl_json("-n", ns, "get", "service", "exportjobs-webhook")["spec"][
        "clusterIP"
    ]
    name = f"load-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": image["image"],
                    "imagePullPolicy": image["imagePullPolicy"],
                    "command": ["python3", "-c", CLIENT],
                    "env": [
                        {"name": "URL", "value": f"http://{cluster_ip}:80"},
                        {"name": "TOKEN", "value": product.token},
                        {"name": "N", "value": str(requests)},
                        {"name": "RATE", "value": str(rate)},
                        {"name": "SOURCE", "value": f"s3://{INPUT_BUCKET}/load/input.csv"},
                    ],
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    manifest = tmp_path / "client.json"
    manifest.write_text(json.dumps(pod))
    victim = _pods(e2e_cluster, ns, WEBHOOK)[0]["metadata"]["name"]
    accepted: list[str] = []
    try:
        e2e_cluster.kubectl("apply", "-f", str(manifest))
        e2e_cluster.kubectl(
            "-n", ns, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s", timeout=150
        )
        time.sleep(3)  # under load
        e2e_cluster.kubectl("-n", ns, "delete", "pod", victim, "--wait=false")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            phase = e2e_cluster.kubectl_json("-n", ns, "get", "pod", name)["status"]["phase"]
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        assert phase == "Succeeded", e2e_cluster.kubectl("-n", ns, "logs", name, check=False)
        summary = json.loads(e2e_cluster.kubectl("-n", ns, "logs", name).strip().splitlines()[-1])
        accepted = summary["accepted"]
        print("load client:", {k: v for k, v in summary.items() if k != "accepted"})
        assert summary["unanswered"] == 0, summary
        assert len(accepted) == requests, summary
        server_errors = {
            c: n for c, n in summary["codes"].items() if c.startswith("5") and c != "503"
        }
        assert server_errors == {}, summary["codes"]
        # The webhook's preStop sleep keeps the deleted pod serving until kube-proxy has dropped
        # it: no connection is refused (without it, about one in 150 was).
        assert summary["codes"].get("0", 0) == 0, summary["codes"]
        # Every 202 was stored: each id exists as an ExportJob.
        stored = {
            e["metadata"]["name"]
            for e in e2e_cluster.kubectl_json("-n", ns, "get", "exportjobs")["items"]
        }
        assert set(accepted) <= stored, set(accepted) - stored
        # The Deployment replaced the pod.
        _wait_ready(e2e_cluster, ns, "exportjobs-webhook", 2)
        assert victim not in {p["metadata"]["name"] for p in _pods(e2e_cluster, ns, WEBHOOK)}
    finally:
        e2e_cluster.kubectl("-n", ns, "delete", "pod", name, "--wait=false", check=False)
        for start in range(0, len(accepted), 50):
            e2e_cluster.kubectl(
                "-n",
                ns,
                "delete",
                "exportjobs",
                *accepted[start : start + 50],
                "--wait=false",
                check=False,
            )
        e2e_cluster.kubectl("-n", ns, "scale", "deployment/exportjobs-operator", "--replicas=1")
        _wait_ready(e2e_cluster, ns, "exportjobs-operator", 1)
