"""kopf as the process runner: start-up and clean-up, credentials, the liveness probe.

The operator's watches are its own informers (export_operator.informer) feeding the work queue
(manager.py): kopf registers no resource handlers or indexes, so it runs no watches and keeps no
per-object state (why: docs/benchmarks.md, "Operator").
"""

from __future__ import annotations

from typing import Any

import kopf

from export_operator import kube
from export_operator.controller.manager import Manager
from export_operator.controller.settings import OperatorSettings


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Apply our settings to kopf's: timeouts, no posting, no peering, no scanning."""
    kopf_settings.networking.request_timeout = settings.api.request_timeout_seconds
    kopf_settings.networking.connect_timeout = settings.api.connect_timeout_seconds
    kopf_settings.posting.enabled = False
    # One active replica is ensured by our own Lease (leader.py), not by kopf's peering.
    kopf_settings.peering.standalone = True
    kopf_settings.peering.mandatory = False
    # kopf watches nothing, so it needs no discovery of the cluster's resources either (with a
    # Role in one namespace it could not list CRDs and namespaces anyway).
    kopf_settings.scanning.disabled = True


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


def register(registry: kopf.OperatorRegistry, controller: Manager) -> None:
    """Register the operator's activities on `registry` (a fresh one per operator or test)."""

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
            "queued": len(controller.admission.positions),
            "workQueue": len(controller.queue),
            "leading": int(controller.leading.is_set()),
            "cached": len(controller.caches.exports.items),
            "synced": int(controller.caches.synced()),
        }
