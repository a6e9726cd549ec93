#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 server that answers chosen operations with S3's faults.

    python3 hack/s3_faults.py --upstream http://127.0.0.1:9000 [--listen 127.0.0.1:0]
        [--port-file FILE] [--rules JSON]

Every request is forwarded unchanged (its Host header too, so SigV4 signatures stay valid)
unless a rule matches its operation. A rule (JSON object) has:

- `op`: `GetObject` (ranged or not), `HeadObject`, `PutObject`, `CreateMultipartUpload`,
  `UploadPart`, `CompleteMultipartUpload`, `AbortMultipartUpload`, `ListMultipartUploads`,
  `Other`, or `*`;
- `fault`: `SlowDown` (503), `InternalError` (500), `RequestTimeout` (400), each with S3's XML
  error body; `reset` (the body cut mid-way by a TCP reset); `short` (the connection closed
  after fewer bytes than Content-Length); `delay` (only the latency);
- `probability` (default 1), `times` (at most this many; default unlimited), `delay` (seconds
  before answering, default 0), `forward` (errors: send the request upstream first, then answer
  the error anyway: the operation may have happened), `fraction` (reset/short: the share of the
  body sent, default 0.5), `seed` (random choices of this rule, default 0).

The proxy's own endpoint, `/__faults__` (no bucket can be named so): `PUT` a JSON list of rules
(replacing the rules and the counters), `GET` the counters: requests per operation, faults per
operation and fault, and the body bytes sent before a cut.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

CONTROL_PATH = "/__faults__"
ERRORS = {
    "SlowDown": (503, "Please reduce your request rate."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "RequestTimeout": (
        400,
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
    ),
}
CUTS = ("reset", "short")
FAULTS = (*ERRORS, *CUTS, "delay")
OPERATIONS = (
    "GetObject",
    "HeadObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListMultipartUploads",
    "Other",
)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


def operation(method: str, path: str, query: dict[str, str]) -> str:
    """The S3 operation of a path-style request (bucket and key in the path)."""
    has_key = "/" in path.strip("/")
    if method == "GET" and has_key and "uploadId" not in query:
        return "GetObject"
    if method == "HEAD" and has_key:
        return "HeadObject"
    if method == "PUT" and has_key:
        return "UploadPart" if "partNumber" in query else "PutObject"
    if method == "POST" and has_key and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and has_key and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and has_key and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and not has_key and "uploads" in query:
        return "ListMultipartUploads"
    return "Other"


@dataclass
class Rule:
    op: str
    fault: str
    probability: float = 1.0
    times: int | None = None
    delay: float = 0.0
    forward: bool = False
    fraction: float = 0.5
    seed: int = 0
    used: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def parse(cls, raw: Any) -> Rule:
        if not isinstance(raw, dict):
            raise ValueError("a rule is a JSON object")
        unknown = set(raw) - {
            "op",
            "fault",
            "probability",
            "times",
            "delay",
            "forward",
            "fraction",
            "seed",
        }
        if unknown:
            raise ValueError(f"unknown rule fields: {sorted(unknown)}")
        op, fault = raw.get("op"), raw.get("fault")
        if op != "*" and op not in OPERATIONS:
            raise ValueError(f"op must be one of {OPERATIONS} or '*'")
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        rule = cls(
            op=op,
            fault=fault,
            probability=float(raw.get("probability", 1.0)),
            times=None if raw.get("times") is None else int(raw["times"]),
            delay=float(raw.get("delay", 0.0)),
            forward=bool(raw.get("forward", False)),
            fraction=float(raw.get("fraction", 0.5)),
            seed=int(raw.get("seed", 0)),
        )
        if not 0 <= rule.probability <= 1 or not 0 <= rule.fraction < 1 or rule.delay < 0:
            raise ValueError("probability in [0, 1], fraction in [0, 1), delay >= 0")
        rule._random.seed(rule.seed)
        return rule

    def fires(self, op: str) -> bool:
        if self.op not in ("*", op):
            return False
        if self.times is not None and self.used >= self.times:
            return False
        if self._random.random() >= self.probability:
            return False
        self.used += 1
        return True


def error_body(code: str, resource: str) -> bytes:
    message = ERRORS[code][1]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
        "</Error>"
    ).encode()


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.cut_bytes = 0
        """Body bytes sent before the cuts (what a client read and must read again)."""
        self._session: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        self._session = ClientSession(
            timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )

    async def _stop(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def counters(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "faults": dict(self.faults),
            "cutBytes": self.cut_bytes,
        }

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response(self.counters())
        if request.method != "PUT":
            return web.json_response({"error": "GET or PUT"}, status=405)
        try:
            raw = json.loads(await request.read() or b"[]")
            if not isinstance(raw, list):
                raise ValueError("a JSON list of rules")
            rules = [Rule.parse(item) for item in raw]
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        self.rules = rules
        self.requests.clear()
        self.faults.clear()
        self.cut_bytes = 0
        return web.json_response({"rules": len(rules)})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == CONTROL_PATH:
            return await self.control(request)
        op = operation(request.method, request.path, dict(request.query))
        self.requests[op] += 1
        rule = next((r for r in self.rules if r.fires(op)), None)
        if rule is not None:
            self.faults[f"{op}:{rule.fault}"] += 1
            if rule.delay:
                await asyncio.sleep(rule.delay)
        body = await request.read()
        if rule is not None and rule.fault in ERRORS and not rule.forward:
            return self._error(rule.fault, request)
        assert self._session is not None
        # aiohttp sets Content-Length from the body; Expect is unsigned and already answered.
        skip = HOP_BY_HOP | {"content-length", "expect"}
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in skip]
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
        ) as upstream:
            if rule is not None and rule.fault in ERRORS:
                await upstream.read()
                return self._error(rule.fault, request)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            cut = rule is not None and rule.fault in CUTS and request.method != "HEAD"
            length = upstream.content_length
            if cut and length:
                return await self._cut(request, response, upstream, rule, length)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response

    def _error(self, code: str, request: web.Request) -> web.Response:
        status = ERRORS[code][0]
        body = b"" if request.method == "HEAD" else error_body(code, request.path)
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": "application/xml", "x-amz-request-id": "FAULTPROXY"},
        )

    async def _cut(
        self,
        request: web.Request,
        response: web.StreamResponse,
        upstream: Any,
        rule: Rule,
        length: int,
    ) -> web.StreamResponse:
        """Send `fraction` of the body under the full Content-Length, then reset or close."""
        keep = int(length * rule.fraction)
        await response.prepare(request)
        sent = 0
        async for chunk in upstream.content.iter_chunked(1 << 16):
            part = chunk[: keep - sent]
            if part:
                await response.write(part)
                sent += len(part)
            if sent >= keep:
                break
        self.cut_bytes += sent
        transport = request.transport
        assert transport is not None
        await asyncio.sleep(0.05)  # let the bytes reach the client before the cut
        if rule.fault == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close() sends a RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        raise asyncio.CancelledError  # the connection is gone: nothing more to send


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="the S3 server, e.g. http://host:9000")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: any free)")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--rules", default="[]", help="initial rules, a JSON list")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream)
    proxy.rules = [Rule.parse(item) for item in json.loads(args.rules)]
    host, _, port = args.listen.rpartition(":")

    async def serve() -> None:
        runner = web.AppRunner(proxy.app(), access_log=None, handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, host, int(port))
        await site.start()
        server = site._server
        assert server is not None
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if args.port_file:
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(str(bound))
            tmp.rename(args.port_file)
        print(f"s3_faults: listening on {host}:{bound} -> {args.upstream}", file=sys.stderr)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
