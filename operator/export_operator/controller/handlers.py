"""The kopf handlers: thin adapters from watch events to the Controller.

Indexes (ExportJobs, their Jobs, their pods) plus event handlers that only enqueue the ExportJob's
key (reconciler.py), no kopf-managed create/update handlers: the reconciliation is level-based,
so kopf keeps no per-object progress. Its storages
are still pointed at annotations, so nothing kopf might write lands in a pruned `status` field.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from export_operator import kube, resource
from export_operator.controller.notify import Notifier
from export_operator.controller.queue import Key
from export_operator.controller.reconciler import Controller
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.views import ExportView, JobView, PodView

EXPORTJOBS = (resource.API_VERSION, resource.PLURAL)
JOBS = ("batch/v1", "jobs")
PODS = ("v1", "pods")
OURS = {resource.LABEL_EXPORT: kopf.PRESENT}
API_ERROR_BACKOFFS = (1, 1, 2, 3, 5, 8, 13, 21, *([30] * 18))
"""Seconds between kopf's retries of a failed API request: about ten minutes in all."""


class EventOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Annotations diff-base storage that skips building an essence on every event.

    kopf builds a deep copy of each body ("essence") on every watch event to diff it for
    on.create/on.update handlers. This operator registers none (only indexes and event handlers),
    so the copies of every Pod and Job body were pure cost: a third of the operator's CPU in a
    burst. With no changing handlers nothing is ever stored either.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Apply our settings to kopf's: timeouts, server-side filters, storages, peering."""
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=resource.GROUP
    )
    kopf_settings.persistence.diffbase_storage = EventOnlyDiffBaseStorage(prefix=resource.GROUP)
    kopf_settings.persistence.finalizer = f"{resource.GROUP}/kopf-finalizer"
    # Only the processor's Jobs and pods: filter on the server, not after the wire.
    kopf_settings.watching.label_selectors[JOBS] = resource.LABEL_EXPORT
    kopf_settings.watching.label_selectors[PODS] = resource.LABEL_EXPORT
    kopf_settings.watching.server_timeout = settings.watch_server_timeout_seconds
    kopf_settings.watching.client_timeout = settings.watch_client_timeout_seconds
    kopf_settings.watching.connect_timeout = settings.connect_timeout_seconds
    kopf_settings.networking.request_timeout = settings.request_timeout_seconds
    # kopf's default retries of a failing API request give up after about a minute, and then
    # the watch (and the operator) stop: keep trying for about ten minutes (an API server
    # upgrade or restart), so the operator recovers without a restart of its own.
    kopf_settings.networking.error_backoffs = API_ERROR_BACKOFFS
    kopf_settings.networking.connect_timeout = settings.connect_timeout_seconds
    # kopf's own per-object log lines would be one Event each: keep Events for transitions.
    kopf_settings.posting.enabled = False
    # One active replica is ensured by our own Lease (leader.py), not by kopf's peering: every
    # replica keeps its watches and indexes warm, so a standby takes over in seconds.
    kopf_settings.peering.standalone = True
    kopf_settings.peering.mandatory = False
    # Watching one namespace, a Role is all the operator gets: kopf must not try to list
    # namespaces and CRDs cluster-wide (403, retried for a minute before it falls back).
    kopf_settings.scanning.disabled = bool(settings.namespace)


async def connection_info(*, trust_env: bool = False) -> kopf.ConnectionInfo:
    """kopf's credentials from the same source as our API client (`kube.new_api_client`)."""
    api = await kube.new_api_client(trust_env=trust_env)
    try:
        config = api.configuration
        header: str | None = await config.get_api_key_with_prefix("BearerToken")
        parts = header.split(" ", 1) if header else []
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, header or None)
        return kopf.ConnectionInfo(
            server=str(config.host),
            ca_path=config.ssl_ca_cert,
            insecure=not config.verify_ssl,
            username=config.username or None,
            password=config.password or None,
            scheme=scheme,
            token=token,
            certificate_path=config.cert_file,
            private_key_path=config.key_file,
            proxy_url=config.proxy,
            trust_env=trust_env,
        )
    finally:
        await api.close()


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Register the operator's handlers on `registry` (a fresh one per operator or test)."""

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
        return await connection_info(trust_env=settings.networking.trust_env)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, controller.settings)
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()

    @kopf.on.probe(id="queue", registry=registry)
    async def queue_probe(**_: Any) -> dict[str, int]:
        return {
            "queued": len(controller.positions),
            "workQueue": len(controller.queue),
            "leading": int(controller.leading.is_set()),
        }

    # Async on purpose: kopf runs sync handlers in a thread pool, a thread hop per event.
    @kopf.index(*EXPORTJOBS, id="exportjobs", registry=registry)
    async def exportjobs(body: kopf.Body, **_: Any) -> dict[Key, ExportView]:
        view = ExportView.from_body(body)
        return {view.key: view}

    @kopf.index(*JOBS, labels=OURS, id="exportjob_jobs", registry=registry)
    async def exportjob_jobs(body: kopf.Body, **_: Any) -> dict[Key, JobView]:
        view = JobView.from_body(body)
        return {(view.namespace, view.export_name): view}

    @kopf.index(*PODS, labels=OURS, id="exportjob_pods", registry=registry)
    async def exportjob_pods(body: kopf.Body, **_: Any) -> dict[Key, PodView]:
        # Pods have no event handler: the index function enqueues (kopf's handler stage costs
        # about a millisecond per event, and pods are a third of all events). A deleted pod is
        # not enqueued: its Job's events follow.
        view = PodView.from_body(body)
        controller.on_pod(event_type=None, body=body)
        return {(view.namespace, view.export_name): view}

    def attach(kwargs: dict[str, Any]) -> None:
        controller.attach(
            exports=kwargs["exportjobs"],
            jobs=kwargs["exportjob_jobs"],
            pods=kwargs["exportjob_pods"],
        )

    @kopf.on.event(*EXPORTJOBS, registry=registry)
    async def exportjob_event(type: str | None, body: kopf.Body, **kwargs: Any) -> None:  # noqa: A002
        attach(kwargs)
        controller.on_export(event_type=type, body=body)

    @kopf.on.event(*JOBS, labels=OURS, registry=registry)
    async def job_event(type: str | None, body: kopf.Body, **kwargs: Any) -> None:  # noqa: A002
        attach(kwargs)
        controller.on_job(event_type=type, body=body)


def register_notifier(
    registry: kopf.OperatorRegistry, notifier: Notifier, controller: Controller | None = None
) -> None:
    """Completion callbacks: their own ExportJob event handler, apart from the reconciler.

    With a `controller`, callbacks go out only from the replica that leads (leader election):
    events seen while standing by are not acted on, and each time this replica starts to lead
    it replays every cached ExportJob to the notifier (which skips those already notified).
    """

    @kopf.on.startup(registry=registry)
    async def start_notifier(**_: Any) -> None:
        await notifier.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_notifier(**_: Any) -> None:
        await notifier.stop()

    if controller is not None:
        leading = controller.leading

        def replay() -> None:
            for body in controller.export_bodies():
                notifier.observe(event_type=None, body=body)

        controller.on_leading.append(replay)
    else:
        leading = asyncio.Event()
        leading.set()

    @kopf.on.event(*EXPORTJOBS, registry=registry)
    async def exportjob_notification(type: str | None, body: kopf.Body, **_: Any) -> None:  # noqa: A002
        if leading.is_set():
            notifier.observe(event_type=type, body=body)
