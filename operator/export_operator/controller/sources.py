"""The size of a source object, for scaling the Job's resources (optional S3 HEAD)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from export_operator import resource

log = logging.getLogger(__name__)


class SourceSizer:
    """HEADs source objects with boto3 (standard AWS chain) in a worker thread."""

    def __init__(self) -> None:
        self._client: Any = None

    def _head(self, uri: str, version_id: str | None) -> int | None:
        import boto3  # only when HEAD_SOURCE is on: keeps start-up light otherwise

        if self._client is None:
            self._client = boto3.client("s3")
        location = resource.parse_s3_uri(uri)
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
        if version_id:
            kwargs["VersionId"] = version_id
        answer = self._client.head_object(**kwargs)
        size = answer.get("ContentLength")
        return int(size) if size is not None else None

    async def size_of(self, uri: str, *, version_id: str | None = None) -> int | None:
        """The object's size in bytes, or None when it cannot be known (never raises)."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._head, uri, version_id), timeout=10
            )
        except Exception as exc:  # the size only tunes resources: go on without it
            log.info("no size for %s: %s", uri, exc)
            return None
