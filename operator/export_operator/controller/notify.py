"""Completion callbacks: a signed CloudEvent to `spec.notify.url` once an export's phase is final.

The notifier watches ExportJobs through its own kopf event handler (handlers.py), apart from the
reconciler: it starts a delivery when it first sees a final phase (Succeeded, Failed, Cancelled;
a Failed phase is only ever written after the Job's last attempt) and snapshots the object at that
moment, so the event carries the status of the transition, not of a later moment. Deliveries run
as their own tasks with their own API client, a bounded number of attempts at once and a timeout
per attempt: a slow receiver cannot stall reconciles.

At least once: network errors, 5xx and 429 are retried with exponential backoff and jitter
(Retry-After honoured) until `notify_window_seconds` after `completionTime`; other 4xx, redirects
and refused destinations stop at once. Each attempt is recorded in `status.notification`, so a
restarted operator (kopf lists every ExportJob at start) resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import json
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from export_operator import kube
from export_operator.callbacks import CallbackPolicy, CallbackRefusedError, CallbackTarget
from export_operator.controller import metrics
from export_operator.controller.apicalls import ApiError, KubeWriter
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.signing import read_secrets, signed_headers
from export_operator.controller.snapshots import format_time, parse_time
from export_operator.presign import Presigner, own_result_uri
from export_operator.public_view import client_view
from export_operator.resource import Phase

log = logging.getLogger(__name__)

OUTCOMES = {Phase.SUCCEEDED: "succeeded", Phase.FAILED: "failed", Phase.CANCELLED: "cancelled"}
EVENT_TYPE_PREFIX = "dev.exportjobs.export."
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "exportjobs-operator (completion callback)"
PENDING, DELIVERED, FAILED = "Pending", "Delivered", "Failed"
MAX_DONE = 100_000
"""How many ended deliveries a process remembers (see `Notifier.done`)."""
MAX_ERROR = 1024
"""`status.notification.lastError` is at most this long (CRD)."""
RESPONSE_READ_LIMIT = 64 * 1024
"""Bytes of a receiver's answer read (and dropped) before the connection closes."""


def event_id(*, uid: str, outcome: str) -> str:
    """The CloudEvents `id` and `webhook-id`: the same for every attempt of one export's outcome
    (receivers deduplicate on it), another for a namesake created later (another uid)."""
    return f"{uid}.{outcome}"


def build_event(
    obj: Mapping[str, Any], *, source_prefix: str, download_url: str | None
) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode event for a finished ExportJob."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    outcome = OUTCOMES[Phase(str(status.get("phase")))]
    return {
        "specversion": "1.0",
        "type": EVENT_TYPE_PREFIX + outcome,
        "source": f"{source_prefix}/namespaces/{meta.get('namespace')}/exportjobs",
        "id": event_id(uid=str(meta.get("uid")), outcome=outcome),
        "subject": str(meta.get("name")),
        "time": status.get("completionTime"),
        "datacontenttype": "application/json",
        "data": client_view(obj, download_url=download_url),
    }


# -- one attempt ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to."""

    verdict: Literal["delivered", "retry", "stop"]
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    """Seconds the receiver asked to wait (429/503 Retry-After)."""

    @property
    def label(self) -> str:
        """The metric label: `2xx`, `3xx`, `4xx`, `429`, `5xx`, `network` or `refused`."""
        code = self.status_code
        if code is None:
            return "refused" if self.verdict == "stop" else "network"
        return "429" if code == 429 else f"{code // 100}xx"


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def classify(status_code: int, headers: Mapping[str, str], *, now: dt.datetime) -> Attempt:
    """The verdict on a receiver's answer."""
    if 200 <= status_code <= 299:
        return Attempt("delivered", status_code)
    if 300 <= status_code <= 399:
        location = headers.get("Location", "")[:200]
        return Attempt(
            "stop", status_code, f"HTTP {status_code}: redirect to {location!r} not followed"
        )
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    if status_code == 429 or status_code >= 500:
        return Attempt("retry", status_code, f"HTTP {status_code}", retry_after)
    return Attempt("stop", status_code, f"HTTP {status_code}: the receiver refused the event")


