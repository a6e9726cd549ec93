"""The one settings pattern (export_processor.env_settings): values given in code are named flat, a
group's field as its variable without the component's prefix, for every component alike; given
values win over the environment; fields read from the whole environment (ReadBy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from export_operator.controller.settings import OperatorSettings
from export_operator.webhook.settings import WebhookSettings
from export_processor.env_settings import EnvSettings
from export_processor.settings import DEFAULT_CA_FILE, ProcessorSettings

COMPONENTS: list[type[EnvSettings]] = [WebhookSettings, OperatorSettings, ProcessorSettings]
PROCESSOR_ENV = {
    "EXPORTJOBS_SOURCE_URI": "s3://in/data.csv",
    "EXPORTJOBS_DESTINATION_URI": "s3://out/",
    "EXPORTJOBS_FORMAT": "csv",
}


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_every_group_field_given_flat_by_its_variable_reaches_its_field(
    component: type[EnvSettings],
) -> None:
    prefix = str(component.model_config.get("env_prefix", "")).lower()
    for group_name, group in component.groups().items():
        for field in group.model_fields:
            flat = group.env_name(field).lower().removeprefix(prefix)
            marker = object()
            assert component.route({flat: marker}) == {group_name: {field: marker}}, flat


def test_a_group_field_given_by_its_field_name_is_refused() -> None:
    """One routing: `block_size` is a field of `buffers`, not a name a caller may use."""
    with pytest.raises(ValueError, match="settings: block_size: Extra inputs"):
        ProcessorSettings.from_env(PROCESSOR_ENV, block_size=64)
    with pytest.raises(ValidationError, match="eventbridge_api_keys"):
        WebhookSettings(eventbridge_api_keys=("k",))


def test_given_values_win_over_the_environment_whatever_the_variable_is_called() -> None:
    env = {**PROCESSOR_ENV, "EXPORTJOBS_BLOCK_SIZE_BYTES": "1048576", "EXPORTJOBS_FORMAT": "csv"}
    settings = ProcessorSettings.from_env(env, block_size_bytes=65536, export_format="jsonl")
    assert (settings.buffers.block_size, settings.export_format) == (65536, "jsonl")
    operator = OperatorSettings.from_env({"EXPORTJOBS_OPERATOR_LEASE_NAME": "a"}, lease_name="b")
    assert operator.lease.name == "b"
    webhook = WebhookSettings.from_env(
        {"EXPORTJOBS_WEBHOOK_EVENTBRIDGE_API_KEY": "from-env"}, eventbridge_api_key=("given",)
    )
    assert webhook.auth.eventbridge_api_keys == ("given",)


@pytest.mark.parametrize(
    ("env", "api_url", "ca_file"),
    [
        ({}, None, DEFAULT_CA_FILE),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "https://10.0.0.1:443", DEFAULT_CA_FILE),
        (
            {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
            "https://[fd00::1]:6443",
            DEFAULT_CA_FILE,
        ),
        (
            {"EXPORTJOBS_KUBE_API_URL": "https://api/", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
            "https://api",
            DEFAULT_CA_FILE,
        ),
        ({"EXPORTJOBS_KUBE_CA_FILE": ""}, None, None),  # empty: the system CAs
        ({"EXPORTJOBS_KUBE_CA_FILE": "/ca.pem"}, None, Path("/ca.pem")),
    ],
)
def test_the_processor_finds_the_api_server_of_its_pod(
    env: dict[str, str], api_url: str | None, ca_file: Path | None
) -> None:
    kube = ProcessorSettings.from_env({**PROCESSOR_ENV, **env}).kube
    assert (kube.api_url, kube.ca_file) == (api_url, ca_file)
    assert {"KUBERNETES_SERVICE_HOST", "EXPORTJOBS_KUBE_CA_FILE"} <= ProcessorSettings.variables()
