"""SNS messages: signatures v1 (SHA1) and v2 (SHA256) verified against a certificate served over
local HTTPS by a test CA, host checks before any fetch, subscription confirmation."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from export_operator.webhook.sns import string_to_sign
from tests.support import samples
from tests.support.webhook_harness import Harness, MakeHarness

TOPIC = "arn:aws:sns:us-east-1:123456789012:exports"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    signing_key: rsa.RSAPrivateKey
    signing_cert_pem: bytes
    other_key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key, server_key, signing_key = key(), key(), key()
    ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
    server = _cert("127.0.0.1", server_key, "test CA", ca_key, ca=False)
    signing = _cert("sns.amazonaws.com", signing_key, "test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    return Pki(
        ca_pem=ca.public_bytes(pem),
        server_cert_pem=server.public_bytes(pem),
        server_key_pem=server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        signing_key=signing_key,
        signing_cert_pem=signing.public_bytes(pem),
        other_key=key(),
    )


@dataclass
class SnsEndpoint:
    base: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server_ssl(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "c.pem"), Path(tmp, "k.pem")
        cert_file.write_bytes(pki.server_cert_pem)
        key_file.write_bytes(pki.server_key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


@pytest.fixture
async def sns_endpoint(pki: Pki, server_ssl: ssl.SSLContext) -> AsyncIterator[SnsEndpoint]:
    """An HTTPS server on 127.0.0.1 serving the signing certificate and a SubscribeURL."""
    endpoint = SnsEndpoint(base="")

    async def cert(request: web.Request) -> web.Response:
        endpoint.hits.append(request.path_qs)
        return web.Response(body=pki.signing_cert_pem)

    async def confirm(request: web.Request) -> web.Response:
        endpoint.hits.append(request.path_qs)
        return web.Response(text="<ConfirmSubscriptionResponse/>")

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-test.pem", cert)
    app.router.add_get("/", confirm)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = runner.addresses[0][1]
    endpoint.base = f"https://127.0.0.1:{port}"
    yield endpoint
    await runner.cleanup()


def local_sns(pki: Pki, endpoint: SnsEndpoint, **overrides: Any) -> dict[str, Any]:
    """Settings that trust the local SNS stand-in (its host, port and CA) for topic TOPIC."""
    return {
        "sns_host_pattern": r"^127\.0\.0\.1$",
        "sns_port": int(endpoint.base.rsplit(":", 1)[1]),
        "sns_ssl_context": ssl.create_default_context(cadata=pki.ca_pem.decode()),
        "sns_topic_arns": (TOPIC,),
        **overrides,
    }


@pytest.fixture
async def sns_harness(make_harness: MakeHarness, pki: Pki, sns_endpoint: SnsEndpoint) -> Harness:
    return await make_harness(**local_sns(pki, sns_endpoint))


def now_iso(offset_seconds: float = 0) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str) -> dict[str, Any]:
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signed = dict(message, SignatureVersion=version)
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def notification(endpoint: SnsEndpoint, inner: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(inner),
        "Timestamp": now_iso(),
        "SigningCertURL": f"{endpoint.base}/SimpleNotificationService-test.pem",
        "UnsubscribeURL": f"{endpoint.base}/?Action=Unsubscribe",
        **extra,
    }


def subscription(endpoint: SnsEndpoint, kind: str, *, subscribe_url: str) -> dict[str, Any]:
    return {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": now_iso(),
        "SigningCertURL": f"{endpoint.base}/SimpleNotificationService-test.pem",
    }


async def post_sns(h: Harness, message: dict[str, Any], *, query: str = "?format=csv") -> Any:
    # SNS posts its JSON as text/plain, with no Authorization header.
    return await h.client.post(
        "/v1/events/s3" + query,
        data=json.dumps(message),
        headers={"x-amz-sns-message-type": message["Type"], "Content-Type": "text/plain"},
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_creates_the_export(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki, version: str
) -> None:
    event = samples.s3_event(bucket="in-bucket", key="sns+file%2B1.csv")
    message = sign(notification(sns_endpoint, event), pki.signing_key, version)
    response = await post_sns(sns_harness, message)
    assert response.status == 202, await response.text()
    [name] = (await response.json())["ids"]
    obj = sns_harness.store.objects[name]
    assert obj["spec"]["source"]["uri"] == "s3://in-bucket/sns file+1.csv"
    assert obj["metadata"]["labels"]["exportjobs.dev/source-kind"] == "sns"


async def test_notification_without_subject_verifies(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    message = notification(sns_endpoint, samples.s3_event())
    del message["Subject"]
    response = await post_sns(sns_harness, sign(message, pki.signing_key, "2"))
    assert response.status == 202


async def test_the_certificate_is_fetched_once(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    for version in ("v1", "v2", "v3"):
        event = samples.s3_event(version=version)
        message = sign(notification(sns_endpoint, event), pki.signing_key, "2")
        assert (await post_sns(sns_harness, message)).status == 202
    assert sns_endpoint.hits == ["/SimpleNotificationService-test.pem"]
    assert len(sns_harness.store.objects) == 3


@pytest.mark.parametrize("tamper", ["message", "key", "version", "signature"])
async def test_bad_signatures_are_401_and_create_nothing(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki, tamper: str
) -> None:
    message = sign(notification(sns_endpoint, samples.s3_event()), pki.signing_key, "2")
    if tamper == "message":
        message["Message"] = json.dumps(samples.s3_event(key="other.csv"))
    elif tamper == "key":
        message = sign(notification(sns_endpoint, samples.s3_event()), pki.other_key, "2")
    elif tamper == "version":
        message["SignatureVersion"] = "1"  # signed with SHA256, checked as SHA1
    else:
        message["Signature"] = "not base64!"
    response = await post_sns(sns_harness, message)
    assert response.status == 401
    assert (await response.json())["code"] == "unauthorized"
    assert sns_harness.store.create_calls == 0


async def test_certificate_host_is_checked_before_fetching(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    port = sns_endpoint.base.rsplit(":", 1)[1]
    for url in (
        f"https://localhost:{port}/SimpleNotificationService-test.pem",
        f"http://127.0.0.1:{port}/SimpleNotificationService-test.pem",
        f"https://127.0.0.1:{port}/cert.txt",
    ):
        message = notification(sns_endpoint, samples.s3_event(), SigningCertURL=url)
        response = await post_sns(sns_harness, sign(message, pki.signing_key, "2"))
        assert response.status == 401
    assert sns_endpoint.hits == []
    assert sns_harness.store.create_calls == 0


async def test_default_allowlist_refuses_anything_but_aws(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    h = await make_harness(sns_topic_arns=(TOPIC,))  # the production host pattern and port
    message = sign(notification(sns_endpoint, samples.s3_event()), pki.signing_key, "2")
    assert (await post_sns(h, message)).status == 401
    assert sns_endpoint.hits == []


async def test_topic_allowlist(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    h = await make_harness(
        **local_sns(pki, sns_endpoint, sns_topic_arns=("arn:aws:sns:us-east-1:123456789012:other",))
    )
    message = sign(notification(sns_endpoint, samples.s3_event()), pki.signing_key, "2")
    assert (await post_sns(h, message)).status == 401
    assert h.store.create_calls == 0


async def test_subscription_is_confirmed_by_fetching_subscribe_url(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    url = f"{sns_endpoint.base}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37"
    message = sign(
        subscription(sns_endpoint, "SubscriptionConfirmation", subscribe_url=url),
        pki.signing_key,
        "1",
    )
    response = await post_sns(sns_harness, message)
    assert response.status == 200
    assert (await response.json())["status"] == "acknowledged"
    assert sns_endpoint.hits[-1].startswith("/?Action=ConfirmSubscription")


async def test_subscribe_url_on_another_host_is_not_fetched(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    port = sns_endpoint.base.rsplit(":", 1)[1]
    message = sign(
        subscription(
            sns_endpoint,
            "SubscriptionConfirmation",
            subscribe_url=f"https://localhost:{port}/?Action=ConfirmSubscription",
        ),
        pki.signing_key,
        "2",
    )
    assert (await post_sns(sns_harness, message)).status == 401
    assert not any("ConfirmSubscription" in hit for hit in sns_endpoint.hits)


async def test_unsigned_subscription_is_not_confirmed(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    url = f"{sns_endpoint.base}/?Action=ConfirmSubscription"
    message = sign(
        subscription(sns_endpoint, "SubscriptionConfirmation", subscribe_url=url),
        pki.other_key,
        "2",
    )
    assert (await post_sns(sns_harness, message)).status == 401
    assert not any("ConfirmSubscription" in hit for hit in sns_endpoint.hits)


async def test_unsubscribe_confirmation_is_acknowledged(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    message = sign(
        subscription(
            sns_endpoint, "UnsubscribeConfirmation", subscribe_url=f"{sns_endpoint.base}/?x=1"
        ),
        pki.signing_key,
        "2",
    )
    response = await post_sns(sns_harness, message)
    assert response.status == 200
    assert not any("x=1" in hit for hit in sns_endpoint.hits)


async def test_test_event_inside_sns_is_ignored(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    message = sign(notification(sns_endpoint, samples.AWS_TEST_EVENT), pki.signing_key, "2")
    response = await post_sns(sns_harness, message)
    assert response.status == 200
    assert (await response.json())["ignored"] == ["s3:TestEvent"]
    assert sns_harness.store.create_calls == 0


async def test_header_and_type_must_agree(sns_harness: Harness, sns_endpoint: SnsEndpoint) -> None:
    message = notification(sns_endpoint, samples.s3_event())
    response = await sns_harness.client.post(
        "/v1/events/s3",
        data=json.dumps(message),
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert response.status == 422
    response = await sns_harness.client.post(
        "/v1/events/s3", data=json.dumps(message), headers={"x-amz-sns-message-type": "Bogus"}
    )
    assert response.status == 422


async def test_sns_is_off_without_topics(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    h = await make_harness(**local_sns(pki, sns_endpoint, sns_topic_arns=()))
    for message in (
        sign(notification(sns_endpoint, samples.s3_event()), pki.signing_key, "2"),
        sign(
            subscription(
                sns_endpoint, "SubscriptionConfirmation", subscribe_url=f"{sns_endpoint.base}/"
            ),
            pki.signing_key,
            "2",
        ),
    ):
        response = await post_sns(h, message)
        assert response.status == 403
        problem = await response.json()
        assert problem["code"] == "sns-disabled"
        assert "EXPORTJOBS_WEBHOOK_SNS_TOPIC_ARNS" in problem["detail"]
    assert sns_endpoint.hits == []
    assert h.store.create_calls == 0


def test_sns_off_is_logged_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    from export_operator.webhook.app import sns_startup_line
    from tests.support.webhook_harness import make_settings

    assert "SNS is off" in sns_startup_line(make_settings())
    assert TOPIC in sns_startup_line(make_settings(sns_topic_arns=(TOPIC,)))


@pytest.mark.parametrize("offset", [-3601, -7200, 3601, -86400 * 365 * 10])
async def test_old_or_future_timestamps_are_refused(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki, offset: float
) -> None:
    message = notification(sns_endpoint, samples.s3_event(), Timestamp=now_iso(offset))
    response = await post_sns(sns_harness, sign(message, pki.signing_key, "2"))
    assert response.status == 401
    assert "outside the accepted window" in (await response.json())["detail"]
    assert sns_harness.store.create_calls == 0


async def test_the_window_is_configurable(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    h = await make_harness(**local_sns(pki, sns_endpoint, sns_max_age_seconds=60))
    message = notification(sns_endpoint, samples.s3_event(), Timestamp=now_iso(-120))
    assert (await post_sns(h, sign(message, pki.signing_key, "2"))).status == 401
    message = notification(sns_endpoint, samples.s3_event(), Timestamp=now_iso(-30))
    assert (await post_sns(h, sign(message, pki.signing_key, "2"))).status == 202


@pytest.mark.parametrize("field", ["SigningCertURL", "SubscribeURL"])
async def test_urls_on_another_port_are_refused_before_fetching(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki, field: str
) -> None:
    # One allowed port (443 in production; the issue: sns.<region>.amazonaws.com:18443 was
    # fetched). Here the stand-in's port is the allowed one and the URL names another.
    h = await make_harness(**local_sns(pki, sns_endpoint))
    if field == "SigningCertURL":
        message = notification(
            sns_endpoint,
            samples.s3_event(),
            SigningCertURL="https://127.0.0.1:18443/SimpleNotificationService-test.pem",
        )
    else:
        message = subscription(
            sns_endpoint,
            "SubscriptionConfirmation",
            subscribe_url="https://127.0.0.1:18443/?Action=ConfirmSubscription",
        )
    response = await post_sns(h, sign(message, pki.signing_key, "2"))
    assert response.status == 401
    assert "port 18443 is not allowed" in (await response.json())["detail"]
    assert not any("ConfirmSubscription" in hit for hit in sns_endpoint.hits)
    assert h.store.create_calls == 0


def test_the_production_port_is_443() -> None:
    from export_operator.webhook.settings import WebhookSettings

    assert WebhookSettings.from_env({}).sns.sns_port == 443


async def test_a_certificate_fetch_failure_has_its_own_code(
    make_harness: MakeHarness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    h = await make_harness(**local_sns(pki, sns_endpoint, sns_port=closed_port))
    message = notification(
        sns_endpoint,
        samples.s3_event(),
        SigningCertURL=f"https://127.0.0.1:{closed_port}/SimpleNotificationService-x.pem",
    )
    response = await post_sns(h, sign(message, pki.signing_key, "2"))
    assert response.status == 502
    problem = await response.json()
    assert problem["code"] == "sns-fetch-failed"
    assert response.headers["Retry-After"]
    assert h.store.create_calls == 0


async def test_a_certificate_url_answering_404_is_not_trusted(
    sns_harness: Harness, sns_endpoint: SnsEndpoint, pki: Pki
) -> None:
    message = notification(
        sns_endpoint,
        samples.s3_event(),
        SigningCertURL=f"{sns_endpoint.base}/missing.pem",
    )
    response = await post_sns(sns_harness, sign(message, pki.signing_key, "2"))
    assert response.status == 401
    assert sns_harness.store.create_calls == 0
