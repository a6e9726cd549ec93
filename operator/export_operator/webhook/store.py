"""Writes and direct reads of ExportJobs on the API server, with errors as intent.

`KubeExportStore` is the only writer. Its failures are sorted for the HTTP layer:
`AlreadyExistsError` (the deterministic name is taken: a redelivery or an idempotent replay),
`StoreRejectedError` (the API server refused the object as invalid: the client's fault, 422), and
`StoreUnavailableError` (down, slow, overloaded or refusing for a reason that is not the client's:
503 + Retry-After)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from export_operator import resource


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
    """`ExportStore` on the Kubernetes API server, in one namespace."""

    def __init__(self, *, api: client.ApiClient, namespace: str, timeout: float) -> None:
        self._api = api
        self._objects = client.CustomObjectsApi(api)
        self._version = client.VersionApi(api)
        self._namespace = namespace
        self._timeout = timeout
        self._collection_url = (
            f"{api.configuration.host}/apis/{resource.GROUP}/{resource.VERSION}"
            f"/namespaces/{namespace}/{resource.PLURAL}"
        )
        self._client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """One POST on the client's own session (its connection pool, TLS and credentials).

        The create is the webhook's hot path, and the generated client's machinery (parameter
        checks, recursive sanitising of the body, header selection) cost more CPU per call than
        the HTTP exchange itself (docs/benchmarks.md, "Webhook"); the request is the same.
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        await self._api.update_params_for_auth(headers, [], ["BearerToken"])
        data = json.dumps(body, separators=(",", ":"))
        async with _translated_errors():
            session = self._api.rest_client.pool_manager
            async with session.post(
                self._collection_url, data=data, headers=headers, timeout=self._client_timeout
            ) as response:
                payload = await response.read()
                if response.status >= 400:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = payload
                    raise error
            created: dict[str, Any] = json.loads(payload)
            return created

    async def read(self, name: str) -> dict[str, Any] | None:
        try:
            async with _translated_errors():
                found: dict[str, Any] = await self._objects.get_namespaced_custom_object(
                    resource.GROUP,
                    resource.VERSION,
                    self._namespace,
                    resource.PLURAL,
                    name,
                    _request_timeout=self._timeout,
                )
                return found
        except _NotFoundError:
            return None

    async def cancel(self, name: str, *, resource_version: str) -> dict[str, Any] | None:
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"cancel": True}}
        try:
            async with _translated_errors():
                patched: dict[str, Any] = await self._objects.patch_namespaced_custom_object(
                    resource.GROUP,
                    resource.VERSION,
                    self._namespace,
                    resource.PLURAL,
                    name,
                    body,
                    _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                    _request_timeout=self._timeout,
                )
                return patched
        except _NotFoundError:
            return None
        except AlreadyExistsError as exc:  # 409 on a patch: the resourceVersion is stale
            raise StaleVersionError(str(exc)) from exc

    async def ping(self) -> None:
        async with _translated_errors():
            await self._version.get_code(_request_timeout=self._timeout)


class _NotFoundError(Exception):
    pass


class _translated_errors:  # noqa: N801 - used as a context manager, named like one
    """Map client exceptions onto the store's errors."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if exc is None:
            return
        if isinstance(exc, ApiException):
            status = exc.status or 0
            if status == 409:
                raise AlreadyExistsError(_api_message(exc)) from exc
            if status == 404 and _api_reason(exc) == "NotFound" and _kind_is_export(exc):
                raise _NotFoundError from exc
            if status in (400, 422):
                raise StoreRejectedError(_api_message(exc)) from exc
            # 401/403 (our credentials), 404 (namespace or CRD missing), 429, 5xx: not the
            # client's fault and possibly transient.
            raise StoreUnavailableError(
                f"API server answered {status}: {_api_message(exc)}"
            ) from exc
        if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            raise StoreUnavailableError(
                f"API server unreachable: {type(exc).__name__}: {exc}"
            ) from exc


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _api_message(exc: ApiException) -> str:
    return str(_status_body(exc).get("message") or exc.reason or "no message")


def _api_reason(exc: ApiException) -> str:
    return str(_status_body(exc).get("reason") or "")


def _kind_is_export(exc: ApiException) -> bool:
    """A 404 about the ExportJob itself, not about its namespace or the CRD being absent."""
    details = _status_body(exc).get("details") or {}
    return bool(details.get("kind") == resource.PLURAL and details.get("name"))
