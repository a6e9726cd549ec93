"""Standard Webhooks signatures (https://www.standardwebhooks.com) for completion callbacks.

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`, one
per secret, space-separated: during a rotation the operator holds the old and the new secret and
signs with both, so receivers verify with either. Secrets are `whsec_<base64 key>`, as the
convention's libraries expect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from export_operator.secret_files import read_secret_values

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_KEY_BYTES = 24
"""Shorter keys are refused: the convention's own generators use 24 to 64 random bytes."""
MAX_SECRETS = 4


def parse_secret(text: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret.

    Raises:
        ValueError: when it is not one (the message never contains the secret).
    """
    value = text.strip()
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret must look like {SECRET_PREFIX}<base64>")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is not valid base64 after whsec_") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing secret must hold at least {MIN_KEY_BYTES} bytes")
    return key


def read_secrets(*, inline: str, path: str) -> tuple[bytes, ...]:
    """The signing keys: comma-separated `inline` secrets, then those in `path` (a file with one
    per line, or a mounted Secret directory whose every visible file holds one or more).

    Raises:
        ValueError: on a malformed secret, or more than `MAX_SECRETS`.
    """
    texts = [part for part in inline.split(",") if part.strip()]
    if path:
        texts += read_secret_values(path)
    keys = tuple(dict.fromkeys(parse_secret(text) for text in texts))
    if len(keys) > MAX_SECRETS:
        raise ValueError(f"at most {MAX_SECRETS} signing secrets at once")
    return keys


def signature(*, keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64>` per key, space-separated."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        for key in keys
    )


def signed_headers(
    *, keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(keys=keys, msg_id=msg_id, timestamp=timestamp, body=body),
    }