def backoff(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """The delay after the `attempts`-th failed attempt: base·2^(n-1), capped, 50-100 % of it."""
    nominal = min(cap, base * 2.0 ** min(attempts - 1, 40))
    return nominal * rng.uniform(0.5, 1.0)


class PinnedResolver(AbstractResolver):
    """Answers with the addresses the policy already checked: aiohttp connects to exactly those,
    so a second DNS answer (rebinding) never reaches the socket."""

    def __init__(self, host: str, addresses: list[tuple[socket.AddressFamily, str]]) -> None:
        self._host = host
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:  # never: one connector per attempt, one host
            raise OSError(f"unexpected host {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=fam,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for fam, address in self._addresses
        ]

    async def close(self) -> None:
        return None


class Sender:
    """POSTs one signed body to a checked destination: DNS resolved and checked here, no proxy,
    no redirects, one timeout over all of it."""

    def __init__(
        self, *, policy: CallbackPolicy, timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.ssl_context = ssl_context
        """TLS trust; None = the system's CAs (`SSL_CERT_FILE` adds a private CA)."""

    async def _resolve(self, target: CallbackTarget) -> list[tuple[socket.AddressFamily, str]]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
        addresses: list[tuple[socket.AddressFamily, str]] = []
        for family, _, _, _, sockaddr in infos:
            text = str(sockaddr[0]).split("%", 1)[0]
            self.policy.check_address(ipaddress.ip_address(text), host=target.host)
            if (family, text) not in addresses:
                addresses.append((family, text))
        if not addresses:
            raise OSError(f"{target.host} resolves to no address")
        return addresses

    async def post(
        self,
        target: CallbackTarget,
        *,
        body: bytes,
        headers: Mapping[str, str],
        now: Callable[[], dt.datetime],
    ) -> Attempt:
        try:
            async with asyncio.timeout(self.timeout):
                if target.literal is None:
                    resolver: AbstractResolver = PinnedResolver(
                        target.host, await self._resolve(target)
                    )
                else:
                    resolver = PinnedResolver(target.host, [])
                connector = aiohttp.TCPConnector(
                    resolver=resolver,
                    use_dns_cache=False,
                    force_close=True,
                    ssl=self.ssl_context if self.ssl_context is not None else True,
                )
                async with (
                    aiohttp.ClientSession(connector=connector, trust_env=False) as session,
                    session.post(
                        target.url,
                        data=body,
                        headers={
                            **headers,
                            "Content-Type": CONTENT_TYPE,
                            "User-Agent": USER_AGENT,
                        },
                        allow_redirects=False,
                    ) as response,
                ):
                    await response.content.read(RESPONSE_READ_LIMIT)
                    return classify(response.status, response.headers, now=now())
        except CallbackRefusedError as exc:
            return Attempt("stop", None, str(exc))
        except TimeoutError:
            return Attempt("retry", None, f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt("retry", None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR])


# -- the notifier --------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A deep copy of a kopf body (mappings and lists) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class _Delivery:
    """One export's callback in this process: the snapshot at the final phase, and the task."""

    snapshot: dict[str, Any]
    latest: dict[str, Any]
    task: asyncio.Task[None] | None = None


class Notifier:
    """Delivers completion callbacks; `observe()` is its only input (every ExportJob event)."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        sender: Sender | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sender = sender or Sender(
            policy=settings.callback_policy, timeout=settings.notify_timeout_seconds
        )
        self.clock = clock
        self.rng = rng or random.Random()
        self.presigner = Presigner(
            endpoint_url=settings.notify_presign_endpoint_url or None,
            region=None,
            expiry_seconds=settings.notify_presign_expiry_seconds,
        )
        self.writer: KubeWriter | None = None
        self.deliveries: dict[str, _Delivery] = {}
        """ExportJob uid → its delivery under way in this process."""
        self.done: dict[str, None] = {}
        """uids whose delivery ended here: a watch event written before the final state (a late
        result, a progress patch) may arrive after it, and must not start the delivery again."""
        self._slots = asyncio.Semaphore(settings.notify_concurrency)
        self._ready = asyncio.Event()

    async def start(self, writer: KubeWriter | None = None) -> None:
        """Open its own API client (a busy reconciler does not delay status writes here), or
        use `writer` (tests)."""
        if writer is None:
            api = await kube.new_api_client(trust_env=False)
            writer = KubeWriter(api, timeout=self.settings.request_timeout_seconds)
        self.writer = writer
        self._ready.set()

    async def stop(self) -> None:
        tasks = [d.task for d in self.deliveries.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.deliveries.clear()
        if self.writer is not None:
            await self.writer.api.close()
            self.writer = None

    def observe(self, *, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Start a delivery for a finished ExportJob with a callback whose notification is not
        final yet; cheap for every other event (it runs in the watch's handler)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if event_type == "DELETED":
            self.done.pop(uid, None)
            gone = self.deliveries.pop(uid, None)
            if gone is not None and gone.task is not None:
                gone.task.cancel()
            return
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        if not (spec.get("notify") or {}).get("url") or not uid:
            return
        try:
            phase = Phase(str(status.get("phase")))
        except ValueError:
            return
        if phase not in OUTCOMES:
            return
        state = (status.get("notification") or {}).get("state")
        current = self.deliveries.get(uid)
        if state in (DELIVERED, FAILED) or uid in self.done:
            return
        copy = _plain({"metadata": meta, "spec": spec, "status": status})
        if current is not None:
            current.latest = copy
            return
        delivery = _Delivery(snapshot=copy, latest=copy)
        self.deliveries[uid] = delivery
        delivery.task = asyncio.create_task(self._run(uid, delivery), name=f"notify-{uid}")

    async def _run(self, uid: str, delivery: _Delivery) -> None:
        try:
            await self._ready.wait()
            await self._deliver(uid, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not end the operator; the resync of a restart retries
            log.exception("callback delivery for %s failed unexpectedly", uid)
        finally:
            if self.deliveries.get(uid) is delivery:
                del self.deliveries[uid]
                self.done[uid] = None
                if len(self.done) > MAX_DONE:
                    del self.done[next(iter(self.done))]

    def _event_body(self, delivery: _Delivery) -> dict[str, Any]:
        """The snapshot at the final phase; a result the watch delivered late is taken from the
        latest view (a finished status changes in nothing else that the view shows)."""
        obj = delivery.snapshot
        latest_result = (delivery.latest.get("status") or {}).get("result")
        if not (obj.get("status") or {}).get("result") and latest_result:
            obj = {**obj, "status": {**obj["status"], "result": latest_result}}
        return obj

    async def _deliver(self, uid: str, delivery: _Delivery) -> None:
        settings = self.settings
        meta = delivery.snapshot["metadata"]
        status = delivery.snapshot["status"]
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        note = dict(status.get("notification") or {})
        attempts = int(note.get("attempts") or 0)
        last_error = str(note.get("lastError") or "")
        final_at = parse_time(status.get("completionTime")) or self.clock()
        deadline = final_at + dt.timedelta(seconds=settings.notify_window_seconds)
        last_attempt = parse_time(note.get("lastAttemptTime"))
        if attempts and last_attempt is not None:  # resumed after a restart: keep the backoff
            due = last_attempt + dt.timedelta(seconds=self._delay(attempts))
            wait = (min(due, deadline) - self.clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        while True:
            if attempts and self.clock() >= deadline:
                await self._conclude(
                    uid, namespace, name, note, FAILED, f"the retry window ended: {last_error}"
                )
                return
            async with self._slots:
                started = time.monotonic()
                attempt = await self._attempt(delivery)
                metrics.NOTIFICATION_ATTEMPT_SECONDS.observe(time.monotonic() - started)
            attempts += 1
            metrics.NOTIFICATION_ATTEMPTS.labels(attempt.label).inc()
            now = self.clock()
            last_error = attempt.error or ""
            note = {
                "state": PENDING,
                "attempts": attempts,
                "lastStatusCode": attempt.status_code,
                "lastAttemptTime": format_time(now),
                "deliveredTime": None,
                "lastError": last_error[:MAX_ERROR] or None,
            }
            if attempt.verdict == "delivered":
                note["deliveredTime"] = format_time(now)
                metrics.NOTIFICATION_DELAY_SECONDS.observe(
                    max(0.0, (now - final_at).total_seconds())
                )
                await self._conclude(uid, namespace, name, note, DELIVERED, "")
                return
            if attempt.verdict == "stop":
                await self._conclude(uid, namespace, name, note, FAILED, last_error)
                return
            delay = max(self._delay(attempts), attempt.retry_after or 0.0)
            if now + dt.timedelta(seconds=delay) > deadline:
                await self._conclude(
                    uid,
                    namespace,
                    name,
                    note,
                    FAILED,
                    f"the retry window ended: {last_error}",
                )
                return
            log.info(
                "callback for %s/%s: attempt %d failed (%s); next in %.1f s",
                namespace,
                name,
                attempts,
                last_error,
                delay,
            )
            if not await self._write(uid, namespace, name, note):
                return
            await asyncio.sleep(delay)

    def _delay(self, attempts: int) -> float:
        return backoff(
            attempts,
            base=self.settings.notify_backoff_base_seconds,
            cap=self.settings.notify_backoff_max_seconds,
            rng=self.rng,
        )

    async def _attempt(self, delivery: _Delivery) -> Attempt:
        settings = self.settings
        obj = self._event_body(delivery)
        url = str(obj["spec"]["notify"]["url"])
        try:
            keys = read_secrets(inline=settings.notify_secrets, path=settings.notify_secrets_file)
        except (OSError, ValueError) as exc:
            return Attempt("stop", None, f"no usable signing secret: {exc}")
        if not keys:
            return Attempt(
                "stop",
                None,
                "no signing secret configured (EXPORTJOBS_OPERATOR_NOTIFY_SECRETS_FILE)",
            )
        try:
            target = settings.callback_policy.check_url(url)
        except CallbackRefusedError as exc:
            return Attempt("stop", None, str(exc))
        download_url = None
        result_uri = (obj["status"].get("result") or {}).get("uri")
        # Only a result under the export's own <destination>/<id>/ gets a link (a forged one
        # from the processor's termination message must not become a download).
        own = own_result_uri(obj, default_destination=settings.default_destination_uri or None)
        if obj["status"].get("phase") == Phase.SUCCEEDED.value and isinstance(result_uri, str):
            if own is None:
                log.warning("no presigned URL for %s: not under its own output prefix", result_uri)
            else:
                try:
                    download_url = await self.presigner.url_for(own)
                except Exception as exc:  # the event still goes, without a link
                    log.warning("no presigned URL for %s: %s", result_uri, exc)
        event = build_event(obj, source_prefix=settings.notify_source, download_url=download_url)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = signed_headers(
            keys=keys, msg_id=event["id"], timestamp=int(self.clock().timestamp()), body=body
        )
        return await self.sender.post(target, body=body, headers=headers, now=self.clock)

    async def _conclude(
        self,
        uid: str,
        namespace: str,
        name: str,
        note: dict[str, Any],
        state: str,
        error: str,
    ) -> None:
        note = {**note, "state": state}
        if state == FAILED:
            note["lastError"] = error[:MAX_ERROR] or None
            log.warning("callback for %s/%s failed: %s", namespace, name, error)
        metrics.NOTIFICATIONS.labels(state.lower()).inc()
        if not await self._write(uid, namespace, name, note):
            return
        assert self.writer is not None
        message = (
            f"callback delivered after {note.get('attempts')} attempt(s)"
            if state == DELIVERED
            else f"callback failed after {note.get('attempts')} attempt(s): {error}"
        )
        try:
            await self.writer.post_event(
                namespace=namespace,
                name=name,
                uid=uid,
                type_="Normal" if state == DELIVERED else "Warning",
                reason=f"Callback{state}",
                message=message,
                now=self.clock(),
            )
        except ApiError as exc:
            log.debug("event not posted: %s", exc)

    async def _write(self, uid: str, namespace: str, name: str, note: dict[str, Any]) -> bool:
        """Record `status.notification`; False when the ExportJob is gone or was replaced."""
        assert self.writer is not None
        for retry in range(6):
            try:
                await self.writer.patch_status(
                    namespace=namespace, name=name, uid=uid, status={"notification": note}
                )
                return True
            except ApiError as exc:
                if exc.status in (404, 409):
                    return False
                log.warning("notification state of %s/%s not written: %s", namespace, name, exc)
                await asyncio.sleep(min(2.0**retry, 15.0))
        return True  # keep delivering; the next write (or a restart) records the state
