"""The callback transport: TLS verifies the URL's host name while the socket goes to the address
the policy checked, and the name is resolved once per attempt (no second, unchecked answer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from export_operator.callbacks import CallbackPolicy
from export_operator.controller.notify import Sender

LOOPBACK = CallbackPolicy.parse("127.0.0.0/8", allow_http=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, *, ca: bool
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context for `hooks.test`, client context trusting its CA)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = _certificate("test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("hooks.test", key, ca_name, ca_key, ca=False)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


@pytest.fixture
async def https_receiver(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> AsyncIterator[tuple[int, list[str]]]:
    hosts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls[0])
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, hosts
    finally:
        await runner.cleanup()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answers of getaddrinfo for `*.test` names, one list item per call (the last repeats);
    every lookup of such a name is recorded under `__calls__`."""
    answers: dict[str, list[str]] = {"__calls__": []}
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self: Any, host: Any, port: Any, **kwargs: Any) -> list[Any]:
        if not str(host).endswith(".test"):
            return await real(self, host, port, **kwargs)
        answers["__calls__"].append(str(host))
        queue = answers[str(host)]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    return answers


async def post(sender: Sender, url: str) -> Any:
    target = sender.policy.check_url(url)
    return await sender.post(target, body=b"{}", headers={}, now=_now)


async def test_tls_verifies_the_host_name_on_the_checked_address(
    https_receiver: tuple[int, list[str]],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    fake_dns: dict[str, list[str]],
) -> None:
    port, hosts = https_receiver
    fake_dns["hooks.test"] = ["127.0.0.1"]
    sender = Sender(policy=LOOPBACK, timeout=5, ssl_context=tls[1])
    attempt = await post(sender, f"https://hooks.test:{port}/hook")
    assert (attempt.verdict, attempt.status_code) == ("delivered", 204)
    assert hosts == [f"hooks.test:{port}"]
    # The same server under a name its certificate does not carry: refused by TLS (retried).
    fake_dns["other.test"] = ["127.0.0.1"]
    mismatch = await post(sender, f"https://other.test:{port}/hook")
    assert mismatch.verdict == "retry" and "certificate" in (mismatch.error or "").lower()
    # And an untrusted certificate (the system CAs only).
    untrusted = await post(Sender(policy=LOOPBACK, timeout=5), f"https://hooks.test:{port}/hook")
    assert untrusted.verdict == "retry" and "certificate" in (untrusted.error or "").lower()


async def test_one_resolution_per_attempt_and_every_answer_checked(
    https_receiver: tuple[int, list[str]],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    fake_dns: dict[str, list[str]],
) -> None:
    port, hosts = https_receiver
    calls = fake_dns["__calls__"]
    # A rebinding name: an allowed address first, the metadata service on any later lookup.
    fake_dns["hooks.test"] = ["127.0.0.1", "169.254.169.254"]
    sender = Sender(policy=LOOPBACK, timeout=5, ssl_context=tls[1])
    attempt = await post(sender, f"https://hooks.test:{port}/hook")
    assert attempt.verdict == "delivered"
    assert calls == ["hooks.test"]  # aiohttp connected to the checked address, no 2nd lookup
    assert hosts == [f"hooks.test:{port}"]
    refused = await post(sender, f"https://hooks.test:{port}/hook")
    assert refused.verdict == "stop" and refused.status_code is None
    assert "hooks.test resolves to 169.254.169.254" in (refused.error or "")
    assert hosts == [f"hooks.test:{port}"]
    # A name resolving to a private address, with the default policy.
    fake_dns["internal.test"] = ["10.0.0.1"]
    private = await post(Sender(policy=CallbackPolicy(), timeout=5), "https://internal.test/hook")
    assert private.verdict == "stop"
    assert "internal.test resolves to 10.0.0.1" in (private.error or "")
