"""The Job manifest: name, owner, labels, env, security, failure policy, resources."""

from __future__ import annotations

import pytest

from export_operator.controller.jobs import (
    InvalidSpecError,
    build_job,
    resolve_inputs,
    scaled_resources,
)
from export_operator.controller.settings import OperatorSettings
from tests.support.factories import export

SETTINGS = OperatorSettings.from_env(
    {},
    default_destination_uri="s3://out/reports/",
    service_account="proc-sa",
    processor_image="proc:1",
    processor_env={"AWS_ENDPOINT_URL": "http://minio:9000"},
)


def _job(**spec_extra: object) -> dict:
    spec = {"source": {"uri": "s3://src/data/in.csv"}, "format": "parquet", **spec_extra}
    view = export("e1", spec=spec)
    return build_job(
        export=view, inputs=resolve_inputs(export=view, settings=SETTINGS), settings=SETTINGS
    )


def test_job_is_named_owned_and_labelled() -> None:
    job = _job()
    meta = job["metadata"]
    assert meta["name"] == "export-e1"
    assert meta["namespace"] == "ns"
    assert meta["labels"]["exportjobs.dev/export"] == "e1"
    assert meta["labels"]["app.kubernetes.io/component"] == "processor"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]
    [owner] = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "exportjobs.dev/v1alpha1",
        "kind": "ExportJob",
        "name": "e1",
        "uid": "uid-e1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_processor_environment() -> None:
    container = _job(
        csv={"delimiter": ";", "header": False, "quote": "'", "encoding": "latin-1"},
        source={"uri": "s3://src/data/in.csv", "versionId": "v7", "etag": "abc"},
    )["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "EXPORTJOBS_SOURCE_URI": "s3://src/data/in.csv",
        "EXPORTJOBS_SOURCE_VERSION_ID": "v7",
        "EXPORTJOBS_SOURCE_ETAG": "abc",
        "EXPORTJOBS_FORMAT": "parquet",
        "EXPORTJOBS_DESTINATION_URI": "s3://out/reports/",
        "EXPORTJOBS_CSV_DELIMITER": ";",
        "EXPORTJOBS_CSV_HEADER": "false",
        "EXPORTJOBS_CSV_QUOTE": "'",
        "EXPORTJOBS_CSV_ENCODING": "latin-1",
        "EXPORTJOBS_EXPORT_NAME": "e1",
        "EXPORTJOBS_EXPORT_NAMESPACE": "ns",
        "EXPORTJOBS_TERMINATION_MESSAGE_PATH": "/dev/termination-log",
    }


def test_restricted_security_and_tmp() -> None:
    pod = _job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == "processor"
    assert pod["serviceAccountName"] == "proc-sa"
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "1Gi"


def test_failure_policy_and_limits() -> None:
    spec = _job(backoffLimit=5, activeDeadlineSeconds=120)["spec"]
    assert spec["backoffLimit"] == 5
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["ttlSecondsAfterFinished"] == 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"] == {
        "containerName": "processor",
        "operator": "In",
        "values": [2, 3],
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[2]["action"] == "Count"


def test_defaults_from_settings() -> None:
    spec = _job()["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] == 3600


def test_resources_scale_with_a_known_size_up_to_the_cap() -> None:
    assert scaled_resources(source_size=None, settings=SETTINGS)["limits"]["memory"] == "1024Mi"
    ten_gib = scaled_resources(source_size=10 * 2**30, settings=SETTINGS)
    assert ten_gib["limits"]["memory"] == "1664Mi"  # 1Gi + 10 * 64Mi
    assert ten_gib["requests"]["memory"] == "896Mi"  # 256Mi + 10 * 64Mi
    huge = scaled_resources(source_size=10_000 * 2**30, settings=SETTINGS)
    assert huge["limits"]["memory"] == "4096Mi"
    assert huge["requests"]["memory"] == "4096Mi"


def test_size_annotation_scales_the_deadline() -> None:
    view = export("big", annotations={"exportjobs.dev/source-size-bytes": str(3 * 2**30)})
    job = build_job(
        export=view, inputs=resolve_inputs(export=view, settings=SETTINGS), settings=SETTINGS
    )
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + 3 * 600


def test_long_names_still_give_a_valid_job_name() -> None:
    view = export("x" * 63)
    job = build_job(
        export=view, inputs=resolve_inputs(export=view, settings=SETTINGS), settings=SETTINGS
    )
    assert len(job["metadata"]["name"]) <= 63


@pytest.mark.parametrize(
    ("spec", "settings", "message"),
    [
        ({"source": {"uri": "s3://src/a.csv"}, "format": "csv"}, OperatorSettings(), "destination"),
        (
            {"datasetId": "0" * 8 + "-0000-0000-0000-" + "0" * 12, "format": "csv"},
            SETTINGS,
            "DATASET_URI_TEMPLATE",
        ),
        ({"format": "csv"}, SETTINGS, "spec.source.uri is required"),
    ],
)
def test_unresolvable_specs_are_refused(
    spec: dict, settings: OperatorSettings, message: str
) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        resolve_inputs(export=export("e1", spec=spec), settings=settings)


def test_dataset_id_resolves_through_the_template() -> None:
    settings = SETTINGS.model_copy(
        update={"dataset_uri_template": "s3://datasets/{dataset_id}.csv"}
    )
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    inputs = resolve_inputs(
        export=export("e1", spec={"datasetId": uuid, "format": "jsonl"}), settings=settings
    )
    assert inputs.source_uri == f"s3://datasets/{uuid}.csv"
    assert inputs.destination_uri == "s3://out/reports/"


def test_processor_pod_placement_reaches_the_pod_template() -> None:
    placement = {
        "imagePullSecrets": [{"name": "regcred"}],
        "tolerations": [{"key": "batch", "operator": "Exists"}],
        "affinity": {"nodeAffinity": {}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone"}],
        "priorityClassName": "batch-low",
        "labels": {"cost-center": "reports", "exportjobs.dev/export": "other"},
        "annotations": {"sidecar.istio.io/inject": "false"},
    }
    settings = SETTINGS.model_copy(
        update={"job": SETTINGS.job.model_copy(update={"processor_pod": placement})}
    )
    view = export("e1", spec={"source": {"uri": "s3://src/data/in.csv"}, "format": "csv"})
    job = build_job(
        export=view, inputs=resolve_inputs(export=view, settings=settings), settings=settings
    )
    template = job["spec"]["template"]
    for key in ("imagePullSecrets", "tolerations", "affinity", "topologySpreadConstraints"):
        assert template["spec"][key] == placement[key]
    assert template["spec"]["priorityClassName"] == "batch-low"
    assert template["metadata"]["labels"]["cost-center"] == "reports"
    assert template["metadata"]["labels"]["exportjobs.dev/export"] == "e1"  # ours win
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Copies: a Job's manifest never shares lists with the settings.
    template["spec"]["tolerations"].append({})
    assert len(placement["tolerations"]) == 1
    # Without placement: none of the keys.
    plain = _job()["spec"]["template"]
    assert "tolerations" not in plain["spec"] and "annotations" not in plain["metadata"]
