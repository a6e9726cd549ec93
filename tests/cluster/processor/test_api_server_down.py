"""The API server down for 60 s while exports run (issue 22, "the cluster misbehaving"): the
processor's progress patches fail without failing the export, and the status catches up.

Three processors read the same source through Toxiproxy at a crawl, each patching the progress of
its own ExportJob on the cluster's real kube-apiserver, which is stopped once all three have
reported some progress and started again 60 s later:

- `spanning` is still reading when the API server comes back: its status moves on while it runs;
- `ending` is let go 10 s into the outage and completes its output while the API server is down:
  its last patch (100 %) waits for the API server and is taken when it answers again;
- `signalled` is let go too, then stopped by SIGTERM while its last patch waits (the pod being
  deleted or its deadline passing): it exits 0 with its result at once.

`spanning` and `ending` end with `status.progress` = their result's bytes and rows at 100 %.
Today's main failed `ending`: it exited during the outage, its last patch lost, its progress left
where the outage found it. `spanning` was already right (every patch samples the moment).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from tests.support import s3_faults
from tests.support.apiserver import ApiServer
from tests.support.cluster import LocalCluster
from tests.support.kube_access import ca_file_of, create_exportjob, service_account_token
from tests.support.processor_inputs import MiB, medium_csv
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(480)

ROWS = 120_000
OUTAGE_SECONDS = 60.0
LET_GO_AFTER_SECONDS = 10.0
CRAWL = 48
"""KB/s per connection of a crawling export (two GETs in flight): about 100 KB/s, so 12 MB
outlast the outage."""
NAMES = ("spanning", "ending", "signalled")


@dataclass
class Export:
    name: str
    proc: subprocess.Popen[str]
    message: Path
    toxic: str

    def output_complete(self) -> bool:
        """The termination message is written once the output is complete (before the last
        progress patch)."""
        return self.message.exists() and self.message.stat().st_size > 0

    def finish(self, timeout: float) -> tuple[int, str, dict[str, Any]]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err, json.loads(self.message.read_text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.communicate()


def _retrying(call: Callable[[], Any]) -> Any:
    """An API call right after the restart: the client's pooled connections may be dead."""
    for attempt in range(10):
        try:
            return call()
        except Exception:
            if attempt == 9:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def test_api_server_down_60_s_while_exports_run(
    cluster: LocalCluster,
    kube_api: k8s.ApiClient,
    crd: str,
    namespace: str,
    s3_client: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    objects = k8s.CustomObjectsApi(kube_api)

    def progress(name: str) -> dict[str, Any]:
        got = cast(
            dict[str, Any],
            objects.get_namespaced_custom_object(
                "exportjobs.dev", "v1alpha1", namespace, "exportjobs", name
            ),
        )
        return dict((got.get("status") or {}).get("progress") or {})

    data = medium_csv(ROWS)
    s3_client.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=data)
    for name in NAMES:
        create_exportjob(kube_api, namespace, s3_bucket, name=name, key="in/data.csv")
    token_file = tmp_path / "token"
    token_file.write_text(service_account_token(kube_api, namespace, allowed=True))
    server, ca = ca_file_of(cluster, tmp_path)
    apiserver = ApiServer(cluster, tmp_path)
    upstream = cluster.s3.endpoint_url.removeprefix("http://")
    with s3_faults.toxiproxy(tmp_path) as toxi:
        exports: dict[str, Export] = {}
        try:
            for name in NAMES:
                listen = toxi.proxy(name, upstream)
                toxic = toxi.toxic(name, "bandwidth", "downstream", rate=CRAWL)
                message = tmp_path / f"termination-{name}"
                proc = subprocess.Popen(
                    [sys.executable, "-m", "export_processor.cli"],
                    env={
                        **os.environ,
                        "AWS_ENDPOINT_URL": f"http://{listen}",
                        "EXPORTJOBS_SOURCE_URI": f"s3://{s3_bucket}/in/data.csv",
                        "EXPORTJOBS_FORMAT": "csv",
                        "EXPORTJOBS_DESTINATION_URI": f"s3://{s3_bucket}/out/",
                        "EXPORTJOBS_EXPORT_NAME": name,
                        "EXPORTJOBS_EXPORT_NAMESPACE": namespace,
                        "EXPORTJOBS_KUBE_API_URL": server,
                        "EXPORTJOBS_KUBE_TOKEN_FILE": str(token_file),
                        "EXPORTJOBS_KUBE_CA_FILE": str(ca),
                        "EXPORTJOBS_PROGRESS_INTERVAL_SECONDS": "1",
                        "EXPORTJOBS_KUBE_TIMEOUT_SECONDS": "2",
                        # Small blocks and GETs: progress moves every few seconds at the crawl.
                        "EXPORTJOBS_BLOCK_SIZE_BYTES": str(MiB // 4),
                        "EXPORTJOBS_S3_READ_CHUNK_BYTES": str(MiB // 4),
                        "EXPORTJOBS_S3_READ_AHEAD": "2",
                        "EXPORTJOBS_S3_PART_SIZE_BYTES": str(5 * MiB),
                        "EXPORTJOBS_TERMINATION_MESSAGE_PATH": str(message),
                    },
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                exports[name] = Export(name, proc, message, toxic)
            wait_for(
                "every export to report some progress",
                lambda: all(progress(n).get("bytesRead") for n in NAMES),
                timeout=90,
                interval=0.5,
            )
            before = {n: progress(n) for n in NAMES}
            assert not any(e.output_complete() for e in exports.values()), before
            apiserver.stop()
            stopped = time.monotonic()
            try:
                time.sleep(LET_GO_AFTER_SECONDS)
                for name in ("ending", "signalled"):
                    toxi.remove_toxic(name, exports[name].toxic)
                for name in ("ending", "signalled"):
                    wait_for(
                        f"{name} to complete its output",
                        exports[name].output_complete,
                        timeout=OUTAGE_SECONDS - LET_GO_AFTER_SECONDS - 15,
                    )
                # The last patch waits for the API server (today's main exited at once).
                waited = {n: exports[n].proc.poll() is None for n in ("ending", "signalled")}
                exports["signalled"].proc.send_signal(signal.SIGTERM)
                signalled = exports["signalled"].finish(timeout=10)
                signalled_after = time.monotonic() - stopped
                spanning_ran = exports["spanning"].proc.poll() is None
                time.sleep(max(0.0, stopped + OUTAGE_SECONDS - time.monotonic()))
            finally:
                apiserver.start()
            print(f"API server down {time.monotonic() - stopped:.1f} s")
            assert spanning_ran, "spanning ended in the outage (the crawl was too fast)"
            # The status catches up while `spanning` still reads.
            wait_for(
                "spanning's progress to move after the outage",
                lambda: (
                    _retrying(lambda: progress("spanning")).get("bytesRead", 0)
                    > before["spanning"]["bytesRead"]
                ),
                timeout=60,
                interval=0.5,
            )
            assert exports["spanning"].proc.poll() is None, "spanning ended before the check"
            toxi.remove_toxic("spanning", exports["spanning"].toxic)
            outcomes = {n: exports[n].finish(timeout=180) for n in ("spanning", "ending")}
        finally:
            for export in exports.values():
                export.close()
            apiserver.revive_components(watch_for=20)
    for name, (code, err, payload) in outcomes.items():
        print(f"{name}: {err}")
        assert code == 0, err
        assert payload["rows"] == ROWS
        assert _retrying(functools.partial(progress, name)) == {
            "bytesRead": payload["bytesRead"],
            "bytesTotal": len(data),
            "rows": ROWS,
            "percent": 100,
        }, (name, err)
    for _, err, _ in outcomes.values():
        assert "progress patch failed (ignored)" in err, err
        assert "progress patches sent again after" in err, err
    assert waited == {"ending": True, "signalled": True}
    # SIGTERM while the last patch waits (the pod deleted, its deadline passed): exit 0 at once
    # with the result, the wait given up.
    code, err, payload = signalled
    assert code == 0, err
    assert payload["rows"] == ROWS
    assert "final progress not sent: stopped by a signal" in err, err
    assert signalled_after < OUTAGE_SECONDS
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])
    assert sorted(o["Key"] for o in listed) == [f"out/{n}/data.csv" for n in sorted(NAMES)]
