"""The one way the webhook and the operator reach the Kubernetes API: `KubeClient`.

get, list, watch, create, patch and delete on plain dicts, with one error type (`KubeError`) and
an explicit timeout on every call. Credentials and TLS settings come from a kubernetes_asyncio
`ApiClient` (in-cluster, or a kubeconfig: `new_api_client`), without the generated client's
per-call machinery (parameter checks, recursive sanitising of bodies, model objects). Calls go
through `kube_http.KubeHttp`, keep-alive connections that do per call only what a small JSON
exchange needs (less CPU than aiohttp's `ClientSession.request`: docs/benchmarks.md,
"Webhook"); watches, and every call when a proxy is configured, through the ApiClient's aiohttp
session. JSON through `fastjson` (orjson).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from kubernetes_asyncio import client, config

from export_operator import fastjson
from export_operator.kube_http import KubeHttp

MERGE_PATCH = "application/merge-patch+json"
Params = Mapping[str, str]


class KubeError(Exception):
    """A non-2xx answer of the API server; status 0 = no answer (connection, timeout)."""

    def __init__(self, status: int, message: str, reason: str = "", details: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        """The Status object's `reason` (`NotFound`, `AlreadyExists`, `Conflict`, ...)."""
        self.message = message
        self.details: dict[str, Any] = details if isinstance(details, dict) else {}

    @property
    def retryable(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


def collection_path(api_version: str, plural: str, namespace: str = "") -> str:
    """The URL path of a collection: `/api/v1/pods`, `/apis/batch/v1/namespaces/ns/jobs`."""
    root = "/api" if "/" not in api_version else "/apis"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{root}/{api_version}{scope}/{plural}"


def object_path(api_version: str, plural: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, plural, namespace)}/{name}"


