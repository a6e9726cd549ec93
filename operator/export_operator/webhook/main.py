"""`exportjobs-webhook`: run the webhook HTTP service (settings from EXPORTJOBS_WEBHOOK_*)."""

from __future__ import annotations

import argparse
import logging
import sys

from export_operator.webhook.settings import WebhookSettings
from export_processor.common import add_version_argument

DESCRIPTION = """\
Serve the exportjobs HTTP API: POST /v1/exports and /v1/events/s3 store ExportJobs (202 once
stored, 503 + Retry-After when the API server is unavailable); GET /v1/exports[/{id}] reads them
from a watch-fed cache; DELETE /v1/exports/{id} cancels. Also /healthz, /readyz, /metrics and
/openapi.json. Configuration comes from EXPORTJOBS_WEBHOOK_* environment variables (see
docs/configuration.md); the API server from in-cluster credentials or $KUBECONFIG."""


def main(argv: list[str] | None = None) -> int:
    """Run the webhook until SIGTERM/SIGINT; exit 2 on invalid settings."""
    parser = argparse.ArgumentParser(prog="exportjobs-webhook", description=DESCRIPTION)
    parser.add_argument("--host", help="listen address (overrides EXPORTJOBS_WEBHOOK_HOST)")
    parser.add_argument("--port", type=int, help="listen port (overrides EXPORTJOBS_WEBHOOK_PORT)")
    add_version_argument(parser, program="exportjobs-webhook", extra="operator")
    args = parser.parse_args(argv)
    try:
        settings = WebhookSettings.from_env()
    except (ValueError, OSError) as exc:
        print(f"exportjobs-webhook: {exc}", file=sys.stderr)
        return 2
    # Imported here so that --help and bad settings answer without loading the HTTP and
    # Kubernetes client libraries.
    import uvloop
    from aiohttp import web

    from export_operator.jsonlogs import configure_logging
    from export_operator.webhook.app import create_app

    configure_logging(level=settings.http.log_level)
    logging.getLogger(__name__).info(
        "starting", extra={"namespace": settings.namespace, "port": args.port or settings.http.port}
    )
    web.run_app(
        create_app(settings),
        # uvloop: the HTTP serving and the API calls cost less CPU per request than on asyncio's
        # own loop, which on a shared node is what POST throughput is made of (docs/benchmarks.md).
        loop=uvloop.new_event_loop(),
        host=args.host or settings.http.host,
        port=args.port or settings.http.port,
        shutdown_timeout=settings.http.shutdown_timeout_seconds,
        access_log=None,
        print=None,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
