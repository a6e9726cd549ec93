"""The chart renders what a platform team can install: lint, schema, hardening, wiring.

These need only helm (no API server): what the chart puts in the objects, checked against the
components' own settings readers so a renamed variable fails here, not in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export_operator.controller.settings import OperatorSettings
from export_operator.webhook import settings as webhook_settings
from tests.support.helm import (
    CHART,
    EVERYTHING_ON,
    by_kind,
    container_env,
    objects,
    pod_specs,
    run,
    set_flags,
    template,
    tool,
)


def test_lint_strict_passes() -> None:
    run([tool("helm"), "lint", "--strict", str(CHART)])
    run(
        [
            tool("helm"),
            "lint",
            "--strict",
            str(CHART),
            *set_flags(EVERYTHING_ON),
        ]
    )


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": "3"}, "additional properties 'replicas' not allowed"),
        ({"webhook.replica": "3"}, "additional properties 'replica' not allowed"),
        ({"operator.leaderElection.enable": "true"}, "additional properties 'enable' not allowed"),
        (
            {"operator.leaderElection.enabled": "false", "operator.replicas": "2"},
            "operator.replicas > 1 needs operator.leaderElection.enabled",
        ),
        ({"containerSecurityContext.allowPrivilegeEscalation": "true"}, "allowPrivilegeEscalation"),
        ({"image.processor.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"s3.defaultDestination": "s3://bucket/no-trailing-slash"}, "defaultDestination"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(values: dict[str, str], complaint: str) -> None:
    result = template(values=values, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_every_value_is_commented() -> None:
    """Each key has a comment right above it, or sits inside a block whose key has one."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    ancestors: list[tuple[int, bool]] = []  # (indent, covered) of the enclosing keys
    uncovered = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        previous = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        commented = previous.strip().startswith("#")
        covered = commented or any(flag for _, flag in ancestors)
        if not covered and stripped.endswith(":"):
            # A block such as `image:` is covered when every key in it is.
            ancestors.append((indent, False))
            continue
        if not covered:
            uncovered.append(f"values.yaml:{number + 1}: {stripped}")
        ancestors.append((indent, covered))
    assert not uncovered, "values without a comment:\n" + "\n".join(uncovered)


def test_every_pod_and_container_is_restricted_with_only_tmp_writable() -> None:
    docs = objects(template(values=EVERYTHING_ON).stdout)
    specs = dict(pod_specs(docs))
    assert set(specs) == {"ej-exportjobs-webhook", "ej-exportjobs-operator"}
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, name
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
            assert [m["mountPath"] for m in writable] == ["/tmp"], name
            assert container["resources"]["requests"], name


