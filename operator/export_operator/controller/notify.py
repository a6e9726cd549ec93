"""Completion callbacks: a signed CloudEvent to `spec.notify.url` once an export's phase is final.

The notifier is a second reconciler on the controller's ExportJob cache, with its own work queue,
workers (`notify_concurrency`) and API client, so a slow receiver cannot stall the reconciler's
writes. Its event handler queues the key of a finished ExportJob (Succeeded, Failed, Cancelled;
a Failed phase is only ever written after the Job's last attempt) with `spec.notify`;
`reconcile(key)` makes at most one attempt (with a timeout) and returns
`Result(requeue_after=...)` for the next one.

At least once: network errors, 5xx and 429 are retried with the one backoff type
(`common.Backoff`; Retry-After honoured) until `notify_window_seconds` after
`completionTime`; other 4xx, redirects and refused destinations stop at once. Each attempt is
recorded in `status.notification`, so a restarted operator (its caches list every ExportJob)
resumes where the last one stopped; a failed write of it is retried by the work queue.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from export_operator.callbacks import CallbackRefusedError
from export_operator.controller import metrics
from export_operator.controller.apicalls import KubeWriter
from export_operator.controller.delivery import MAX_ERROR, Attempt, Sender, build_event
from export_operator.controller.recorder import event_about
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.signing import read_secrets, signed_headers
from export_operator.controller.snapshots import ExportView, format_time, parse_time
from export_operator.controller.workqueue import Result, WorkQueue
from export_operator.informer import Informer, Key
from export_operator.kube import KubeError
from export_operator.presign import Presigner, own_result_uri
from export_operator.resource import Phase
from export_processor.common import Backoff

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "Pending", "Delivered", "Failed"


def _caught_up(seen: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether the watch shows the notification state this process wrote."""
    return all(seen.get(k) == written.get(k) for k in ("state", "attempts"))


