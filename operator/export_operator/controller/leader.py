"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's `leaderelection` does it.

Every replica runs its watches (so a standby's caches are warm); only the holder of the Lease
reconciles. The holder renews the Lease every `retry_period`; if it cannot renew for
`renew_deadline` it stops acting (and keeps trying: once the API server answers again it renews
its own Lease and goes on, no restart). A standby takes the Lease over when it has seen no renewal
for `lease_duration`, measured on its own monotonic clock from the moment it observed the last
change (so clock skew between replicas does not matter). Writes are merge patches naming the
Lease's `resourceVersion`: of two replicas racing for it, one wins, the other gets 409.
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
from typing import Any

from export_operator.controller.settings import OperatorSettings
from export_operator.kube import Kube, KubeError, collection_path, object_path

log = logging.getLogger(__name__)

LEASES = "coordination.k8s.io/v1"


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

    @classmethod
    def of(
        cls,
        settings: OperatorSettings,
        kube: Kube,
        *,
        on_started: Callable[[], None],
        leading: asyncio.Event,
    ) -> LeaderElector:
        """The elector the operator's settings describe (`LEASE_*`; by default the Lease is in the
        watched namespace, or `default`)."""
        lease = settings.lease
        config = LeaseConfig(
            namespace=lease.namespace or settings.namespace or "default",
            name=lease.name,
            identity=f"{socket.gethostname()}_{os.getpid()}",  # the pod's name, the process id
            lease_duration=lease.duration_seconds,
            renew_deadline=lease.renew_deadline_seconds,
            retry_period=lease.retry_period_seconds,
        )
        timeout = min(settings.api.request_timeout_seconds, lease.renew_deadline_seconds)
        return cls(kube, config, on_started=on_started, request_timeout=timeout, leading=leading)

    def __init__(
        self,
        kube: Kube,
        config: LeaseConfig,
        *,
        on_started: Callable[[], None] = lambda: None,
        request_timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        leading: asyncio.Event | None = None,
    ) -> None:
        self.config = config
        self.leading = leading or asyncio.Event()
        self._kube = kube
        self._path = object_path(LEASES, "leases", config.namespace, config.name)
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
                await self.try_acquire_or_renew()
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

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await self._kube.get(self._path, within=self._timeout)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def _write(self, version: str, spec: dict[str, Any]) -> None:
        """A merge patch conditional on `version` (409 when another replica wrote first)."""
        body = {"metadata": {"resourceVersion": version}, "spec": spec}
        async with asyncio.timeout(self._timeout):
            await self._kube.patch(self._path, body, read=False)

    async def try_acquire_or_renew(self) -> None:
        cfg = self.config
        now = dt.datetime.now(dt.UTC)
        lease = await self._read()
        if lease is None:
            body = {
                "apiVersion": LEASES,
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._spec(now, acquire=True, transitions=0),
            }
            async with asyncio.timeout(self._timeout):
                await self._kube.create(
                    collection_path(LEASES, "leases", cfg.namespace), body, read=False
                )
            self._became_leader()
            return
        spec = lease.get("spec") or {}
        record = _Record(
            holder=str(spec.get("holderIdentity") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            duration=int(spec.get("leaseDurationSeconds") or cfg.lease_duration),
            transitions=int(spec.get("leaseTransitions") or 0),
            version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
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
        await self._write(
            record.version,
            self._spec(now, acquire=not mine, transitions=transitions, lease=spec),
        )
        if not mine:
            log.info("lease %s/%s taken over from %r", cfg.namespace, cfg.name, record.holder)
        self._became_leader()

    def _spec(
        self,
        now: dt.datetime,
        *,
        acquire: bool,
        transitions: int,
        lease: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        kept = (lease or {}).get("acquireTime")
        acquired = _micro_time(now) if acquire or not kept else str(kept)
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
            cfg = self.config
            log.info("leading: lease %s/%s held by %s", cfg.namespace, cfg.name, cfg.identity)
            self.leading.set()
            self._on_started()

    async def release(self) -> None:
        """Give the Lease up (on a clean shutdown), so a standby takes over at once."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        cfg = self.config
        try:
            lease = await self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != cfg.identity:
                return
            transitions = int(spec.get("leaseTransitions") or 0)
            given_up = self._spec(dt.datetime.now(dt.UTC), acquire=False, transitions=transitions)
            given_up.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=None)
            version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
            await self._write(version, given_up)
            log.info("lease %s/%s released", cfg.namespace, cfg.name)
        except Exception as exc:  # best effort: the Lease expires anyway
            log.warning("lease %s not released: %s", cfg.name, exc)
