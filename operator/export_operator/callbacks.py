"""Where completion callbacks (`spec.notify.url`) may go: one policy, webhook and operator.

The webhook checks a `callback_url` when it is posted (422 when it can never be allowed); the
operator checks it again before every delivery, then on every address the host name resolves to,
and connects only to the addresses it checked (so DNS rebinding cannot slip past the check).

Rules: https only unless `EXPORTJOBS_CALLBACK_ALLOW_HTTP`; no credentials in the URL; addresses
that are not globally routable (loopback, link-local such as 169.254.169.254, private, shared,
reserved, multicast, unspecified) only inside a network listed in `EXPORTJOBS_CALLBACK_ALLOWLIST`;
and when that allowlist is not empty, only the hosts (exact names or `*.suffix`) and networks it
lists.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from export_processor.common import parse_bool

ENV_ALLOWLIST = "EXPORTJOBS_CALLBACK_ALLOWLIST"
ENV_ALLOW_HTTP = "EXPORTJOBS_CALLBACK_ALLOW_HTTP"
MAX_URL_LENGTH = 2048
"""As `spec.notify.url` in the CRD."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_PATTERN = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class CallbackRefusedError(ValueError):
    """A callback destination the policy does not allow; the message is fit for a client."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A callback URL that passed the static checks."""

    url: str
    scheme: str
    host: str
    """Lower-case host name, or the IP address literal without brackets."""
    port: int
    literal: IPAddress | None
    """The address when the URL names one instead of a host name."""


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, kw_only=True)
class CallbackPolicy:
    """The destinations callbacks may be sent to."""

    allow_http: bool = False
    """`EXPORTJOBS_CALLBACK_ALLOW_HTTP=true`: plain http callbacks are allowed. Default false."""

    hosts: tuple[str, ...] = ()
    """Host names from `EXPORTJOBS_CALLBACK_ALLOWLIST` (exact, or `*.example.com` for any name
    below it)."""

    networks: tuple[IPNetwork, ...] = ()
    """CIDRs from `EXPORTJOBS_CALLBACK_ALLOWLIST`; the only way to allow loopback, link-local
    or private addresses (e.g. `10.0.0.0/8` for receivers inside the cluster)."""

    @property
    def restricted(self) -> bool:
        """Whether only listed hosts and networks are allowed (the allowlist is not empty)."""
        return bool(self.hosts or self.networks)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CallbackPolicy:
        """The policy from `EXPORTJOBS_CALLBACK_*` (default `os.environ`).

        Raises:
            ValueError: naming the variable, when a value cannot be parsed.
        """
        env = os.environ if environ is None else environ
        raw_http = env.get(ENV_ALLOW_HTTP, "")
        try:
            allow_http = parse_bool(raw_http) if raw_http else False
        except ValueError as exc:
            raise ValueError(f"{ENV_ALLOW_HTTP}: {exc}") from None
        try:
            return cls.parse(env.get(ENV_ALLOWLIST, ""), allow_http=allow_http)
        except ValueError as exc:
            raise ValueError(f"{ENV_ALLOWLIST}: {exc}") from exc

    @classmethod
    def parse(cls, allowlist: str, *, allow_http: bool = False) -> CallbackPolicy:
        """A policy from a comma-separated allowlist of host names and CIDRs.

        Raises:
            ValueError: on an entry that is neither.
        """
        hosts: list[str] = []
        networks: list[IPNetwork] = []
        for item in (part.strip() for part in allowlist.split(",")):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            name = item.lower().rstrip(".")
            if not _HOST_PATTERN.match(name):
                raise ValueError(f"{item!r} is neither a host name nor a CIDR")
            hosts.append(name)
        return cls(allow_http=allow_http, hosts=tuple(hosts), networks=tuple(networks))

    def host_listed(self, host: str) -> bool:
        """Whether a host name is on the allowlist."""
        for pattern in self.hosts:
            if pattern.startswith("*."):
                if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                    return True
            elif host == pattern:
                return True
        return False

    def check_url(self, url: object) -> CallbackTarget:
        """The static checks: scheme, shape, literal addresses, the host allowlist.

        Raises:
            CallbackRefusedError: saying why the URL is not allowed.
        """
        if not isinstance(url, str) or not url:
            raise CallbackRefusedError("callback_url must be an http(s) URL")
        if len(url) > MAX_URL_LENGTH:
            raise CallbackRefusedError(f"callback_url is longer than {MAX_URL_LENGTH} characters")
        if _UNSAFE.search(url) or not url.isascii():
            raise CallbackRefusedError(
                "callback_url may not contain spaces, control or non-ASCII characters"
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CallbackRefusedError(f"callback_url is not a valid URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme == "http" and not self.allow_http:
            raise CallbackRefusedError("callback_url must use https (http is not allowed here)")
        if scheme not in ("http", "https"):
            raise CallbackRefusedError("callback_url must be an http(s) URL")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefusedError("callback_url may not carry credentials")
        if parts.fragment:
            raise CallbackRefusedError("callback_url may not have a #fragment")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise CallbackRefusedError("callback_url names no host")
        literal: IPAddress | None
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None and not _HOST_PATTERN.match(host):
            raise CallbackRefusedError(f"callback_url: invalid host name {host!r}")
        target = CallbackTarget(
            url=url,
            scheme=scheme,
            host=host,
            port=port or (443 if scheme == "https" else 80),
            literal=literal,
        )
        if literal is not None:
            self.check_address(literal, host=host)
        elif self.restricted and not self.networks and not self.host_listed(host):
            raise CallbackRefusedError(f"callback host {host!r} is not on the allowlist")
        return target

    def check_address(self, address: IPAddress, *, host: str) -> None:
        """Whether `host` may be reached at `address` (one of the addresses it resolved to).

        Raises:
            CallbackRefusedError: naming the address and why it is refused.
        """
        plain = _unmapped(address)
        if any(plain in network for network in self.networks if network.version == plain.version):
            return
        shown = host if host == str(address) else f"{host} resolves to {address}"
        if not plain.is_global or plain.is_multicast or plain.is_reserved or plain.is_unspecified:
            kind = (
                "loopback"
                if plain.is_loopback
                else "link-local"
                if plain.is_link_local
                else "private or reserved"
            )
            raise CallbackRefusedError(
                f"callback refused: {shown}, a {kind} address not on the allowlist"
            )
        if self.restricted and not self.host_listed(host):
            raise CallbackRefusedError(f"callback refused: {shown}, not on the allowlist")