class Notifier:
    """The second reconciler on the ExportJob cache: `reconcile(key)` makes at most one attempt
    and returns when to try again (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: OperatorSettings,
        exports: Informer[ExportView],
        sender: Sender | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.sender = sender or Sender(
            policy=settings.notify.callback_policy, timeout=settings.notify.timeout_seconds
        )
        self.clock = clock
        self.backoff = Backoff(
            base=settings.notify.backoff_base_seconds, cap=settings.notify.backoff_max_seconds
        )
        self.presigner = Presigner(
            endpoint_url=settings.notify.presign_endpoint_url or None,
            region=None,
            expiry_seconds=settings.notify.presign_expiry_seconds,
        )
        self.writer: KubeWriter | None = None
        """Where `status.notification` and Events go (the manager's own client for it)."""
        self.queue: WorkQueue[Key] = WorkQueue(backoff=settings.api.retry)
        self._exports = exports
        self._notes: dict[str, dict[str, Any]] = {}
        """uid → the notification state written last (fresher than the watch), until seen."""
        self._unwritten: set[str] = set()
        """uids whose state in `_notes` is still to be written (a write failed: retried)."""
        self._due: dict[str, dt.datetime] = {}
        """uid → when the next attempt may go (backoff, Retry-After), while one is pending."""

    # -- the event handler and the replay --------------------------------------------------------
    @staticmethod
    def wants(view: ExportView) -> bool:
        """Whether an ExportJob may need a callback: finished, with `spec.notify` (cheap: it
        runs for every watch event)."""
        return view.finished and '"notify":' in view.spec_json

    def on_export(
        self, event_type: str | None, view: ExportView, old: ExportView | None, body: Any
    ) -> None:
        if event_type == "DELETED":
            self._forget(view.uid)
            self.queue.discard(view.key)
        elif self.wants(view):
            self.queue.add(view.key)

    def replay(self) -> None:
        """Look at every ExportJob that may need a callback (on gaining the lead)."""
        for view in list(self._exports.items.values()):
            if self.wants(view):
                self.queue.add(view.key)

    def _forget(self, uid: str) -> None:
        self._notes.pop(uid, None)
        self._unwritten.discard(uid)
        self._due.pop(uid, None)

    # -- reconcile -------------------------------------------------------------------------------
    async def reconcile(self, key: Key) -> Result:
        """At most one attempt for the ExportJob `key`; raises to retry a failed status write."""
        view = self._exports.get(key)
        if view is None or not self.wants(view):
            return Result()
        obj = {
            "metadata": {
                "namespace": view.namespace,
                "name": view.name,
                "uid": view.uid,
                "creationTimestamp": format_time(view.created),
            },
            "spec": json.loads(view.spec_json),  # not view.spec: no parsed copy kept cached
            "status": json.loads(view.status_json),
        }
        if not (obj["spec"].get("notify") or {}).get("url"):
            return Result()
        uid, status = view.uid, obj["status"]
        note = self._note(uid, status.get("notification") or {})
        if uid in self._unwritten and not await self._write(view, note):
            return Result()
        if note.get("state") in (DELIVERED, FAILED):
            return Result()
        now = self.clock()
        attempts = int(note.get("attempts") or 0)
        final_at = parse_time(status.get("completionTime")) or now
        deadline = final_at + dt.timedelta(seconds=self.settings.notify.window_seconds)
        last_error = str(note.get("lastError") or "")
        if attempts:
            due = self._due.get(uid) or self._resumed_due(note)
            if due is not None and now < due:
                return Result(requeue_after=(min(due, deadline) - now).total_seconds())
            if now >= deadline:
                return await self._conclude(
                    view, note, FAILED, f"the retry window ended: {last_error}"
                )
        return await self._attempt_once(view, obj, attempts, final_at, deadline)

    def _note(self, uid: str, seen: Mapping[str, Any]) -> dict[str, Any]:
        written = self._notes.get(uid)
        if written is None:
            return dict(seen)
        if uid not in self._unwritten and _caught_up(seen, written):
            del self._notes[uid]  # the watch caught up
            return dict(seen)
        return written

    def _resumed_due(self, note: Mapping[str, Any]) -> dt.datetime | None:
        """After a restart: the last attempt's time plus the backoff (without jitter)."""
        last = parse_time(note.get("lastAttemptTime"))
        if last is None:
            return None
        attempts = int(note.get("attempts") or 0)
        return last + dt.timedelta(seconds=self.backoff.delay(attempts, rand=lambda: 0.0))

    async def _attempt_once(
        self,
        view: ExportView,
        obj: dict[str, Any],
        attempts: int,
        final_at: dt.datetime,
        deadline: dt.datetime,
    ) -> Result:
        started = time.monotonic()
        attempt = await self._attempt(obj)
        metrics.NOTIFICATION_ATTEMPT_SECONDS.observe(time.monotonic() - started)
        metrics.NOTIFICATION_ATTEMPTS.labels(attempt.label).inc()
        attempts += 1
        now = self.clock()
        last_error = attempt.error or ""
        note: dict[str, Any] = {
            "state": PENDING,
            "attempts": attempts,
            "lastStatusCode": attempt.status_code,
            "lastAttemptTime": format_time(now),
            "deliveredTime": None,
            "lastError": last_error[:MAX_ERROR] or None,
        }
        if attempt.verdict == "delivered":
            note["deliveredTime"] = format_time(now)
            delay = max(0.0, (now - final_at).total_seconds())
            metrics.NOTIFICATION_DELAY_SECONDS.observe(delay)
            return await self._conclude(view, note, DELIVERED, "")
        if attempt.verdict == "stop":
            return await self._conclude(view, note, FAILED, last_error)
        delay = max(self.backoff.delay(attempts), attempt.retry_after or 0.0)
        if now + dt.timedelta(seconds=delay) > deadline:
            return await self._conclude(view, note, FAILED, f"the retry window ended: {last_error}")
        log.info(
            "callback for %s/%s: attempt %d failed (%s); next in %.1f s",
            *view.key,
            attempts,
            last_error,
            delay,
        )
        self._due[view.uid] = now + dt.timedelta(seconds=delay)
        self._record(view.uid, note)
        if not await self._write(view, note):
            return Result()
        return Result(requeue_after=delay)

    async def _attempt(self, obj: dict[str, Any]) -> Attempt:
        settings = self.settings
        url = str(obj["spec"]["notify"]["url"])
        # Without a usable secret nothing is sent, and the attempt is retried: the secret is
        # read before each one, so a Secret added (or a rollout that mounts it) delivers it.
        try:
            keys = read_secrets(inline=settings.notify.secrets, path=settings.notify.secrets_file)
        except (OSError, ValueError) as exc:
            return Attempt("retry", None, f"no usable signing secret: {exc}", unsigned=True)
        if not keys:
            missing = "no signing secret configured (EXPORTJOBS_OPERATOR_NOTIFY_SECRETS_FILE)"
            return Attempt("retry", None, missing, unsigned=True)
        try:
            target = settings.notify.callback_policy.check_url(url)
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
        event = build_event(obj, source_prefix=settings.notify.source, download_url=download_url)
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = signed_headers(
            keys=keys, msg_id=event["id"], timestamp=int(self.clock().timestamp()), body=body
        )
        return await self.sender.post(target, body=body, headers=headers, now=self.clock)

    def _record(self, uid: str, note: dict[str, Any]) -> None:
        self._notes[uid] = note
        self._unwritten.add(uid)

    async def _conclude(
        self, view: ExportView, note: dict[str, Any], state: str, error: str
    ) -> Result:
        note = {**note, "state": state}
        if state == FAILED:
            note["lastError"] = error[:MAX_ERROR] or None
            log.warning("callback for %s/%s failed: %s", *view.key, error)
        metrics.NOTIFICATIONS.labels(state.lower()).inc()
        self._due.pop(view.uid, None)
        self._record(view.uid, note)
        await self._write(view, note)
        return Result()

    async def _write(self, view: ExportView, note: dict[str, Any]) -> bool:
        """Record `status.notification` (and with a final state, post its Event); False when
        the ExportJob is gone or was replaced. Other failures raise: the queue retries."""
        assert self.writer is not None
        try:
            await self.writer.patch_status(
                namespace=view.namespace,
                name=view.name,
                uid=view.uid,
                status={"notification": note},
            )
        except KubeError as exc:
            if exc.status in (404, 409):
                self._forget(view.uid)
                return False
            log.warning("notification state of %s/%s not written: %s", *view.key, exc)
            raise
        self._unwritten.discard(view.uid)
        state = note.get("state")
        if state in (DELIVERED, FAILED):
            attempts = note.get("attempts")
            message = (
                f"callback delivered after {attempts} attempt(s)"
                if state == DELIVERED
                else f"callback failed after {attempts} attempt(s): {note.get('lastError')}"
            )
            try:
                type_ = "Normal" if state == DELIVERED else "Warning"
                event = event_about(
                    view, type_=type_, reason=f"Callback{state}", message=message, now=self.clock()
                )
                await self.writer.post_event(event)
            except KubeError as exc:
                log.debug("event not posted: %s", exc)
        return True
