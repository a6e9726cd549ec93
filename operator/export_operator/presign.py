"""Presigned download URLs for finished exports, from boto3.

Signing is local CPU work, but the first call may resolve credentials over the network (IRSA, pod
identity, IMDS), so it runs in the default executor, never on the event loop. URLs are cached per
result URI for half their lifetime: a client polling a finished export costs no signing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

from export_operator.resource import parse_s3_uri


def own_result_uri(obj: Mapping[str, Any], *, default_destination: str | None) -> str | None:
    """The result URI of an ExportJob when it lies under the export's own `<destination>/<id>/`
    (destination: its spec's, else `default_destination`), else None.

    Only such a result may be presigned: the processor writes its termination message itself, so
    a result naming any other object is forged (or the configuration is wrong) and must never
    become a download link.
    """
    result = ((obj.get("status") or {}).get("result") or {}).get("uri")
    if not isinstance(result, str):
        return None
    destination = ((obj.get("spec") or {}).get("destination") or {}).get("uri")
    destination = destination or default_destination
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(destination, str) or not destination or not isinstance(name, str):
        return None
    own = f"{destination.rstrip('/')}/{name}/"  # where the processor writes its output
    return result if result.startswith(own) else None


class Presigner:
    """Signs `GET` URLs for `s3://` result URIs."""

    def __init__(
        self, *, endpoint_url: str | None, region: str | None, expiry_seconds: int
    ) -> None:
        self._endpoint_url = endpoint_url
        self._region = region
        self._expiry = expiry_seconds
        self._client: Any = None
        self._cache: dict[str, tuple[float, str]] = {}

    def _sign(self, uri: str) -> str:
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
        location = parse_s3_uri(uri)
        url: str = self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": location.bucket, "Key": location.key},
            ExpiresIn=self._expiry,
        )
        return url

    async def url_for(self, uri: str) -> str:
        """A presigned URL for `uri`, valid for at least half the configured expiry.

        Raises:
            ValueError: when `uri` is not an `s3://bucket/key` URI.
        """
        now = time.monotonic()
        cached = self._cache.get(uri)
        if cached is not None and cached[0] > now:
            return cached[1]
        url = await asyncio.get_running_loop().run_in_executor(None, self._sign, uri)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[uri] = (now + self._expiry / 2, url)
        return url
