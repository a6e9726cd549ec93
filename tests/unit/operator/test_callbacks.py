"""The callback destination policy: schemes, literal and resolved addresses, the allowlist."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_operator.callbacks import CallbackPolicy, CallbackRefusedError

DEFAULT = CallbackPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "224.0.0.251",
        "240.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_unless_their_network_is_listed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    with pytest.raises(CallbackRefusedError, match="not on the allowlist"):
        DEFAULT.check_address(ip, host="receiver.example.com")
    network = "::/0" if ip.version == 6 and not address.startswith("::ffff") else "0.0.0.0/0"
    CallbackPolicy.parse(network).check_address(ip, host="receiver.example.com")


def test_a_name_resolving_to_a_private_address_says_so() -> None:
    with pytest.raises(CallbackRefusedError) as refused:
        DEFAULT.check_address(ipaddress.ip_address("10.1.1.1"), host="internal.example.com")
    assert "internal.example.com resolves to 10.1.1.1" in str(refused.value)


def test_public_addresses_pass_without_an_allowlist() -> None:
    DEFAULT.check_address(ipaddress.ip_address("93.184.216.34"), host="example.com")
    target = DEFAULT.check_url("https://Example.COM:8443/hook?a=1")
    assert (target.host, target.port, target.scheme) == ("example.com", 8443, "https")


def test_the_allowlist_limits_hosts_and_networks() -> None:
    policy = CallbackPolicy.parse("hooks.example.com, *.partner.example, 203.0.113.0/24")
    public = ipaddress.ip_address("93.184.216.34")
    policy.check_address(public, host="hooks.example.com")
    policy.check_address(public, host="a.b.partner.example")
    policy.check_address(ipaddress.ip_address("203.0.113.9"), host="anything.example.org")
    with pytest.raises(CallbackRefusedError):
        policy.check_address(public, host="partner.example")
    with pytest.raises(CallbackRefusedError):
        policy.check_address(public, host="evil.example.org")
    with pytest.raises(CallbackRefusedError, match="private"):
        # A listed name does not make a private address acceptable (DNS may lie).
        policy.check_address(ipaddress.ip_address("10.0.0.1"), host="hooks.example.com")


def test_env_parsing_names_the_variable() -> None:
    policy = CallbackPolicy.from_env(
        {"EXPORTJOBS_CALLBACK_ALLOWLIST": "127.0.0.0/8", "EXPORTJOBS_CALLBACK_ALLOW_HTTP": "yes"}
    )
    assert policy.allow_http and policy.networks == (ipaddress.ip_network("127.0.0.0/8"),)
    with pytest.raises(ValueError, match="EXPORTJOBS_CALLBACK_ALLOWLIST"):
        CallbackPolicy.from_env({"EXPORTJOBS_CALLBACK_ALLOWLIST": "not a host!"})
    with pytest.raises(ValueError, match="EXPORTJOBS_CALLBACK_ALLOW_HTTP"):
        CallbackPolicy.from_env({"EXPORTJOBS_CALLBACK_ALLOW_HTTP": "perhaps"})


@given(st.text(max_size=300))
def test_any_text_is_either_a_checked_url_or_refused_with_a_reason(text: str) -> None:
    try:
        target = DEFAULT.check_url(text)
    except CallbackRefusedError as exc:
        assert str(exc)
        return
    assert target.scheme == "https" and target.url == text
    assert target.host and " " not in target.host
    if target.literal is not None:
        assert target.literal.is_global


@given(
    st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,12}){0,3}", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
    st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,10}){0,4}", fullmatch=True),
)
def test_well_formed_https_urls_pass_the_static_check(host: str, port: int, path: str) -> None:
    url = f"https://{host}:{port}{path}"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        target = DEFAULT.check_url(url)
        assert (target.host, target.port) == (host, port)
