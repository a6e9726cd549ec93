"""Hostile HTTP requests written byte for byte to a socket, for any webhook under test.

HTTP client libraries refuse to send most of these (non-UTF-8 header bytes, lying encodings), so
they go over a raw socket. Each case names what it sends; every answer must be a 4xx problem
document (or, for the few odd-but-valid cases, any answer below 500), never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from dataclasses import dataclass
from typing import Any

_EVENT = json.dumps(
    {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "exports-input"}, "object": {"key": "a.csv"}},
            }
        ]
    }
).encode()


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    authenticated: bool = True
    refused: bool = True
    """False for requests that are odd but valid (then any status below 500 will do)."""


def cases() -> list[Case]:
    """The raw cases; the bearer token is added to those marked `authenticated`."""
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    garbage = b"\x00\x01not deflate at all\xff" * 20
    gzip_bomb = zlib.compress(b"{" * 10_000_000)  # 10 MB of '{' in ~10 KB (a zlib stream)
    json_type = ((b"Content-Type", b"application/json"),)
    return [
        Case("bearer with bytes ff fe", "GET", "/v1/exports",
             ((b"Authorization", b"Bearer \xff\xfe"),), authenticated=False),
        Case("bearer with bytes ff fe on POST", "POST", "/v1/exports",
             ((b"Authorization", b"Bearer \xff\xfe"), *json_type), b"{}", authenticated=False),
        Case("bearer with bytes on events", "POST", "/v1/events/s3?format=csv",
             ((b"Authorization", b"Bearer \xc3\x28"), *json_type), _EVENT, authenticated=False),
        Case("api key with bytes", "POST", "/v1/events/s3",
             ((b"x-api-key", b"\xff\xfe\xfd"), *json_type), _EVENT, authenticated=False),
        Case("idempotency key with bytes", "POST", "/v1/exports",
             ((b"Idempotency-Key", b"\xff\xfe"), *json_type),
             b'{"source":"s3://exports-input/a.csv","format":"csv"}'),
        Case("request id with bytes", "GET", "/v1/exports", ((b"X-Request-Id", b"\xff\xfe"),),
             refused=False),
        Case("content type with bytes", "POST", "/v1/exports",
             ((b"Content-Type", b"application/json; charset=\xff"),), b"{}"),
        Case("100k nested arrays", "POST", "/v1/exports", json_type, deep),
        Case("50k nested objects", "POST", "/v1/exports", json_type, deep_object),
        Case("100k nested arrays as an event", "POST", "/v1/events/s3?format=csv", json_type, deep),
        Case("deflate garbage", "POST", "/v1/exports",
             (*json_type, (b"Content-Encoding", b"deflate")), garbage),
        Case("gzip garbage", "POST", "/v1/events/s3?format=csv",
             (*json_type, (b"Content-Encoding", b"gzip")), garbage),
        Case("deflate bomb", "POST", "/v1/exports",
             (*json_type, (b"Content-Encoding", b"deflate")), gzip_bomb),
        Case("unknown content encoding", "POST", "/v1/exports",
             (*json_type, (b"Content-Encoding", b"zstd-nope")), b"{}"),
        Case("limit superscript two", "GET", "/v1/exports?limit=%C2%B2"),
        Case("limit arabic digits", "GET", "/v1/exports?limit=%D9%A1%D9%A2"),
        Case("limit with bytes", "GET", "/v1/exports?limit=%ff%fe"),
        Case("phase with bytes", "GET", "/v1/exports?phase=%ff"),
        Case("continue with bytes", "GET", "/v1/exports?continue=%ff%00"),
        Case("continue garbage", "GET", "/v1/exports?continue=!!!!"),
        Case("format with bytes", "POST", "/v1/events/s3?format=%ff", json_type, _EVENT),
        Case("id with bytes", "GET", "/v1/exports/%ff%fe"),
        Case("cancel id with bytes", "DELETE", "/v1/exports/%ff%fe"),
        Case("body not UTF-8", "POST", "/v1/exports", json_type, b'{"format":"\xff"}'),
        Case("lone surrogate escape", "POST", "/v1/exports", json_type,
             b'{"source":"s3://exports-input/\\ud800.csv","format":"csv"}'),
        Case("huge number", "POST", "/v1/exports", json_type,
             b'{"format":"csv","source":"s3://exports-input/a.csv","csv":{"header":'
             + b"9" * 5000 + b"}}"),
        Case("NaN", "POST", "/v1/exports", json_type,
             b'{"format":"csv","source":"s3://exports-input/a.csv","csv":NaN}'),
        Case("SNS with bytes", "POST", "/v1/events/s3",
             ((b"x-amz-sns-message-type", b"\xff"), (b"Content-Type", b"text/plain")), b"{}",
             authenticated=False),
        Case("SNS deep Message", "POST", "/v1/events/s3",
             ((b"x-amz-sns-message-type", b"Notification"), (b"Content-Type", b"text/plain")),
             json.dumps({"Type": "Notification", "Message": "[" * 100_000}).encode(),
             authenticated=False),
    ]  # fmt: skip


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def problem(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


async def send(host: str, port: int, case: Case, *, token: str) -> Answer:
    """Write `case` as one HTTP/1.1 request (Connection: close) and read the answer."""
    headers = list(case.headers)
    if case.authenticated:
        headers.append((b"Authorization", f"Bearer {token}".encode()))
    head = [f"{case.method} {case.target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode()]
    head += [name + b": " + value for name, value in headers]
    head += [b"Connection: close", f"Content-Length: {len(case.body)}".encode()]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + case.body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    header_block, _, body = raw.partition(b"\r\n\r\n")
    lines = header_block.split(b"\r\n")
    status = int(lines[0].split()[1])
    content_type = ""
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip().decode("latin-1").split(";")[0]
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    return Answer(status, content_type, _dechunk(body) if chunked else body)


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def judge(case: Case, answer: Answer) -> str | None:
    """What is wrong with `answer` to `case`, or None when it is right."""
    if answer.status >= 500:
        return f"{answer.status}: {answer.body[:200]!r}"
    if case.refused and not 400 <= answer.status < 500:
        return f"expected a 4xx, got {answer.status}"
    is_problem = answer.content_type == "application/problem+json"
    if answer.status >= 400 and is_problem and answer.problem().get("status") != answer.status:
        return f"problem status differs from {answer.status}"
    return None


async def send_slowly(
    host: str, port: int, *, token: str | None, target: str, interval: float, limit: float
) -> tuple[int | None, float]:
    """POST a JSON body one byte every `interval` seconds (a slow-body attack); stop after
    `limit` seconds. (status or None if the server never answered, seconds until it did)."""
    body = b'{"source": "s3://exports-input/slow.csv", "format": "csv"}' + b" " * 10_000
    head = [f"POST {target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode(),
            b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]  # fmt: skip
    if token is not None:
        head.append(f"Authorization: Bearer {token}".encode())
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n")
        await writer.drain()
        answer = asyncio.ensure_future(reader.readline())
        for byte in body:
            done, _ = await asyncio.wait({answer}, timeout=interval)
            if done or loop.time() - started > limit:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
        try:
            line = await asyncio.wait_for(answer, timeout=max(0.1, limit - (loop.time() - started)))
        except TimeoutError:
            return None, loop.time() - started
        elapsed = loop.time() - started
        parts = line.split()
        return (int(parts[1]) if len(parts) > 1 else None), elapsed
    finally:
        writer.close()
