"""Amazon SNS HTTP(S) subscriptions: signature checks and subscription confirmation.

A message is trusted only if its topic is one of the configured topics (none configured = SNS is
off), its `Timestamp` is within the replay window, its `SigningCertURL` is `https` on port 443 of
an allowed host (by default `sns.<region>.amazonaws.com`), and the certificate fetched from there
(cached per URL) verifies the signature over the canonical string SNS signs (SignatureVersion 1:
SHA1withRSA, 2: SHA256withRSA). `SubscribeURL` is fetched only after the message verified and its
URL passed the same check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MESSAGE_TYPES = ("SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation")

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)  # fmt: skip


class SnsError(Exception):
    """The message is not authentic (bad signature, host, topic or shape)."""


class SnsUnavailableError(Exception):
    """The signing certificate or SubscribeURL could not be fetched (try again later)."""


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The canonical text SNS signs: `name\\nvalue\\n` for each present field, in order.

    Raises:
        SnsError: when the message type is unknown or a signed field is not a string.
    """
    kind = message.get("Type")
    if kind == "Notification":
        names: tuple[str, ...] = _NOTIFICATION_FIELDS
    elif kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        names = _SUBSCRIPTION_FIELDS
    else:
        raise SnsError(f"unknown SNS message type {kind!r}")
    parts = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsError(f"SNS message field {name} is missing")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


class SnsVerifier:
    """Verifies SNS messages; holds the certificate cache and the HTTP session."""

    def __init__(
        self,
        *,
        host_pattern: str,
        topic_arns: tuple[str, ...],
        max_age_seconds: float,
        ssl_context: ssl.SSLContext | None,
        session: aiohttp.ClientSession,
        timeout: float,
        port: int = 443,
    ) -> None:
        self._host = re.compile(host_pattern)
        self._port = port
        self._topics = topic_arns
        self._max_age = datetime.timedelta(seconds=max_age_seconds)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._certs: dict[str, rsa.RSAPublicKey] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.cert_fetches = 0
        """Certificates downloaded so far (tests check the cache)."""

    def check_url(self, url: Any, *, what: str) -> str:
        """Refuse URLs that are not `https` on an allowed host.

        Raises:
            SnsError: naming `what` when the URL is not allowed.
        """
        if not isinstance(url, str):
            raise SnsError(f"{what} is missing")
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or not self._host.match(parts.hostname):
            raise SnsError(f"{what} host is not allowed: {parts.hostname!r}")
        try:
            port = parts.port or 443
        except ValueError:
            raise SnsError(f"{what} has an invalid port") from None
        if port != self._port:
            raise SnsError(f"{what} port {port} is not allowed (only {self._port})")
        if parts.username or parts.password:
            raise SnsError(f"{what} must not carry credentials")
        return url

    def check_fresh(self, message: dict[str, Any], *, now: datetime.datetime | None = None) -> None:
        """Refuse a message whose `Timestamp` (ISO 8601 in UTC, e.g. `2012-04-26T20:45:04.751Z`)
        is further than the window from now (a replay).

        Raises:
            SnsError: when the Timestamp is missing, malformed or outside the window.
        """
        stamp = message.get("Timestamp")
        if not isinstance(stamp, str):
            raise SnsError("Timestamp is missing")
        try:
            sent = datetime.datetime.fromisoformat(stamp)
        except ValueError:
            raise SnsError(f"Timestamp is not an ISO 8601 time: {stamp[:64]!r}") from None
        if sent.tzinfo is None:
            raise SnsError("Timestamp has no time zone")
        now = now or datetime.datetime.now(datetime.UTC)
        if abs(now - sent) > self._max_age:
            raise SnsError(
                f"Timestamp {stamp} is outside the accepted window of "
                f"{int(self._max_age.total_seconds())} s"
            )

    async def verify(self, message: dict[str, Any]) -> None:
        """Return when `message` is authentic; raise `SnsError` when it is not.

        Raises:
            SnsError: bad signature, certificate host, topic or shape.
            SnsUnavailableError: the certificate could not be fetched.
        """
        topic = message.get("TopicArn")
        if topic not in self._topics:
            raise SnsError(f"topic {str(topic)[:256]!r} is not allowed")
        self.check_fresh(message)
        version = message.get("SignatureVersion")
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is SHA1withRSA
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsError(f"unsupported SignatureVersion {version!r}")
        cert_url = self.check_url(message.get("SigningCertURL"), what="SigningCertURL")
        if not urlsplit(cert_url).path.endswith(".pem"):
            raise SnsError("SigningCertURL does not name a .pem certificate")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SnsError("Signature is not base64") from None
        key = await self._public_key(cert_url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsError("the signature does not verify") from None

    async def confirm(self, message: dict[str, Any]) -> None:
        """Confirm a subscription by fetching its SubscribeURL (after `verify`).

        Raises:
            SnsError: the SubscribeURL host is not allowed.
            SnsUnavailableError: the SubscribeURL could not be fetched.
        """
        url = self.check_url(message.get("SubscribeURL"), what="SubscribeURL")
        try:
            async with self._get(url) as response:
                await response.read()
                if response.status != 200:
                    raise SnsUnavailableError(f"SubscribeURL answered {response.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SnsUnavailableError(f"SubscribeURL could not be fetched: {exc}") from exc

    def _get(self, url: str) -> Any:  # aiohttp's request context manager
        return self._session.get(url, ssl=self._ssl, timeout=self._timeout, allow_redirects=False)

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certs.get(url)
        if key is not None:
            return key
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            key = self._certs.get(url)
            if key is None:
                key = await self._fetch(url)
                if len(self._certs) > 64:
                    self._certs.clear()
                self._certs[url] = key
            return key

    async def _fetch(self, url: str) -> rsa.RSAPublicKey:
        try:
            async with self._get(url) as response:
                if response.status != 200:
                    # The host is AWS's, the path the sender's: no certificate, no trust.
                    raise SnsError(f"SigningCertURL answered {response.status}")
                pem = await response.content.read(64 * 1024)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SnsUnavailableError(f"SigningCertURL could not be fetched: {exc}") from exc
        self.cert_fetches += 1
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsError("SigningCertURL did not return a PEM certificate") from None
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsError("the signing certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsError("the signing certificate has no RSA key")
        return key
