"""Start-up steps retry what a server may refuse while it starts, within a bounded wait.

MinIO once answered 503 to the first bucket create right after /minio/health/ready said ready
(`[cluster] error: could not create bucket exports-input`). hack/cluster.sh's functions are
sourced here with the S3 request replaced by one that refuses a given number of times.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

CLUSTER = Path(__file__).resolve().parents[3] / "hack" / "cluster.sh"


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {CLUSTER}\n{script}"], capture_output=True, text=True, check=False
    )


def test_bucket_create_is_retried_until_the_server_accepts() -> None:
    # HEAD says the bucket is missing; PUT is refused twice (a 503), then accepted.
    result = _run(
        """
        calls=0 puts=0
        s3_request() {
          calls=$((calls + 1)); [ "$1" = PUT ] || return 1
          puts=$((puts + 1)); [ $puts -ge 3 ]
        }
        retry 10 ensure_bucket exports-input
        echo "calls=$calls puts=$puts"
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["calls=6", "puts=3"]


def test_an_existing_bucket_is_not_created_again() -> None:
    result = _run(
        """
        s3_request() { [ "$1" = HEAD ] || { echo "unexpected $1"; return 1; }; }
        retry 10 ensure_bucket exports-input && echo ok
        """
    )
    assert result.stdout.split() == ["ok"], result.stdout + result.stderr


def test_a_server_that_keeps_refusing_fails_within_the_bound() -> None:
    started = time.monotonic()
    result = _run(
        """
        s3_request() { echo "curl: (22) The requested URL returned error: 503" >&2; return 22; }
        retry 2 ensure_bucket exports-input
        """
    )
    assert result.returncode != 0
    assert "503" in result.stderr  # the last refusal is shown, not swallowed
    assert time.monotonic() - started < 10
