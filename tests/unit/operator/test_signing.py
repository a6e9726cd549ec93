"""Standard Webhooks signatures: the convention's published example, rotation, bad secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from export_operator.controller.signing import (
    parse_secret,
    read_secrets,
    signature,
    signed_headers,
)

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specification_example() -> None:
    key = parse_secret(SPEC_SECRET)
    assert (
        signature(keys=(key,), msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
        == SPEC_SIGNATURE
    )


def test_two_secrets_sign_twice_for_rotation() -> None:
    other = "whsec_" + base64.b64encode(b"n" * 32).decode()
    keys = (parse_secret(SPEC_SECRET), parse_secret(other))
    headers = signed_headers(keys=keys, msg_id=SPEC_ID, timestamp=SPEC_TIMESTAMP, body=SPEC_BODY)
    first, second = headers["webhook-signature"].split(" ")
    assert first == SPEC_SIGNATURE and second.startswith("v1,") and second != first
    assert headers["webhook-id"] == SPEC_ID
    assert headers["webhook-timestamp"] == str(SPEC_TIMESTAMP)


@pytest.mark.parametrize(
    "text",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + "QUJD", "whsec_"],
)
def test_bad_secrets_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_secret(text)
    assert text.removeprefix("whsec_") not in str(refused.value) or not text.removeprefix("whsec_")


def test_secrets_from_inline_and_a_mounted_secret_directory(tmp_path: Path) -> None:
    new = "whsec_" + base64.b64encode(b"k" * 32).decode()
    (tmp_path / "current").write_text(new + "\n")
    (tmp_path / "previous").write_text(SPEC_SECRET)
    (tmp_path / "..data").mkdir()  # what a mounted Secret also holds: skipped
    keys = read_secrets(inline="", path=str(tmp_path))
    assert keys == (b"k" * 32, parse_secret(SPEC_SECRET))
    assert read_secrets(inline=SPEC_SECRET, path=str(tmp_path / "previous")) == (
        parse_secret(SPEC_SECRET),
    )
    assert read_secrets(inline="", path="") == ()