async def new_api_client(
    *, kubeconfig: str | None = None, trust_env: bool = True
) -> client.ApiClient:
    """An ApiClient for in-cluster use, or for `kubeconfig` / `$KUBECONFIG` when given.

    `trust_env=False` stops the client from consulting `~/.netrc` and the proxy variables on every
    request, which kubernetes_asyncio's aiohttp session does in a worker thread per call.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = client.ApiClient(configuration=configuration)
    if not trust_env:
        # kubernetes_asyncio hard-codes trust_env=True on its session; aiohttp reads this flag
        # per request, so clearing it is enough.
        api.rest_client.pool_manager._trust_env = False
    return api


class Kube(Protocol):
    """The verbs on plain dicts: `KubeClient`, or the in-memory fake of the unit tests."""

    async def get(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]: ...

    async def list(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]: ...

    async def create(
        self, path: str, body: Mapping[str, Any], *, read: bool = True
    ) -> dict[str, Any]: ...

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        read: bool = True,
    ) -> dict[str, Any]: ...

    async def delete(
        self, path: str, *, body: Mapping[str, Any] | None = None, params: Params | None = None
    ) -> None: ...

    def watch(
        self, path: str, *, params: Params, read_timeout: float, connect_timeout: float
    ) -> AsyncIterator[dict[str, Any]]: ...


class KubeClient:
    """Plain-dict calls to the API server; see the module docstring. `close()` when done."""

    def __init__(self, api: client.ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout
        """Seconds a call (not a watch) may take in all."""
        self._http = _lean_http(api.configuration)
        """The calls' client (kube_http.py); None through a proxy (then aiohttp's session)."""
        self._slots = asyncio.Semaphore(int(api.configuration.connection_pool_maxsize or 100))
        """Calls in flight at most (aiohttp's connection limit of the same configuration)."""

    @classmethod
    async def connect(cls, *, within: float = 30.0, trust_env: bool = False) -> KubeClient:
        """A client with in-cluster or kubeconfig credentials (`new_api_client`); `within`:
        the default timeout of a call (seconds)."""
        return cls(await new_api_client(trust_env=trust_env), timeout=within)

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
        await self.api.close()

    # -- the verbs -------------------------------------------------------------------------------
    async def get(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]:
        """The object (or collection page, or any JSON document) at `path`; `within`: this
        call's timeout, if not the client's."""
        return await self._call("GET", path, params=params, within=within)

    async def list(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]:
        """One page of a collection (`limit`/`continue`, `labelSelector` in `params`)."""
        return await self.get(path, params=params, within=within)

    async def create(
        self, path: str, body: Mapping[str, Any], *, read: bool = True
    ) -> dict[str, Any]:
        """POST `body` to the collection at `path`; the stored object ({} with `read=False`:
        the answer is not parsed, which saves CPU when only success matters)."""
        return await self._call("POST", path, body=body, read=read)

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        read: bool = True,
    ) -> dict[str, Any]:
        """A JSON merge patch (by default) of the object at `path`; with `metadata.uid` or
        `metadata.resourceVersion` in `body` the API server makes it conditional (409)."""
        return await self._call("PATCH", path, body=body, content_type=content_type, read=read)

    async def delete(
        self, path: str, *, body: Mapping[str, Any] | None = None, params: Params | None = None
    ) -> None:
        """Delete the object at `path` (`body`: DeleteOptions such as preconditions)."""
        await self._call("DELETE", path, body=body, params=params, read=False)

    async def watch(
        self, path: str, *, params: Params, read_timeout: float, connect_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a watch on the collection at `path`, until the server ends it."""
        params = {**params, "watch": "true"}
        timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        async with self._request("GET", path, params=params, limits=timeout) as response:
            if response.status != 200:
                raise await _error(response)
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield fastjson.loads(line)
            if buffer.strip():
                yield fastjson.loads(buffer)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        read: bool = True,
        within: float | None = None,
    ) -> dict[str, Any]:
        if self._http is None:  # through a proxy: aiohttp's session
            limit = aiohttp.ClientTimeout(total=within or self.timeout)
            try:
                async with self._request(
                    method, path, params=params, body=body, content_type=content_type, limits=limit
                ) as response:
                    if response.status >= 300:
                        raise await _error(response)
                    data = await response.read()  # read even if unused: the connection is reused
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise _no_answer(exc) from exc
        else:
            headers = await self._headers(body, content_type)
            target = quote(path, safe=_PATH_SAFE)
            if params:
                target += "?" + urlencode(params)
            payload = fastjson.dumps(body) if body is not None else None
            try:
                async with self._slots:
                    answer = await self._http.request(
                        method, target, headers=headers, body=payload, within=within or self.timeout
                    )
            except (TimeoutError, OSError) as exc:
                raise _no_answer(exc) from exc
            if answer.status >= 300:
                raise _error_of(answer.status, answer.reason, answer.body)
            data = answer.body
        loaded: dict[str, Any] = fastjson.loads(data) if read else {}
        return loaded

    async def _headers(self, body: Mapping[str, Any] | None, content_type: str) -> dict[str, str]:
        """The request's headers, the credentials' included."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        await self.api.update_params_for_auth(headers, [], ["BearerToken"])
        return headers

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        limits: aiohttp.ClientTimeout,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request through aiohttp's session; the response is released on exit."""
        configuration = self.api.configuration
        extra: dict[str, Any] = {}
        if configuration.tls_server_name:
            extra["server_hostname"] = configuration.tls_server_name
        try:
            response = await self.api.rest_client.pool_manager.request(
                method,
                f"{configuration.host}{path}",
                params=dict(params) if params else None,
                data=fastjson.dumps(body) if body is not None else None,
                headers=await self._headers(body, content_type),
                timeout=limits,
                **extra,
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _no_answer(exc) from exc
        try:
            yield response
        finally:
            response.release()


_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
"""Characters a request path keeps as they are (RFC 3986 pchar and '/'; '%' = already encoded)."""


def _lean_http(configuration: client.Configuration) -> KubeHttp | None:
    """The lean client for the configuration's API server, with the TLS settings kubernetes_asyncio
    gives its own session; None when calls must go through a proxy or the host is not http(s)."""
    url = urlsplit(configuration.host)
    if configuration.proxy or url.scheme not in ("http", "https") or not url.hostname:
        return None
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if configuration.disable_strict_ssl_verification:
            context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return KubeHttp(
        host=url.hostname,
        port=url.port or (443 if context else 80),
        ssl_context=context,
        server_hostname=configuration.tls_server_name or None,
    )


def _no_answer(exc: BaseException) -> KubeError:
    """A call that got no answer (connection refused or lost, a timeout), as a KubeError."""
    return KubeError(0, str(exc) or type(exc).__name__, type(exc).__name__)


async def _error(response: aiohttp.ClientResponse) -> KubeError:
    """The API server's Status object of an error answer, as a KubeError."""
    return _error_of(response.status, response.reason or "", await response.read())


def _error_of(status_code: int, reason: str, data: bytes) -> KubeError:
    """The API server's Status object of an error answer (`data`), as a KubeError."""
    try:
        loaded = json.loads(data) if data else {}
    except ValueError:
        loaded = {}
    status: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    message = status.get("message") or data.decode("utf-8", "replace")[:500]
    return KubeError(
        status_code, str(message), str(status.get("reason") or reason or ""), status.get("details")
    )