def test_operator_runs_two_replicas_with_a_lease_and_is_probed_on_kopf_healthz() -> None:
    docs = objects(template().stdout)
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    assert env["EXPORTJOBS_OPERATOR_STANDALONE"] == "false"
    lease = env["EXPORTJOBS_OPERATOR_LEASE_NAME"]
    [role] = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-lease")]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [lease],
        "verbs": ["get", "patch"],
    } in role["rules"]
    [standalone] = [
        d
        for d in by_kind(
            objects(
                template(
                    values={"operator.leaderElection.enabled": "false", "operator.replicas": "1"}
                ).stdout
            ),
            "Deployment",
        )
        if d["metadata"]["name"].endswith("operator")
    ]
    assert standalone["spec"]["strategy"] == {"type": "Recreate"}
    assert container["command"] == ["exportjobs-operator"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == int(
        container_env(container)["EXPORTJOBS_OPERATOR_LIVENESS_PORT"]
    )


def test_operator_env_is_what_the_operator_reads() -> None:
    """Every EXPORTJOBS_* variable the chart sets is one OperatorSettings knows, and parses."""
    docs = objects(template(values=EVERYTHING_ON).stdout)
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    env = container_env(operator["spec"]["template"]["spec"]["containers"][0])
    known = OperatorSettings.variables()
    ours = {k for k in env if k.startswith("EXPORTJOBS_")}
    assert ours - known == set()
    settings = OperatorSettings.from_env(env)
    assert settings.namespace == "exports"
    assert settings.job.processor_image == "exportjobs-processor:0.1.0"
    assert settings.job.service_account == "ej-exportjobs-processor"
    assert settings.job.processor_env_secret == "ej-exportjobs-s3"
    assert settings.job.processor_env == {
        "AWS_ENDPOINT_URL": "http://minio.storage:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert settings.default_destination_uri == "s3://exports-output/reports/"
    assert settings.process.standalone is False  # two replicas elect a leader
    assert settings.lease.namespace == "exports"
    assert settings.lease.name == "ej-exportjobs-operator"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    envfrom = operator["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert envfrom == [{"secretRef": {"name": "ej-exportjobs-s3"}}]


def _operator_settings(values: dict[str, str]) -> OperatorSettings:
    docs = objects(template(values=values).stdout)
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    return OperatorSettings.from_env(
        container_env(operator["spec"]["template"]["spec"]["containers"][0])
    )


def test_owner_shares_come_from_the_principals_unless_given() -> None:
    """The operator's fair share (and the owners its metrics name) follow auth.principals:
    each principal's weight and maxRunning; operator.ownerShares, when set, replaces them."""
    principals = {
        "auth.principals.team-a.tokens[0]": "a-token-of-sixteen-chars",
        "auth.principals.team-a.weight": "2",
        "auth.principals.team-a.maxRunning": "5",
        "auth.principals.ops.tokens[0]": "another-token-of-sixteen",
        "auth.principals.ops.admin": "true",
    }
    shares = _operator_settings(principals).admission.shares
    assert {k: (v.weight, v.max_running) for k, v in shares.items()} == {
        "team-a": (2, 5),
        "ops": (1, None),
    }
    given = _operator_settings(
        {**principals, "operator.ownerShares.team-b.weight": "3"}
    ).admission.shares
    assert {k: (v.weight, v.max_running) for k, v in given.items()} == {"team-b": (3, None)}
    assert _operator_settings({}).admission.shares == {}


def test_cluster_mode_watches_all_namespaces() -> None:
    docs = objects(template(values={"rbac.cluster": "true"}).stdout)
    (operator,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    env = container_env(operator["spec"]["template"]["spec"]["containers"][0])
    assert OperatorSettings.from_env(env).namespace == ""
    cluster_roles = [d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")]
    # the operator's, and the two aggregated into view/edit/admin (they grant no one anything)
    assert [
        r for r in cluster_roles if not r.startswith(("ej-exportjobs-view-", "ej-exportjobs-edit-"))
    ] == ["ej-exportjobs-operator"]
    # webhook and processor stay namespaced, and so does the operator's Lease
    assert len(by_kind(docs, "Role")) == 3


def test_webhook_env_is_what_the_webhook_reads(tmp_path: Path) -> None:
    docs = objects(template(values=EVERYTHING_ON).stdout)
    (webhook,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("webhook")
    ]
    (container,) = webhook["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    assert container["command"] == ["exportjobs-webhook"]
    known = webhook_settings.WebhookSettings.variables()
    assert {k for k in env if k.startswith("EXPORTJOBS_")} - known == set()
    # The token files are mounted Secret folders in the pod; here, empty folders.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {
        env["EXPORTJOBS_WEBHOOK_TOKENS_FILE"],
        env["EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_FILE"],
    } <= mounts
    (tmp_path / "tokens").mkdir()
    (tmp_path / "tokens" / "tokens").write_text("t1\nt2\n")
    (tmp_path / "keys").mkdir()
    env["EXPORTJOBS_WEBHOOK_TOKENS_FILE"] = str(tmp_path / "tokens")
    env["EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_FILE"] = str(tmp_path / "keys")
    settings = webhook_settings.WebhookSettings.from_env(env)
    assert settings.namespace == "exports"
    assert settings.http.port == 8080
    assert settings.auth.tokens == ("t1", "t2")
    assert settings.presign.s3_endpoint_url == "http://minio.storage:9000"


def test_secrets_hold_tokens_and_keys_in_both_namespaces() -> None:
    docs = objects(template(values={**EVERYTHING_ON, "exportsNamespace": "data"}).stdout)
    secrets = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in by_kind(docs, "Secret")
    }
    assert set(secrets) == {
        ("exports", "ej-exportjobs-auth"),
        ("exports", "ej-exportjobs-s3"),
        ("data", "ej-exportjobs-s3"),
    }
    assert (
        secrets["exports", "ej-exportjobs-auth"]["stringData"]["tokens"]
        == "a-token-of-sixteen-chars"
    )
    assert (
        secrets["data", "ej-exportjobs-s3"]["stringData"]["AWS_SECRET_ACCESS_KEY"] == "minio-secret"
    )
    # With existing Secrets the chart makes none and points at them.
    docs = objects(
        template(values={"s3.existingSecret": "mine", "auth.existingSecret": "auth"}).stdout
    )
    assert by_kind(docs, "Secret") == []
    (webhook,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("webhook")
    ]
    volumes = {v["name"]: v for v in webhook["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "auth"


def test_each_component_can_have_its_own_s3_keys() -> None:
    """s3.componentKeys (least privilege): the processor's pods, the webhook and the operator
    each read their own Secret; a component not named keeps the shared keys."""
    values = {
        **EVERYTHING_ON,
        "exportsNamespace": "data",
        "s3.componentKeys.processor.accessKeyId": "processor-key",
        "s3.componentKeys.processor.secretAccessKey": "processor-secret",
        "s3.componentKeys.webhook.existingSecret": "webhook-keys",
    }
    docs = objects(template(values=values).stdout)
    secrets = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in by_kind(docs, "Secret")
    }
    own = secrets["data", "ej-exportjobs-s3-processor"]["stringData"]
    assert own == {
        "AWS_ACCESS_KEY_ID": "processor-key",
        "AWS_SECRET_ACCESS_KEY": "processor-secret",
    }
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}

    def env_from(name: str) -> list[str]:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        return [e["secretRef"]["name"] for e in container.get("envFrom", [])]

    assert env_from("ej-exportjobs-webhook") == ["webhook-keys"]
    assert env_from("ej-exportjobs-operator") == ["ej-exportjobs-s3"]
    (operator,) = deployments["ej-exportjobs-operator"]["spec"]["template"]["spec"]["containers"]
    assert container_env(operator)["EXPORTJOBS_OPERATOR_PROCESSOR_ENV_SECRET"] == (
        "ej-exportjobs-s3-processor"
    )
    result = template(values={"s3.componentKeys.operator.accessKeyId": "k"}, check=False)
    assert result.returncode != 0
    assert "s3.componentKeys.operator.secretAccessKey is required" in result.stderr


def test_names_fit_63_characters() -> None:
    long_release = "r" * 53  # helm's longest release name
    docs = objects(template(release=long_release).stdout)
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), names


def test_service_monitor_scrapes_both_metrics_ports() -> None:
    docs = objects(template(values={"serviceMonitor.enabled": "true"}).stdout)
    (monitor,) = by_kind(docs, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        d for d in by_kind(docs, "Service") if selector.items() <= d["metadata"]["labels"].items()
    ]
    ports = {p["name"] for s in services for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == ports == {"http", "metrics"}
    assert by_kind(objects(template().stdout), "ServiceMonitor") == []  # off by default


def test_webhook_disruption_budget_and_network_policy_select_its_pods() -> None:
    docs = objects(template().stdout)
    (webhook,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("webhook")
    ]
    pod_labels = webhook["spec"]["template"]["metadata"]["labels"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    (policy,) = by_kind(docs, "NetworkPolicy")
    for selector in (pdb["spec"]["selector"], policy["spec"]["podSelector"]):
        assert selector["matchLabels"].items() <= pod_labels.items()
        assert selector["matchLabels"]["app.kubernetes.io/component"] == "webhook"
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def _webhook_pod(values: dict[str, str] | None = None) -> dict[str, Any]:
    docs = objects(template(values=values).stdout)
    (webhook,) = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("webhook")
    ]
    pod: dict[str, Any] = webhook["spec"]["template"]["spec"]
    return pod


def test_webhook_keeps_serving_through_a_pre_stop_sleep_inside_its_grace_period() -> None:
    # A deleted pod leaves the Service's endpoints at once, but kube-proxy acts on that a moment
    # later: without the sleep, SIGTERM closed the listener first and new connections were refused.
    pod = _webhook_pod()
    (container,) = pod["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    shutdown = webhook_settings.WebhookSettings().http.shutdown_timeout_seconds
    assert pod["terminationGracePeriodSeconds"] >= 5 + shutdown
    off = _webhook_pod({"webhook.preStopSleepSeconds": "0"})
    assert "lifecycle" not in off["containers"][0]
    assert off["terminationGracePeriodSeconds"] >= shutdown


def test_notifications_mount_the_signing_secrets_and_share_the_policy() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    values = {
        **EVERYTHING_ON,
        "notifications.secrets[0]": secret,
        "notifications.allowlist[0]": "10.0.0.0/8",
        "notifications.allowlist[1]": "*.example.com",
        "notifications.allowHttp": "true",
        "notifications.windowSeconds": "3600",
        "webhook.callbackRules": "exports-input/demo/=http://10.0.0.9/hook",
    }
    docs = objects(template(values=values).stdout)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    operator = deployments["ej-exportjobs-operator"]["spec"]["template"]["spec"]
    env = container_env(operator["containers"][0])
    settings = OperatorSettings.from_env(env)
    assert settings.notify.window_seconds == 3600
    assert settings.notify.callback_policy.allow_http
    assert settings.notify.callback_policy.hosts == ("*.example.com",)
    mounts = {m["mountPath"]: m["name"] for m in operator["containers"][0]["volumeMounts"]}
    assert mounts[env["EXPORTJOBS_OPERATOR_NOTIFY_SECRETS_FILE"]] == "notify-secrets"
    (volume,) = [v for v in operator["volumes"] if v["name"] == "notify-secrets"]
    (stored,) = [
        s
        for s in by_kind(docs, "Secret")
        if s["metadata"]["name"] == volume["secret"]["secretName"]
    ]
    assert stored["stringData"] == {"secret-0": secret}
    webhook = deployments["ej-exportjobs-webhook"]["spec"]["template"]["spec"]
    webhook_env = container_env(webhook["containers"][0])
    webhook_env.pop("EXPORTJOBS_WEBHOOK_TOKENS_FILE")
    webhook_env.pop("EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY_FILE")
    parsed = webhook_settings.WebhookSettings.from_env(webhook_env)
    assert parsed.callback_for(bucket="exports-input", key="demo/a.csv") == "http://10.0.0.9/hook"

    plain = objects(template(values=EVERYTHING_ON).stdout)
    (operator_plain,) = [
        d for d in by_kind(plain, "Deployment") if d["metadata"]["name"].endswith("operator")
    ]
    spec = operator_plain["spec"]["template"]["spec"]
    assert "EXPORTJOBS_OPERATOR_NOTIFY_SECRETS_FILE" not in container_env(spec["containers"][0])
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    refused = template(values={"notifications.secrets[0]": "not-a-secret"}, check=False)
    assert refused.returncode != 0 and "secrets" in refused.stderr


def test_the_ingress_routes_only_the_api_by_default() -> None:
    """/metrics, the probes and /openapi.json stay inside the cluster (docs/security.md)."""
    docs = objects(template(values={"webhook.ingress.enabled": "true"}).stdout)
    (ingress,) = by_kind(docs, "Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/v1"]


PLACEMENT = {
    "imagePullSecrets[0].name": "global-regcred",
    "processor.imagePullSecrets[0].name": "batch-regcred",
    "processor.tolerations[0].key": "batch",
    "processor.tolerations[0].operator": "Exists",
    "processor.tolerations[0].effect": "NoSchedule",
    "processor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].key": "pool",
    "processor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].operator": "In",
    "processor.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    ".nodeSelectorTerms[0].matchExpressions[0].values[0]": "batch",
    "processor.topologySpreadConstraints[0].maxSkew": "1",
    "processor.topologySpreadConstraints[0].topologyKey": "topology.kubernetes.io/zone",
    "processor.topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
    "processor.topologySpreadConstraints[0].labelSelector.matchLabels.app": "x",
    "processor.priorityClassName": "batch-low",
    "processor.podLabels.cost-center": "reports",
    "processor.podAnnotations.example\\.com/team": "data",
    "webhook.imagePullSecrets[0].name": "web-regcred",
    "webhook.priorityClassName": "web-high",
    "webhook.podLabels.team": "data",
    "webhook.topologySpreadConstraints[0].maxSkew": "1",
    "webhook.topologySpreadConstraints[0].topologyKey": "kubernetes.io/hostname",
    "webhook.topologySpreadConstraints[0].whenUnsatisfiable": "DoNotSchedule",
    "operator.priorityClassName": "ops",
    "operator.podLabels.team": "data",
}


def test_processor_pods_get_every_placement_value_through_the_operator_settings() -> None:
    import json

    docs = objects(template(values=PLACEMENT).stdout)
    pods = dict(pod_specs(docs))
    env = container_env(pods["ej-exportjobs-operator"]["containers"][0])
    pod = json.loads(env["EXPORTJOBS_OPERATOR_PROCESSOR_POD"])
    assert pod["imagePullSecrets"] == [{"name": "global-regcred"}, {"name": "batch-regcred"}]
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["batch"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert pod["priorityClassName"] == "batch-low"
    assert pod["labels"] == {"cost-center": "reports"}
    assert pod["annotations"] == {"example.com/team": "data"}
    assert OperatorSettings.from_env(env).job.processor_pod == pod
    # Defaults: nothing at all.
    default_env = container_env(
        dict(pod_specs(objects(template().stdout)))["ej-exportjobs-operator"]["containers"][0]
    )
    assert json.loads(default_env["EXPORTJOBS_OPERATOR_PROCESSOR_POD"]) == {}


def test_webhook_and_operator_pods_get_the_same_knobs() -> None:
    docs = objects(template(values=PLACEMENT).stdout)
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"] for d in by_kind(docs, "Deployment")
    }
    web, ops = deployments["ej-exportjobs-webhook"], deployments["ej-exportjobs-operator"]
    assert web["spec"]["imagePullSecrets"] == [{"name": "global-regcred"}, {"name": "web-regcred"}]
    assert ops["spec"]["imagePullSecrets"] == [{"name": "global-regcred"}]
    assert web["spec"]["priorityClassName"] == "web-high"
    assert ops["spec"]["priorityClassName"] == "ops"
    assert web["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert web["metadata"]["labels"]["team"] == "data" == ops["metadata"]["labels"]["team"]
    # The selector labels stay what they were: a podLabel cannot break the Deployment.
    assert web["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook"
