"""One completion callback on the wire: the CloudEvent, its POST, and the verdict on the answer.

`Sender.post` resolves and checks the destination itself (no proxy, no redirects, the addresses
the policy checked are the ones connected to), with one timeout over all of it; `classify` turns
the receiver's answer into "delivered", "retry" (network errors, 5xx, 429 with its Retry-After)
or "stop". The notifier (notify.py) decides when to call it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from export_operator.callbacks import CallbackPolicy, CallbackRefusedError, CallbackTarget
from export_operator.public_view import client_view
from export_operator.resource import Phase

OUTCOMES = {Phase.SUCCEEDED: "succeeded", Phase.FAILED: "failed", Phase.CANCELLED: "cancelled"}
EVENT_TYPE_PREFIX = "dev.exportjobs.export."
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "exportjobs-operator (completion callback)"
MAX_ERROR = 1024
"""`status.notification.lastError` is at most this long (CRD)."""
RESPONSE_READ_LIMIT = 64 * 1024
"""Bytes of a receiver's answer read (and dropped) before the connection closes."""


def build_event(
    obj: Mapping[str, Any], *, source_prefix: str, download_url: str | None
) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode event for a finished ExportJob."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    outcome = OUTCOMES[Phase(str(status.get("phase")))]
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE_PREFIX + outcome,
        "source": f"{source_prefix}/namespaces/{meta.get('namespace')}/exportjobs",
        # Also the `webhook-id`: the same for every attempt of one export's outcome (receivers
        # deduplicate on it), another for a namesake created later (another uid).
        "id": f"{meta.get('uid')}.{outcome}",
        "subject": str(meta.get("name")),
        "time": status.get("completionTime"),
        "datacontenttype": "application/json",
        "data": client_view(obj, download_url=download_url),
    }


# -- one attempt ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to."""

    verdict: Literal["delivered", "retry", "stop"]
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked to wait (429/503 Retry-After)."""
    unsigned: bool = False
    """Not sent: no usable signing secret (yet: it is read again before the next attempt)."""

    @property
    def label(self) -> str:
        """The metric label: `2xx`, `3xx`, `4xx`, `429`, `5xx`, `network`, `refused` or
        `unsigned`."""
        code = self.status_code
        if self.unsigned:
            return "unsigned"
        if code is None:
            return "refused" if self.verdict == "stop" else "network"
        return "429" if code == 429 else f"{code // 100}xx"


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def classify(status_code: int, headers: Mapping[str, str], *, now: dt.datetime) -> Attempt:
    """The verdict on a receiver's answer."""
    if 200 <= status_code <= 299:
        return Attempt("delivered", status_code)
    if 300 <= status_code <= 399:
        location = headers.get("Location", "")[:200]
        return Attempt(
            "stop", status_code, f"HTTP {status_code}: redirect to {location!r} not followed"
        )
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    if status_code == 429 or status_code >= 500:
        return Attempt("retry", status_code, f"HTTP {status_code}", retry_after)
    return Attempt("stop", status_code, f"HTTP {status_code}: the receiver refused the event")


class PinnedResolver(AbstractResolver):
    """Answers with the addresses the policy already checked: aiohttp connects to exactly those,
    so a second DNS answer (rebinding) never reaches the socket."""

    def __init__(self, host: str, addresses: list[tuple[socket.AddressFamily, str]]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:  # never: one connector per attempt, one host
            raise OSError(f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=fam,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for fam, address in self._addresses
        ]

    async def close(self) -> None:
        return None


class Sender:
    """POSTs one signed body to a checked destination: DNS resolved and checked here, no proxy,
    no redirects, one timeout over all of it."""

    def __init__(
        self, *, policy: CallbackPolicy, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.ssl_context = ssl_context
        """TLS trust; None = the system's CAs (`SSL_CERT_FILE` adds a private CA)."""

    async def _resolve(self, target: CallbackTarget) -> list[tuple[socket.AddressFamily, str]]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
        addresses: list[tuple[socket.AddressFamily, str]] = []
        for family, _, _, _, sockaddr in infos:
            text = str(sockaddr[0]).split("%", 1)[0]
            self.policy.check_address(ipaddress.ip_address(text), host=target.host)
            if (family, text) not in addresses:
                addresses.append((family, text))
        if not addresses:
            raise OSError(f"{target.host} resolves to no address")
        return addresses

    async def post(
        self,
        target: CallbackTarget,
        *,
        body: bytes,
        headers: Mapping[str, str],
        now: Callable[[], dt.datetime],
    ) -> Attempt:
        all_headers = {**headers, "Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT}
        try:
            async with asyncio.timeout(self.timeout):
                # An address literal is connected to as it is: the resolver is not asked.
                addresses = await self._resolve(target) if target.literal is None else []
                connector = aiohttp.TCPConnector(
                    resolver=PinnedResolver(target.host, addresses),
                    use_dns_cache=False,
                    force_close=True,
                    ssl=self.ssl_context if self.ssl_context is not None else True,
                )
                async with (
                    aiohttp.ClientSession(connector=connector, trust_env=False) as session,
                    session.post(
                        target.url, data=body, headers=all_headers, allow_redirects=False
                    ) as response,
                ):
                    await response.content.read(RESPONSE_READ_LIMIT)
                    return classify(response.status, response.headers, now=now())
        except CallbackRefusedError as exc:
            return Attempt("stop", None, str(exc))
        except TimeoutError:
            return Attempt("retry", None, f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt("retry", None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
