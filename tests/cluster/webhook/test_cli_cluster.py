"""The `exportjobs` console script against the real webhook on the real API server and S3.

The operator's part (status writes) is played through the API server, so every answer the CLI
reads is the webhook's real one, from its watch-fed cache; the download goes to MinIO.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.exportjobs import ExportJobs
from tests.support.webhook_process import TOKEN, StartWebhook

CLI = shutil.which("exportjobs", path=str(Path(sys.executable).parent)) or "exportjobs"


async def _cli(url: str, *args: str, token: str = TOKEN) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--url",
        url,
        "--token",
        token,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _in_cache(url: str, name: str) -> None:
    deadline = time.monotonic() + 10
    while (await _cli(url, "get", name))[0] != 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_submit_wait_download_and_exit_codes(
    start_webhook: StartWebhook, exportjobs: ExportJobs, s3_client: Any, tmp_path: Path
) -> None:
    webhook = await start_webhook()
    url = webhook.url

    code, out, err = await _cli(
        url, "submit", "s3://exports-input/cli/a.csv", "--format", "parquet",
        "--destination", "s3://exports-output/cli/",
    )  # fmt: skip
    assert code == 0, err
    name = out.strip()
    assert exportjobs.get(name)["spec"]["format"] == "parquet"
    await _in_cache(url, name)

    # The operator's part: running, then succeeded with an object under its own prefix.
    key = f"cli/{name}/a.parquet"
    s3_client.put_object(Bucket="exports-output", Key=key, Body=b"PAR1-bytes")
    exportjobs.set_status(name, {"phase": "Running", "progress": {"percent": 50.0, "rows": 7}})
    waiting = asyncio.create_task(_cli(url, "wait", name, "--interval", "0.2", "--timeout", "30"))
    await asyncio.sleep(1.0)
    exportjobs.set_status(
        name, {"phase": "Succeeded", "result": {"uri": f"s3://exports-output/{key}", "bytes": 10}}
    )
    code, _, err = await waiting
    assert code == 0, err
    lines = err.splitlines()  # not a terminal: plain lines, one per state seen
    assert any(line.startswith("Running") and "50.0%" in line for line in lines), err
    assert lines[-1].startswith("Succeeded")

    target = tmp_path / "out.parquet"
    code, _, err = await _cli(url, "download", name, "-o", str(target))
    assert code == 0, err
    assert target.read_bytes() == b"PAR1-bytes"

    # Failed -> 1, Cancelled (after `cancel`) -> 3.
    code, out, _ = await _cli(url, "submit", "s3://exports-input/cli/b.csv", "-f", "csv")
    failed = out.strip()
    await _in_cache(url, failed)
    exportjobs.set_status(failed, {"phase": "Failed", "error": {"code": "BAD_CSV", "message": "x"}})
    code, _, err = await _cli(url, "wait", failed, "--interval", "0.2", "--timeout", "30")
    assert code == 1 and "BAD_CSV" in err

    code, out, _ = await _cli(url, "submit", "s3://exports-input/cli/c.csv", "-f", "jsonl")
    cancelled = out.strip()
    await _in_cache(url, cancelled)
    code, out, err = await _cli(url, "cancel", cancelled)
    assert code == 0, err
    assert exportjobs.get(cancelled)["spec"]["cancel"] is True
    exportjobs.set_status(cancelled, {"phase": "Cancelled"})
    code, _, _ = await _cli(url, "wait", cancelled, "--interval", "0.2", "--timeout", "30")
    assert code == 3

    # The list shows all three; refusals are 5.
    code, out, _ = await _cli(url, "list")
    assert code == 0 and {name, failed, cancelled} <= {line.split()[0] for line in out.splitlines()}
    code, _, err = await _cli(url, "submit", "s3://elsewhere/x.csv", "-f", "csv")
    assert code == 5 and "source-not-allowed" in err
    code, _, _ = await _cli(url, "get", name, token="not-the-token-at-all")
    assert code == 5
