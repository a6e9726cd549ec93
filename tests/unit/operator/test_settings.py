"""Settings from the environment."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_operator.controller.job_settings import PROCESSOR_POD_KINDS
from export_operator.controller.settings import OperatorSettings


def test_defaults_without_environment() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.admission.max_running == 10
    assert settings.namespace == ""
    assert settings.process.standalone is False


def test_values_are_parsed_by_type() -> None:
    settings = OperatorSettings.from_env(
        {
            "EXPORTJOBS_NAMESPACE": "exports",
            "EXPORTJOBS_OPERATOR_MAX_RUNNING": "5",
            "EXPORTJOBS_OPERATOR_STANDALONE": "true",
            "EXPORTJOBS_OPERATOR_RESYNC_INTERVAL_SECONDS": "0.5",
            "EXPORTJOBS_OPERATOR_PROCESSOR_ENV": '{"AWS_ENDPOINT_URL": "http://minio:9000"}',
            "EXPORTJOBS_OPERATOR_PROCESSOR_IMAGE": "proc:2",
        }
    )
    assert settings.namespace == "exports"
    assert settings.admission.max_running == 5
    assert settings.process.standalone is True
    assert settings.api.resync_interval_seconds == 0.5
    assert settings.job.processor_env == {"AWS_ENDPOINT_URL": "http://minio:9000"}
    assert settings.job.processor_image == "proc:2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EXPORTJOBS_OPERATOR_MAX_RUNNING", "many"),
        ("EXPORTJOBS_OPERATOR_MAX_RUNNING", "-1"),
        ("EXPORTJOBS_OPERATOR_STANDALONE", "perhaps"),
        ("EXPORTJOBS_OPERATOR_PROCESSOR_ENV", "[1, 2]"),
        ("EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI", "s3://out/no-slash"),
        ("EXPORTJOBS_OPERATOR_DEFAULT_DESTINATION_URI", "s3://o/r/"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name.removeprefix("EXPORTJOBS_OPERATOR_")):
        OperatorSettings.from_env({name: value})


def test_every_field_is_described_with_its_variable() -> None:
    groups = OperatorSettings.groups()
    assert len(groups) >= 7
    for kind in (OperatorSettings, *groups.values()):
        for name, field in kind.model_fields.items():
            assert field.description, name
            if name in groups or name == "callback_policy":
                continue
            variable = kind.env_name(name).removeprefix("EXPORTJOBS_OPERATOR_")
            assert variable in field.description, name


def test_the_groups_read_the_variables_of_their_fields() -> None:
    settings = OperatorSettings.from_env(
        {
            "EXPORTJOBS_OPERATOR_LEASE_NAME": "lease-x",
            "EXPORTJOBS_OPERATOR_NOTIFY_CONCURRENCY": "3",
            "EXPORTJOBS_OPERATOR_MEMORY_LIMIT": "2Gi",
        },
        workers=4,
    )
    assert settings.lease.name == "lease-x"
    assert settings.notify.concurrency == 3
    assert settings.pod.memory_limit == "2Gi"
    assert settings.api.workers == 4
    with pytest.raises(ValueError, match="LEASE_RENEW_DEADLINE_SECONDS"):
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LEASE_RENEW_DEADLINE_SECONDS": "9"})


def test_notification_settings_and_the_shared_callback_policy() -> None:
    settings = OperatorSettings.from_env(
        {
            "EXPORTJOBS_OPERATOR_NOTIFY_WINDOW_SECONDS": "60",
            "EXPORTJOBS_OPERATOR_NOTIFY_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "EXPORTJOBS_CALLBACK_ALLOWLIST": "10.0.0.0/8,hooks.example.com",
            "EXPORTJOBS_CALLBACK_ALLOW_HTTP": "true",
        }
    )
    assert settings.notify.window_seconds == 60
    assert settings.notify.callback_policy.allow_http
    assert settings.notify.callback_policy.hosts == ("hooks.example.com",)
    assert "whsec_" not in repr(settings)  # secrets stay out of logs
    names = OperatorSettings.variables()
    assert {"EXPORTJOBS_CALLBACK_ALLOWLIST", "EXPORTJOBS_CALLBACK_ALLOW_HTTP"} <= names
    for name, value in (
        ("EXPORTJOBS_OPERATOR_NOTIFY_SECRETS", "not-a-secret"),
        ("EXPORTJOBS_OPERATOR_NOTIFY_WINDOW_SECONDS", "0"),
        ("EXPORTJOBS_OPERATOR_NOTIFY_CONCURRENCY", "0"),
    ):
        with pytest.raises(ValueError, match=name.removeprefix("EXPORTJOBS_OPERATOR_")):
            OperatorSettings.from_env({name: value})


def test_the_operator_refuses_a_processor_pod_setting_it_does_not_know() -> None:
    for raw, complaint in (
        ('{"nodeName": "n1"}', "unknown key 'nodeName'"),
        ('{"tolerations": {}}', "tolerations must be a JSON list"),
        ('{"labels": {"a": 1}}', "labels must map strings to strings"),
        ('{"imagePullSecrets": ["regcred"]}', "imagePullSecrets must be a list"),
        ("[]", "expected a JSON object"),
    ):
        with pytest.raises(ValueError, match="PROCESSOR_POD") as raised:
            OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_PROCESSOR_POD": raw})
        assert complaint in str(raised.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*PROCESSOR_POD_KINDS, "nodeName", "x"]), _json, max_size=4))
def test_any_processor_pod_object_is_taken_as_typed_or_refused(pod: dict[str, object]) -> None:
    import json

    try:
        settings = OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_PROCESSOR_POD": json.dumps(pod)})
    except ValueError as exc:
        assert "PROCESSOR_POD" in str(exc)
        return
    for key, value in settings.job.processor_pod.items():
        assert isinstance(value, PROCESSOR_POD_KINDS[key])


def test_log_level_is_read_and_checked() -> None:
    assert OperatorSettings.from_env({}).process.log_level == "INFO"
    assert (
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LOG_LEVEL": "DEBUG"}).process.log_level
        == "DEBUG"
    )
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LOG_LEVEL": "LOUD"})
