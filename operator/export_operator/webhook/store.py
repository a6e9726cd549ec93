"""Writes and direct reads of ExportJobs on the API server, with errors as intent.

`KubeExportStore` is the only writer. Its failures are sorted for the HTTP layer:
`AlreadyExistsError` (the deterministic name is taken: a redelivery or an idempotent replay),
`StoreRejectedError` (the API server refused the object as invalid: the client's fault, 422), and
`StoreUnavailableError` (down, slow, overloaded or refusing for a reason that is not the client's:
503 + Retry-After)."""

from __future__ import annotations

from typing import Any, Protocol

from export_operator import resource
from export_operator.kube import Kube, KubeError, collection_path


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
        async with _translated_errors():
            return await self._kube.create(self._collection, body)

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


def _kind_is_export(exc: KubeError) -> bool:
    """A 404 about the ExportJob itself, not about its namespace or the CRD being absent."""
    return bool(exc.details.get("kind") == resource.PLURAL and exc.details.get("name"))
