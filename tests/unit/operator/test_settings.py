"""Settings from the environment."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_operator.controller.settings import PROCESSOR_POD_KINDS, OperatorSettings


def test_defaults_without_environment() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.max_running == 10
    assert settings.namespace == ""
    assert settings.standalone is False


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
    assert settings.max_running == 5
    assert settings.standalone is True
    assert settings.resync_interval_seconds == 0.5
    assert settings.processor_env == {"AWS_ENDPOINT_URL": "http://minio:9000"}
    assert settings.processor_image == "proc:2"


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
    for name, field in OperatorSettings.model_fields.items():
        assert field.description, name
        variable = OperatorSettings.env_name(name).removeprefix("EXPORTJOBS_OPERATOR_")
        assert variable in field.description or name == "callback_policy", name


def test_notification_settings_and_the_shared_callback_policy() -> None:
    settings = OperatorSettings.from_env(
        {
            "EXPORTJOBS_OPERATOR_NOTIFY_WINDOW_SECONDS": "60",
            "EXPORTJOBS_OPERATOR_NOTIFY_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "EXPORTJOBS_CALLBACK_ALLOWLIST": "10.0.0.0/8,hooks.example.com",
            "EXPORTJOBS_CALLBACK_ALLOW_HTTP": "true",
        }
    )
    assert settings.notify_window_seconds == 60
    assert settings.callback_policy.allow_http
    assert settings.callback_policy.hosts == ("hooks.example.com",)
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
    for key, value in settings.processor_pod.items():
        assert isinstance(value, PROCESSOR_POD_KINDS[key])


def test_log_level_is_read_and_checked() -> None:
    assert OperatorSettings.from_env({}).log_level == "INFO"
    assert (
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"
    )
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LOG_LEVEL": "LOUD"})
