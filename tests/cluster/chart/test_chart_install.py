"""The chart on the real API server: server-side dry run, `helm install`, and RBAC proven per
ServiceAccount with SubjectAccessReviews (what `kubectl auth can-i --as=...` asks)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from tests.support.cluster import LocalCluster
from tests.support.helm import CHART, objects, run, set_flags, template, tool

CRD = "exportjobs.exportjobs.dev"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# (group, resource, subresource) a namespaced Role could grant: every cell not expected is denied.
NAMESPACED = (
    ("exportjobs.dev", "exportjobs", ""),
    ("exportjobs.dev", "exportjobs", "status"),
    ("batch", "jobs", ""),
    ("", "pods", ""),
    ("", "pods", "log"),
    ("", "pods", "exec"),
    ("", "secrets", ""),
    ("", "configmaps", ""),
    ("", "events", ""),
    ("", "serviceaccounts", ""),
    ("", "services", ""),
    ("apps", "deployments", ""),
    ("coordination.k8s.io", "leases", ""),
    ("rbac.authorization.k8s.io", "roles", ""),
)
CLUSTER_SCOPED = (
    ("", "namespaces", ""),
    ("apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("", "nodes", ""),
)
# What each ServiceAccount needs in the exports namespace, and nothing more.
EXPECTED = {
    "webhook": {
        ("exportjobs.dev", "exportjobs", ""): {"get", "list", "watch", "create", "patch"},
    },
    "operator": {
        ("exportjobs.dev", "exportjobs", ""): {"get", "list", "watch", "delete"},
        ("exportjobs.dev", "exportjobs", "status"): {"patch"},
        ("batch", "jobs", ""): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "pods", ""): {"get", "list", "watch"},
        ("", "events", ""): {"create"},
        # Leader election: create any Lease (RBAC cannot limit create by name); get and update
        # only its own (checked by name below).
        ("coordination.k8s.io", "leases", ""): {"create"},
    },
    "processor": {
        ("exportjobs.dev", "exportjobs", "status"): {"patch"},
    },
}


def _fresh_namespace(core: k8s.CoreV1Api) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    return name


def _install(release: str, namespace: str, *extra: str) -> None:
    run(
        [
            tool("helm"),
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "90s",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster, kube_api: k8s.ApiClient) -> Iterator[str]:
    """The chart installed once (defaults, a token) into a fresh namespace; uninstalled after."""
    core = k8s.CoreV1Api(kube_api)
    namespace = _fresh_namespace(core)
    _install("ej", namespace, "--set", "auth.tokens[0]=a-token-of-sixteen-chars")
    try:
        yield namespace
    finally:
        run([tool("helm"), "uninstall", "ej", "--namespace", namespace, "--wait"], check=False)
        core.delete_namespace(namespace)


def _allowed(
    authz: k8s.AuthorizationV1Api,
    *,
    sa_namespace: str,
    sa: str,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    namespace: str,
) -> bool:
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{sa_namespace}:{sa}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            resource_attributes=k8s.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace or None,
            ),
        )
    )
    return bool(authz.create_subject_access_review(review).status.allowed)


def _grants(
    authz: k8s.AuthorizationV1Api,
    *,
    sa_namespace: str,
    sa: str,
    namespace: str,
    universe: tuple[tuple[str, str, str], ...],
) -> dict[tuple[str, str, str], set[str]]:
    found: dict[tuple[str, str, str], set[str]] = {}
    for (group, resource, sub), verb in itertools.product(universe, VERBS):
        if _allowed(
            authz,
            sa_namespace=sa_namespace,
            sa=sa,
            verb=verb,
            group=group,
            resource=resource,
            subresource=sub,
            namespace=namespace,
        ):
            found.setdefault((group, resource, sub), set()).add(verb)
    return found


def test_rendered_objects_pass_a_server_side_dry_run(
    namespace: str, kube_api: k8s.ApiClient
) -> None:
    other = _fresh_namespace(k8s.CoreV1Api(kube_api))
    try:
        for values in (
            {
                "webhook.ingress.enabled": "true",
                "s3.accessKeyId": "k",
                "s3.secretAccessKey": "s",
                "s3.endpointUrl": "http://127.0.0.1:9000",
                "auth.tokens[0]": "a-token-of-sixteen-chars",
            },
            {
                "rbac.cluster": "true",
                "exportsNamespace": other,
                "operator.leaderElection.enabled": "false",
                "operator.replicas": "1",
            },
        ):
            manifest = template(namespace=namespace, values=values).stdout
            kinds = {d["kind"] for d in objects(manifest)}
            assert {
                "Deployment",
                "Service",
                "Role",
                "RoleBinding",
                "ServiceAccount",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "Secret",
            } <= kinds
            result = run([tool("kubectl"), "apply", "--dry-run=server", "-f", "-"], stdin=manifest)
            assert "(server dry run)" in result.stdout
            assert result.stdout.count("(server dry run)") == len(objects(manifest))
    finally:
        k8s.CoreV1Api(kube_api).delete_namespace(other)


def test_install_succeeds_with_crd_and_running_pods(
    installed: str, kube_api: k8s.ApiClient
) -> None:
    apps = k8s.AppsV1Api(kube_api)
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(installed).items}
    assert set(deployments) == {"ej-exportjobs-webhook", "ej-exportjobs-operator"}
    for deployment in deployments.values():
        assert deployment.status.ready_replicas == deployment.spec.replicas
    k8s.ApiextensionsV1Api(kube_api).read_custom_resource_definition(CRD)
    status = run([tool("helm"), "status", "ej", "--namespace", installed]).stdout
    assert "STATUS: deployed" in status
    assert "/v1/exports" in status  # NOTES.txt shows how to send and poll an export


@pytest.mark.parametrize("component", ["webhook", "operator", "processor"])
def test_each_service_account_has_exactly_what_it_needs(
    installed: str, kube_api: k8s.ApiClient, component: str
) -> None:
    authz = k8s.AuthorizationV1Api(kube_api)
    sa = f"ej-exportjobs-{component}"
    here = _grants(authz, sa_namespace=installed, sa=sa, namespace=installed, universe=NAMESPACED)
    assert here == EXPECTED[component]
    # Nothing anywhere else, nothing cluster-scoped (rbac.cluster=false).
    assert (
        _grants(authz, sa_namespace=installed, sa=sa, namespace="default", universe=NAMESPACED)
        == {}
    )
    assert (
        _grants(authz, sa_namespace=installed, sa=sa, namespace="", universe=CLUSTER_SCOPED) == {}
    )


def test_the_operator_may_get_and_update_only_its_own_lease(
    installed: str, kube_api: k8s.ApiClient
) -> None:
    authz = k8s.AuthorizationV1Api(kube_api)

    def may(verb: str, lease: str) -> bool:
        review = k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{installed}:ej-exportjobs-operator",
                groups=["system:serviceaccounts", "system:authenticated"],
                resource_attributes=k8s.V1ResourceAttributes(
                    verb=verb,
                    group="coordination.k8s.io",
                    resource="leases",
                    name=lease,
                    namespace=installed,
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    assert may("get", "ej-exportjobs-operator") and may("patch", "ej-exportjobs-operator")
    assert not may("patch", "someone-elses-lease")
    assert not may("delete", "ej-exportjobs-operator")


def test_cluster_mode_lets_only_the_operator_act_everywhere(
    namespace: str, kube_api: k8s.ApiClient
) -> None:
    release = f"c{uuid.uuid4().hex[:6]}"
    _install(release, namespace, "--set", "rbac.cluster=true")
    try:
        authz = k8s.AuthorizationV1Api(kube_api)
        operator = _grants(
            authz,
            sa_namespace=namespace,
            sa=f"{release}-exportjobs-operator",
            namespace="default",
            universe=NAMESPACED,
        )
        # Everywhere the same rights, but the Lease's: those stay in the release namespace.
        everywhere = {k: v for k, v in EXPECTED["operator"].items() if k[1] != "leases"}
        assert operator == everywhere
        observed = _grants(
            authz,
            sa_namespace=namespace,
            sa=f"{release}-exportjobs-operator",
            namespace="",
            universe=CLUSTER_SCOPED,
        )
        assert observed == {}, "kopf scans nothing: no cluster-scoped rights"
        webhook = _grants(
            authz,
            sa_namespace=namespace,
            sa=f"{release}-exportjobs-webhook",
            namespace="default",
            universe=NAMESPACED,
        )
        assert webhook == {}
    finally:
        run([tool("helm"), "uninstall", release, "--namespace", namespace, "--wait"])
    # The ClusterRole went with the release; the CRD stays (Helm never deletes crds/ content).
    names = [
        r.metadata.name for r in k8s.RbacAuthorizationV1Api(kube_api).list_cluster_role().items
    ]
    assert f"{release}-exportjobs-operator" not in names
    k8s.ApiextensionsV1Api(kube_api).read_custom_resource_definition(CRD)


@pytest.mark.parametrize(
    ("component", "question", "answer"),
    [
        ("processor", ["patch", "exportjobs.exportjobs.dev", "--subresource=status"], "yes"),
        ("processor", ["get", "exportjobs.exportjobs.dev"], "no"),
        ("webhook", ["create", "exportjobs.exportjobs.dev"], "yes"),
        ("webhook", ["delete", "exportjobs.exportjobs.dev"], "no"),
        ("operator", ["create", "jobs.batch"], "yes"),
        ("operator", ["get", "secrets"], "no"),
    ],
)
def test_kubectl_auth_can_i_as_the_service_account_agrees(
    installed: str, component: str, question: list[str], answer: str
) -> None:
    """The same answers through impersonation, as an operator of the cluster would check."""
    user = f"system:serviceaccount:{installed}:ej-exportjobs-{component}"
    result = run(
        [tool("kubectl"), "auth", "can-i", *question, "-n", installed, f"--as={user}"],
        check=False,
    )
    assert result.stdout.strip() == answer, result.stderr


def _user_may(
    authz: k8s.AuthorizationV1Api, user: str, verb: str, namespace: str, sub: str = ""
) -> bool:
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:authenticated"],
            resource_attributes=k8s.V1ResourceAttributes(
                verb=verb,
                group="exportjobs.dev",
                resource="exportjobs",
                subresource=sub or None,
                namespace=namespace,
            ),
        )
    )
    return bool(authz.create_subject_access_review(review).status.allowed)


@pytest.mark.parametrize(
    ("role", "granted"),
    [
        ("view", {"get", "list", "watch"}),
        ("edit", set(VERBS)),
        ("admin", set(VERBS)),
    ],
)
def test_namespace_users_reach_exportjobs_through_the_default_roles(
    installed: str, kube_api: k8s.ApiClient, role: str, granted: set[str]
) -> None:
    """`kubectl get ej` for whoever may view the namespace: the chart's ClusterRoles aggregate
    into view / edit / admin (the controller-manager fills those in). Status stays denied."""
    import time

    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    user = f"user-{role}-{uuid.uuid4().hex[:6]}"
    rbac.create_namespaced_role_binding(
        installed,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name=user),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
            ),
            subjects=[
                k8s.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")
            ],
        ),
    )
    authz = k8s.AuthorizationV1Api(kube_api)
    deadline = time.monotonic() + 30
    while True:
        found = {verb for verb in VERBS if _user_may(authz, user, verb, installed)}
        if found == granted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found == granted
    for verb in ("update", "patch"):
        assert not _user_may(authz, user, verb, installed, "status")
    assert not _user_may(authz, user, "get", "default")


def _notes(values: dict[str, str]) -> str:
    out = run(
        [
            tool("helm"),
            "install",
            "ej",
            str(CHART),
            "-n",
            "exports",
            "--dry-run=client",
            *set_flags(values),
        ]
    ).stdout
    return out.split("NOTES:", 1)[1]


def test_notes_send_an_allowed_source_and_poll_the_status_field(cluster: LocalCluster) -> None:
    notes = _notes({"s3.allowedSources[0]": "s3://in-bucket/data/", "auth.tokens[0]": "x" * 16})
    assert '"source": "s3://in-bucket/data/reports/2024.csv"' in notes
    assert 'until "status" is Succeeded' in notes and '"phase"' not in notes
    # Without allowedSources, the default input location: the dataset folder.
    assert '"source": "s3://datasets/reports/2024.csv"' in _notes({})
