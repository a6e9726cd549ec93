"""An in-memory API server behind `export_operator.kube.Kube`, for unit tests.

Objects live by path (`/apis/batch/v1/namespaces/ns/jobs/export-a`); the verbs behave like the
API server where the code under test depends on it: AlreadyExists on a create of a taken name,
NotFound, merge patches (null deletes), `metadata.uid` and `metadata.resourceVersion`
preconditions (409), `/status` subresources, `generateName`. Errors a test queues with `fail()`
are raised by the next calls of that verb, in order; `calls` records every other call.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from export_operator.kube import MERGE_PATCH, Kube, KubeError, Params


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube:
    """See the module docstring."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self._errors: dict[str, list[tuple[str, KubeError]]] = {}
        self._versions = itertools.count(1)
        self.down = False
        """While set, every call fails with 503 (an API server going down)."""

    def fail(self, verb: str, *errors: KubeError, on: str = "") -> None:
        """The next calls of `verb` (get, create, patch, delete) to a path containing `on`
        raise `errors`, in order."""
        self._errors.setdefault(verb, []).extend((on, e) for e in errors)

    async def _call(self, verb: str, path: str, body: Any = None) -> None:
        await asyncio.sleep(0)  # let racing callers interleave, as over a network
        if self.down:
            raise KubeError(503, "the server is currently unable to handle the request")
        queued = self._errors.get(verb, [])
        for i, (on, error) in enumerate(queued):
            if on in path:
                del queued[i]
                raise error
        self.calls.append((verb, path, copy.deepcopy(body)))

    @staticmethod
    def _missing(path: str) -> KubeError:
        kind, name = path.rstrip("/").split("/")[-2:]
        return KubeError(
            404, f"{kind} {name!r} not found", "NotFound", {"kind": kind, "name": name}
        )

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))

    # -- the verbs -----------------------------------------------------------------------------
    async def get(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]:
        await self._call("get", path)
        if path not in self.objects:
            raise self._missing(path)
        return copy.deepcopy(self.objects[path])

    async def list(
        self, path: str, *, params: Params | None = None, within: float | None = None
    ) -> dict[str, Any]:
        await self._call("list", path)
        items = [copy.deepcopy(o) for p, o in self.objects.items() if p.rsplit("/", 1)[0] == path]
        return {"metadata": {"resourceVersion": str(next(self._versions))}, "items": items}

    async def create(
        self, path: str, body: Mapping[str, Any], *, read: bool = True
    ) -> dict[str, Any]:
        await self._call("create", path, body)
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._versions)}"
        where = f"{path}/{meta['name']}"
        if where in self.objects:
            raise KubeError(409, f"{meta['name']!r} already exists", "AlreadyExists")
        meta.setdefault("uid", f"uid-{meta['name']}")
        self._stamp(obj)
        self.objects[where] = obj
        return copy.deepcopy(obj) if read else {}

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        read: bool = True,
    ) -> dict[str, Any]:
        await self._call("patch", path, body)
        where = path.removesuffix("/status")
        if where not in self.objects:
            raise self._missing(where)
        obj = self.objects[where]
        wanted = body.get("metadata") or {}
        for field in ("uid", "resourceVersion"):
            if field in wanted and wanted[field] != obj["metadata"].get(field):
                raise KubeError(409, f"the object has been modified ({field})", "Conflict")
        patched = merge_patch(obj, body)
        self._stamp(patched)
        self.objects[where] = patched
        return copy.deepcopy(patched) if read else {}

    async def delete(
        self, path: str, *, body: Mapping[str, Any] | None = None, params: Params | None = None
    ) -> None:
        await self._call("delete", path, body)
        if path not in self.objects:
            raise self._missing(path)
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        if uid is not None and uid != self.objects[path]["metadata"].get("uid"):
            raise KubeError(409, "precondition failed: uid", "Conflict")
        del self.objects[path]

    async def watch(
        self, path: str, *, params: Params, read_timeout: float, connect_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """No events: unit tests feed informers by hand (`Informer.handle_event`)."""
        await self._call("watch", path)
        return
        yield  # an async generator

    # -- what tests read -----------------------------------------------------------------------
    def bodies(self, verb: str, on: str) -> list[Any]:
        """The bodies sent with `verb` to paths containing `on` (e.g. "/status", "/events")."""
        return [body for v, path, body in self.calls if v == verb and on in path]

    def paths(self, verb: str, on: str) -> list[str]:
        """The paths `verb` was called on that contain `on`."""
        return [path for v, path, _ in self.calls if v == verb and on in path]


def _conforms(kube: FakeKube) -> Kube:
    return kube  # mypy holds the fake to the Protocol
