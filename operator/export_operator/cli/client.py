"""A small synchronous client of the webhook's `/v1` API on `urllib` (no dependency)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


class ApiError(Exception):
    """The webhook answered with an error status: its problem document, if any."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        code = problem.get("code", "")
        detail = problem.get("detail") or problem.get("title") or ""
        super().__init__(f"HTTP {status} {code}: {detail}".rstrip(": "))


class ConnectError(Exception):
    """The webhook could not be reached (refused, DNS, timeout, TLS)."""


def id_from_location(location: str) -> str:
    """The export id that a `Location` (`/v1/exports/{id}`, maybe absolute) names."""
    path = urllib.parse.urlsplit(location).path.rstrip("/")
    segment = path.rsplit("/", 1)[-1]
    return urllib.parse.unquote(segment)


@dataclass(frozen=True)
class Client:
    """The webhook at `base_url` (e.g. `http://127.0.0.1:8080`, maybe with a path prefix)."""

    base_url: str
    token: str = ""
    timeout: float = 30.0

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def _open(
        self,
        method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) URL of the user's webhook
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, _problem(error)) from None
        except (urllib.error.URLError, OSError) as error:
            raise ConnectError(f"{url}: {getattr(error, 'reason', error)}") from None

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        query = kwargs.pop("query", None)
        with self._open(method, self.url(path, query), **kwargs) as response:
            document = json.load(response)
        if not isinstance(document, dict):
            raise ApiError(502, {"code": "not-an-object", "detail": "the body is not an object"})
        return document

    def submit(self, request: Mapping[str, Any], *, idempotency_key: str = "") -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/exports", body=request, headers=headers)

    def get(self, export_id: str) -> dict[str, Any]:
        return self._json("GET", "/v1/exports/" + urllib.parse.quote(export_id, safe=""))

    def cancel(self, export_id: str) -> dict[str, Any]:
        return self._json("DELETE", "/v1/exports/" + urllib.parse.quote(export_id, safe=""))

    def pages(self, query: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """Every item of the list, following `continue` tokens."""
        params = dict(query)
        while True:
            page = self._json("GET", "/v1/exports", query=params)
            yield from page.get("items", [])
            token = page.get("continue")
            if not token:
                return
            params["continue"] = token

    def download(self, url: str, out: IO[bytes]) -> int:
        """Stream a presigned URL (no bearer token: it is S3's) into `out`; the bytes written."""
        request = urllib.request.Request(url)  # noqa: S310 - the presigned URL the API gave
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                before = out.tell() if out.seekable() else 0
                shutil.copyfileobj(response, out, 1 << 20)
                return (out.tell() - before) if out.seekable() else -1
        except urllib.error.HTTPError as error:
            raise ApiError(
                error.code, {"code": "download-failed", "detail": error.reason}
            ) from None
        except (urllib.error.URLError, OSError) as error:
            raise ConnectError(f"download: {getattr(error, 'reason', error)}") from None


def _problem(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        document = json.loads(error.read() or b"{}")
    except ValueError:
        document = None
    if isinstance(document, dict):
        return document
    return {"code": "http-error", "detail": str(error.reason)}


def write_atomically(path: Path, fill: Any) -> int:
    """Run `fill(fileobj)` into `path.part` and rename it to `path` once complete."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as out:
            written = int(fill(out))
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written
