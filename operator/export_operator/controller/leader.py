"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it.

Every replica runs its watches (so a standby's caches are warm); only the holder of the Lease
reconciles. The holder renews the Lease every `retry_period`; if it cannot renew for
`renew_deadline` it stops acting (and keeps trying: once the API server answers again it renews
its own Lease and goes on, no restart). A standby takes the Lease over when it has seen no renewal
for `lease_duration`, measured on its own monotonic clock from the moment it observed the last
change (so clock skew between replicas does not matter). Writes use the Lease's
`resourceVersion`: of two replicas racing for it, one wins, the other gets 409.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes_asyncio import client

log = logging.getLogger(__name__)


def default_identity() -> str:
    """This replica's name in the Lease: the pod name (hostname) and the process id."""
    return f"{socket.gethostname()}_{os.getpid()}"


def _micro_time(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 8.0
    renew_deadline: float = 6.0
    retry_period: float = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Record:
    holder: str
    renew_time: str
    duration: int
    transitions: int
    version: str


class LeaderElector:
    """Holds or watches one Lease; `leading` is set while this replica may act."""

    def __init__(
        self,
        leases: client.CoordinationV1Api,
        config: LeaseConfig,
        *,
        on_started: Callable[[], None] = lambda: None,
        request_timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        leading: asyncio.Event | None = None,
    ) -> None:
        self.config = config
        self.leading = leading or asyncio.Event()
        self._api = leases
        self._on_started = on_started
        self._timeout = request_timeout
        self._monotonic = monotonic
        self._observed: _Record | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0

    async def run(self) -> None:
        """Try to acquire, then renew, forever (cancel to stop; `release()` hands it over)."""
        while True:
            try:
                await self._try_acquire_or_renew()
            except Exception as exc:  # API down, timeouts: keep trying
                log.debug("lease %s: %s", self.config.name, exc)
            if (
                self.leading.is_set()
                and self._monotonic() - self._renewed_at > self.config.renew_deadline
            ):
                log.warning(
                    "lease %s/%s not renewed for %.0fs: no longer acting as leader",
                    self.config.namespace,
                    self.config.name,
                    self.config.renew_deadline,
                )
                self.leading.clear()
            await asyncio.sleep(self.config.retry_period)

    async def _try_acquire_or_renew(self) -> None:
        cfg = self.config
        now = dt.datetime.now(dt.UTC)
        try:
            lease = await self._api.read_namespaced_lease(
                cfg.name, cfg.namespace, _request_timeout=self._timeout
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            await self._api.create_namespaced_lease(
                cfg.namespace,
                cast(
                    Any,
                    {
                        "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                        "spec": self._spec(now, acquire=True, transitions=0),
                    },
                ),
                _request_timeout=self._timeout,
            )
            self._became_leader()
            return
        spec = lease.spec
        record = _Record(
            holder=spec.holder_identity or "",
            renew_time=str(spec.renew_time or ""),
            duration=int(spec.lease_duration_seconds or cfg.lease_duration),
            transitions=int(spec.lease_transitions or 0),
            version=str(lease.metadata.resource_version),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self._monotonic()
        mine = record.holder == cfg.identity
        expired = not record.holder or self._monotonic() - self._observed_at > record.duration
        if not mine and not expired:
            if self.leading.is_set():
                log.warning("lease %s taken by %s: standing by", cfg.name, record.holder)
                self.leading.clear()
            return
        transitions = record.transitions if mine else record.transitions + 1
        body = {
            "metadata": {"name": cfg.name, "resourceVersion": record.version},
            "spec": self._spec(now, acquire=not mine, transitions=transitions, lease=spec),
        }
        await self._api.replace_namespaced_lease(
            cfg.name, cfg.namespace, cast(Any, body), _request_timeout=self._timeout
        )
        if not mine:
            log.info("lease %s/%s taken over from %r", cfg.namespace, cfg.name, record.holder)
        self._became_leader()

    def _spec(
        self, now: dt.datetime, *, acquire: bool, transitions: int, lease: Any = None
    ) -> dict[str, Any]:
        acquired = (
            _micro_time(now)
            if acquire or lease is None or lease.acquire_time is None
            else _micro_time(lease.acquire_time)
        )
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _became_leader(self) -> None:
        self._renewed_at = self._monotonic()
        if not self.leading.is_set():
            log.info("leading: lease %s/%s held by %s", *self._names())
            self.leading.set()
            self._on_started()

    def _names(self) -> tuple[str, str, str]:
        return (self.config.namespace, self.config.name, self.config.identity)

    async def release(self) -> None:
        """Give the Lease up (on a clean shutdown), so a standby takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        cfg = self.config
        try:
            lease = await self._api.read_namespaced_lease(
                cfg.name, cfg.namespace, _request_timeout=self._timeout
            )
            if lease.spec.holder_identity != cfg.identity:
                return
            body = {
                "metadata": {"name": cfg.name, "resourceVersion": lease.metadata.resource_version},
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": _micro_time(dt.datetime.now(dt.UTC)),
                    "leaseTransitions": int(lease.spec.lease_transitions or 0),
                },
            }
            await self._api.replace_namespaced_lease(
                cfg.name, cfg.namespace, cast(Any, body), _request_timeout=self._timeout
            )
            log.info("lease %s/%s released", cfg.namespace, cfg.name)
        except Exception as exc:  # best effort: the Lease expires anyway
            log.warning("lease %s not released: %s", cfg.name, exc)
