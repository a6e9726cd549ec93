"""`exportjobs-operator`: run the operator that turns ExportJobs into Jobs (kopf runs the process:
login, start-up, clean-up, liveness).

Configuration comes from `EXPORTJOBS_OPERATOR_*` environment variables (and
`EXPORTJOBS_NAMESPACE`); the flags below override the few that matter on a command line.

Replicas: run two (or more). They elect a leader through a coordination.k8s.io Lease
(`EXPORTJOBS_OPERATOR_LEASE_NAME`, default `exportjobs-operator`, in
`EXPORTJOBS_OPERATOR_LEASE_NAMESPACE`); every replica watches, only the leader acts, and a standby
takes over about 10 s after the leader stops renewing (at once after a clean shutdown). The
operator needs get/create/update on that Lease. `--standalone` turns leader election off (one
replica only).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import kopf
import uvloop

from export_operator.controller import metrics
from export_operator.controller.handlers import register
from export_operator.controller.manager import Manager
from export_operator.controller.settings import OperatorSettings
from export_operator.jsonlogs import configure_logging
from export_processor.common import add_version_argument, version_line

PROGRAM = "exportjobs-operator"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Reconcile ExportJob resources (exportjobs.dev/v1alpha1) into batch/v1 Jobs that "
            "run the export processor. Settings: EXPORTJOBS_OPERATOR_* environment variables "
            "(see docs/configuration.md)."
        ),
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--namespace",
        help="watch only this namespace (default: $EXPORTJOBS_NAMESPACE; empty = all)",
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else in-cluster)"
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no leader election: act even if others run"
    )
    parser.add_argument("--max-running", type=int, help="concurrency limit (0 = none)")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics (0 = off)")
    parser.add_argument("--liveness-port", type=int, help="port of /healthz (0 = off)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    add_version_argument(parser, program=PROGRAM, extra="operator")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the operator until SIGINT/SIGTERM."""
    args = _parser().parse_args(argv)
    flags = ("namespace", "max_running", "metrics_port", "liveness_port")
    overrides: dict[str, Any] = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    if args.standalone:
        overrides["standalone"] = True
    try:
        settings = OperatorSettings.from_env(**overrides)
    except ValueError as exc:
        print(f"exportjobs-operator: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig

    # JSON lines, as the webhook writes them (one parser for both in a log pipeline).
    configure_logging(level="DEBUG" if args.verbose else settings.process.log_level)
    logging.getLogger(__name__).info("%s", version_line(PROGRAM, "operator"))

    metrics.serve(host=settings.process.metrics_host, port=settings.process.metrics_port)
    controller = Manager(settings=settings)
    metrics.follow_leadership(controller.leading)
    registry = kopf.OperatorRegistry()
    register(registry, controller)
    host, port = settings.process.liveness_host, settings.process.liveness_port
    liveness = f"http://{host}:{port}/healthz" if port else None
    # uvloop: the watch streams and API calls cost less CPU per event than on asyncio's own loop.
    uvloop.run(
        kopf.operator(
            registry=registry,
            clusterwide=not settings.namespace,
            namespaces=[settings.namespace] if settings.namespace else (),
            # kopf's peering is off: one active replica is ensured by the Lease (leader.py). An
            # identity given, kopf asks nobody for one (getpass.getuser() needs a passwd entry).
            standalone=True,
            identity=PROGRAM,  # type: ignore[arg-type]  # kopf.Identity: a str, not exported
            liveness_endpoint=liveness,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
