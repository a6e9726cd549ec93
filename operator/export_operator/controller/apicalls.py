"""The operator's writes to the Kubernetes API, through kubernetes_asyncio (`kube.new_api_client`).

Responses are read raw (`_preload_content=False`): the operator needs only the HTTP status, and
deserialising every created Job into model objects costs milliseconds of event-loop time each,
which a burst of a thousand ExportJobs would feel. Every call has an explicit timeout.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from typing import Any, Protocol, cast

from kubernetes_asyncio import client

from export_operator import resource
from export_operator.controller.snapshots import format_time

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "exportjobs-operator"


class ApiError(Exception):
    """A non-2xx answer of the API server (status 0 = no answer: connection or timeout)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status in (0, 429) or self.status >= 500


def create_error_reason(exc: ApiError) -> str:
    """The condition reason for a refused Job create (kept stable: users and alerts match it)."""
    if exc.status == 403 and "exceeded quota" in exc.message.lower():
        return "QuotaExceeded"
    if exc.status == 403:
        return "Forbidden"
    if exc.retryable:
        return "APIUnavailable"
    return "CreateFailed"


async def _call(coro: Any) -> None:
    """Await a `_preload_content=False` API call; raise ApiError unless it succeeded."""
    try:
        response = await coro
        try:
            data = await response.read()
        finally:
            response.release()
    except client.ApiException as exc:
        raise ApiError(int(exc.status or 0), str(exc.body or exc.reason), str(exc.reason)) from exc
    except (OSError, TimeoutError) as exc:
        raise ApiError(0, str(exc) or type(exc).__name__, type(exc).__name__) from exc
    except Exception as exc:  # aiohttp.ClientError and friends: no answer from the server
        if exc.__class__.__module__.startswith("aiohttp"):
            raise ApiError(0, str(exc) or type(exc).__name__, type(exc).__name__) from exc
        raise
    if 200 <= response.status <= 299:
        return None  # the answer's body is not needed: parsing every one costs CPU in bursts
    body: dict[str, Any] = {}
    try:
        loaded = json.loads(data) if data else {}
        body = loaded if isinstance(loaded, dict) else {}
    except ValueError:
        body = {}
    message = body.get("message") or data.decode("utf-8", "replace")[:500]
    reason = body.get("reason") or response.reason or ""
    raise ApiError(response.status, str(message), str(reason))


class Writer(Protocol):
    """The controller's writes (`KubeWriter`; unit tests use an in-memory one)."""

    async def create_job(self, job: dict[str, Any]) -> bool: ...

    async def job_exists(self, *, namespace: str, name: str) -> bool: ...

    async def delete_job(self, *, namespace: str, name: str) -> None: ...

    async def patch_status(
        self, *, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> None: ...

    async def delete_export(self, *, namespace: str, name: str, uid: str) -> None: ...

    async def post_event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        now: dt.datetime,
    ) -> None: ...


class KubeWriter:
    """Creates Jobs, patches ExportJob status, deletes, and posts Events."""

    def __init__(self, api: client.ApiClient, *, timeout: float) -> None:
        self.api = api
        self.timeout = timeout
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.instance = socket.gethostname()

    async def create_job(self, job: dict[str, Any]) -> bool:
        """Create a Job; False when it already exists (a no-op, by design)."""
        try:
            await _call(
                self.batch.create_namespaced_job(
                    job["metadata"]["namespace"],
                    cast(Any, job),
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def job_exists(self, *, namespace: str, name: str) -> bool:
        """Whether the Job exists (a direct GET, for when the watch may lag)."""
        try:
            await _call(
                self.batch.read_namespaced_job(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_job(self, *, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; absent is fine."""
        try:
            await _call(
                self.batch.delete_namespaced_job(
                    name,
                    namespace,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(
        self, *, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch `status` of an ExportJob, only if it is still the object with `uid`."""
        body = {"metadata": {"uid": uid}, "status": status}
        return await _call(
            # `_content_type` is accepted at run time but missing from the stubs; a dict body would
            # otherwise go as a strategic merge patch, which custom resources do not support.
            self.custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                resource.GROUP,
                resource.VERSION,
                namespace,
                resource.PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        )

    async def delete_export(self, *, namespace: str, name: str, uid: str) -> None:
        """Delete an ExportJob (retention), only if it is still the object with `uid`."""
        try:
            await _call(
                self.custom.delete_namespaced_custom_object(
                    resource.GROUP,
                    resource.VERSION,
                    namespace,
                    resource.PLURAL,
                    name,
                    body=cast(Any, {"preconditions": {"uid": uid}}),
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=self.timeout,
                )
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    async def post_event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        type_: str,
        reason: str,
        message: str,
        now: dt.datetime,
    ) -> None:
        """A core/v1 Event about an ExportJob (shown by `kubectl describe`)."""
        stamp = format_time(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": resource.API_VERSION,
                "kind": resource.KIND,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{resource.GROUP}/operator",
            "reportingInstance": self.instance[:128],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await _call(
            self.core.create_namespaced_event(
                namespace, cast(Any, event), _preload_content=False, _request_timeout=self.timeout
            )
        )
