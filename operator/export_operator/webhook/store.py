"""Writes and direct reads of ExportJobs on the API server, with errors as intent.

`KubeExportStore` is the only writer. Its failures are sorted for the HTTP layer:
`AlreadyExistsError` (the deterministic name is taken: a redelivery or an idempotent replay),
`StoreRejectedError` (the API server refused the object as invalid: the client's fault, 422), and
`StoreUnavailableError` (down, slow, overloaded or refusing for a reason that is not the client's:
503 + Retry-After)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from export_operator import resource
from export_operator.kube import Kube, KubeError, collection_path
from export_processor.common import Backoff

CREATE_ATTEMPTS = 2
"""Tries of one create before a 503: a create is safe to repeat (the name is deterministic, so a
first try that went through answers 409 = stored), and an API server that timed out once under
load usually answers the next (docs/benchmarks.md, "Soak"). Two, so a caller waits at most about
twice the API timeout (10 s by default: below SNS's 15 s)."""
CREATE_BACKOFF = Backoff(base=0.2, cap=1.0)


class AlreadyExistsError(Exception):
    """An ExportJob of that name exists already."""


class StoreRejectedError(Exception):
    """The API server refused the ExportJob as invalid (400/422): retrying will not help."""


class StaleVersionError(Exception):
    """The object changed since the resourceVersion a conditional write named: read again."""


class StoreUnavailableError(Exception):
    """The API server could not be reached, timed out, or refused for a transient reason."""


class ExportStore(Protocol):
    """Where ExportJobs are stored. The real one is the API server; unit tests use a dict."""

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create and return the stored object."""

    async def read(self, name: str) -> dict[str, Any] | None:
        """Read one ExportJob directly (not from the cache); None when absent."""

    async def cancel(self, name: str, *, resource_version: str) -> dict[str, Any] | None:
        """Set `spec.cancel: true` if the object is still at `resource_version`; the patched
        object, or None when absent. Raises `StaleVersionError` when it changed meanwhile."""

    async def ping(self) -> None:
        """Return when the API server answers; raise `StoreUnavailableError` otherwise."""


class KubeExportStore:
    """`ExportStore` on the Kubernetes API server, in one namespace (through `kube.Kube`)."""

    def __init__(self, *, kube: Kube, namespace: str) -> None:
        self._kube = kube
        self._collection = collection_path(resource.API_VERSION, resource.PLURAL, namespace)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                async with _translated_errors():
                    return await self._kube.create(self._collection, body)
            except AlreadyExistsError:
                if attempt == 1:
                    raise
                # After a try without an answer: if the object is the one we sent, that try
                # went through (or an identical request did): stored. Anything else was there.
                async with _translated_errors():
                    found = await self._kube.get(f"{self._collection}/{body['metadata']['name']}")
                if not _same_request(found, body):
                    raise
                return found
            except StoreUnavailableError:
                if attempt == CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(CREATE_BACKOFF.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, name: str) -> dict[str, Any] | None:
        try:
            async with _translated_errors():
                return await self._kube.get(f"{self._collection}/{name}")
        except _NotFoundError:
            return None

    async def cancel(self, name: str, *, resource_version: str) -> dict[str, Any] | None:
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"cancel": True}}
        try:
            async with _translated_errors():
                return await self._kube.patch(f"{self._collection}/{name}", body)
        except _NotFoundError:
            return None
        except AlreadyExistsError as exc:  # 409 on a patch: the resourceVersion is stale
            raise StaleVersionError(str(exc)) from exc

    async def ping(self) -> None:
        async with _translated_errors():
            await self._kube.get("/version")


class _NotFoundError(Exception):
    pass


class _translated_errors:  # noqa: N801 - used as a context manager, named like one
    """Map the client's errors onto the store's."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if not isinstance(exc, KubeError):
            return
        if exc.status == 409:
            raise AlreadyExistsError(exc.message) from exc
        if exc.status == 404 and exc.reason == "NotFound" and _kind_is_export(exc):
            raise _NotFoundError from exc
        if exc.status in (400, 422):
            raise StoreRejectedError(exc.message) from exc
        if exc.status == 0:
            raise StoreUnavailableError(f"API server unreachable: {exc.message}") from exc
        # 401/403 (our credentials), 404 (namespace or CRD missing), 429, 5xx: not the client's
        # fault and possibly transient.
        raise StoreUnavailableError(f"API server answered {exc.status}: {exc.message}") from exc


def _same_request(stored: dict[str, Any], sent: dict[str, Any]) -> bool:
    """The stored object carries every spec field, label and annotation `sent` asked for (the
    API server may add defaults, never change what was sent)."""

    def holds(have: Any, want: Any) -> bool:
        have = have if isinstance(have, dict) else {}
        return all(have.get(k) == v for k, v in (want or {}).items())

    meta, asked = stored.get("metadata") or {}, sent.get("metadata") or {}
    return (
        holds(stored.get("spec"), sent.get("spec"))
        and holds(meta.get("labels"), asked.get("labels"))
        and holds(meta.get("annotations"), asked.get("annotations"))
    )


def _kind_is_export(exc: KubeError) -> bool:
    """A 404 about the ExportJob itself, not about its namespace or the CRD being absent."""
    return bool(exc.details.get("kind") == resource.PLURAL and exc.details.get("name"))
