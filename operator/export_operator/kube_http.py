"""A lean HTTP/1.1 client for the API server's small JSON calls (`KubeClient`'s verbs).

aiohttp's `ClientSession.request` builds a request object, a response object, a timer, cookie and
header merges and a URL parse for every call: more CPU than the exchange itself for a create of
one ExportJob (docs/benchmarks.md, "Webhook"). This client keeps a pool of keep-alive connections
to one API server and does per call only what such a call needs: one write of the request, and a
parser that collects the status, the few headers it reads (`Content-Length`,
`Transfer-Encoding`, `Connection`) and the body. Watches stay on aiohttp (a stream, not a call).

Failures are `OSError`s or `TimeoutError`, as with aiohttp: the connection is then dropped.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import cast

IDLE_SECONDS = 15.0
"""An idle connection older than this is closed rather than reused (aiohttp's keep-alive
default): a server closing idle connections after longer never races our reuse."""
MAX_IDLE = 32
"""Idle connections kept; more are closed when released."""
MAX_HEAD = 64 * 1024
"""A status line and headers longer than this are a protocol error."""
MAX_BODY = 64 * 1024 * 1024
"""A response body longer than this is a protocol error (the API server's objects are at most
about 1.5 MiB; a list page of 500 ExportJobs a few MiB)."""


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as this client reads it."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self._head: tuple[int, str, int | None, bool, bool] | None = None
        """(status, reason, content length, chunked, close) once the head is read."""
        self._chunks = bytearray()
        self.keep_alive = True

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        if self._waiter is not None and not self._waiter.done():
            if self._head is not None and self._head[2] is None and not self._head[3]:
                # A body delimited by the end of the connection (no length, not chunked).
                status, reason = self._head[0], self._head[1]
                self._waiter.set_result(Answer(status, reason, bytes(self._buffer)))
            else:
                self._waiter.set_exception(
                    ConnectionResetError(f"connection lost: {exc}" if exc else "connection lost")
                )

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abandon()  # bytes nobody asked for: the connection is out of step
            return
        self._buffer += data
        try:
            answer = self._parse()
        except ProtocolError as exc:
            self._waiter.set_exception(exc)
            self.abandon()
            return
        if answer is not None:
            self._waiter.set_result(answer)

    def abandon(self) -> None:
        """Close the connection; it is never reused."""
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    # -- one exchange ----------------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._buffer.clear()
        self._chunks.clear()
        self._head = None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def _parse(self) -> Answer | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise ProtocolError("response head too long")
                return None
            self._head = _parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
        status, reason, length, chunked, close = self._head
        if close:
            self.keep_alive = False
        if chunked:
            body = self._dechunk()
            if body is None:
                return None
        elif length is not None:
            if len(self._buffer) < length:
                return None
            if len(self._buffer) > length:
                raise ProtocolError("more bytes than Content-Length")
            body = bytes(self._buffer)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            return None  # read until the connection closes (connection_lost answers)
        return Answer(status, reason, body)

    def _dechunk(self) -> bytes | None:
        """The whole body once the last chunk is in, else None (chunks so far kept)."""
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return None
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size < 0 or len(self._chunks) + size > MAX_BODY:
                raise ProtocolError("response body too large")
            if size == 0:
                # The last chunk, then trailer lines (ignored) up to an empty line.
                pos = line_end + 2
                while (next_line := buffer.find(b"\r\n", pos)) != pos:
                    if next_line < 0:
                        return None
                    pos = next_line + 2
                if len(buffer) > pos + 2:
                    raise ProtocolError("bytes after the last chunk")
                buffer.clear()
                return bytes(self._chunks)
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            if buffer[start + size : start + size + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._chunks += buffer[start : start + size]
            del buffer[: start + size + 2]


def _parse_head(head: bytes) -> tuple[int, str, int | None, bool, bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or int(value) > MAX_BODY:
                raise ProtocolError(f"bad Content-Length {value[:20]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.strip().lower().endswith(b"chunked")
        elif name == b"connection":
            close = b"close" in value.lower()
    return status, reason, None if chunked else length, chunked, close


class KubeHttp:
    """Keep-alive connections to `host:port` (TLS with `ssl_context`); `request` = one call."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self._idle: list[_Connection] = []
        self._authority = (
            host
            if (port == 443 and ssl_context) or (port == 80 and not ssl_context)
            else f"{host}:{port}"
        )
        if ":" in host and not host.startswith("["):
            self._authority = f"[{host}]:{port}"

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: dict[str, str],
        body: bytes | None,
        within: float,
    ) -> Answer:
        """One request; the answer once its whole body is in.

        Raises:
            OSError: no connection, a connection lost, a malformed answer.
            TimeoutError: no whole answer within `within` seconds.
        """
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self._authority}\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n")
        if body is not None:
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        request = "".join(head).encode("latin-1") + (body or b"")
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(within):
                connection = await self._connection()
                answer = await connection.send(request)
        except BaseException:
            if connection is not None:
                connection.abandon()
            raise
        self._release(connection)
        return answer

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if (
                not connection.closed
                and connection.transport is not None
                and not connection.transport.is_closing()
                and now - connection.idle_since < IDLE_SECONDS
            ):
                return connection
            connection.abandon()
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            _Connection,
            self.host,
            self.port,
            ssl=self.ssl_context,
            server_hostname=(self.server_hostname or self.host) if self.ssl_context else None,
        )
        return protocol

    def _release(self, connection: _Connection) -> None:
        if connection.keep_alive and not connection.closed and len(self._idle) < MAX_IDLE:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.abandon()

    def close(self) -> None:
        """Close the idle connections (those in use close when their call ends)."""
        while self._idle:
            self._idle.pop().abandon()
