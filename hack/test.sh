#!/usr/bin/env bash
# Everything `make test` does: install, build or reuse the tools, lint, then every test tier on a
# local cluster and S3 server that the tests start and stop themselves.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
started=$SECONDS
step() { printf '\n== %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "python environment"
hack/venv.sh
step "tools from pinned Go modules"
hack/tools.sh all
step "lint: lock matches pyproject.toml, ruff, mypy --strict, import contracts"
hack/lock.sh check
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports

# The test session starts its own cluster in .local/test, and the end-to-end tier a second one
# with the machine's real node in .local/e2e; stop both even if pytest is killed.
export EXPORTJOBS_TEST_LOCAL_DIR=${EXPORTJOBS_TEST_LOCAL_DIR:-$repo/.local/test}
export EXPORTJOBS_E2E_LOCAL_DIR=${EXPORTJOBS_E2E_LOCAL_DIR:-$repo/.local/e2e}
test_local=$EXPORTJOBS_TEST_LOCAL_DIR
# The image smoke tests (tests/e2e/images) build both images with hack/images.sh, which installs
# and starts Debian's Docker engine when none runs; EXPORTJOBS_IMAGE_TESTS=0 skips them.
export EXPORTJOBS_IMAGE_TESTS=${EXPORTJOBS_IMAGE_TESTS:-1}
# tests/e2e/test_cluster_cycles.py: 10 up/down cycles of the cluster with its real node by default
# (~3-5 min, run it alone for that); `make test` runs 1 (host state compared before and after; the
# e2e tier's own cluster is a second up/down) so that a warm run grows by minutes, not by ten.
export EXPORTJOBS_CLUSTER_CYCLES=${EXPORTJOBS_CLUSTER_CYCLES:-1}
cleanup() {
  EXPORTJOBS_LOCAL_DIR=$test_local EXPORTJOBS_CLUSTER_NAME=exportjobs-test \
    hack/cluster.sh down >/dev/null 2>&1 || true
  EXPORTJOBS_LOCAL_DIR=$EXPORTJOBS_E2E_LOCAL_DIR EXPORTJOBS_CLUSTER_NAME=exportjobs-e2e \
    hack/cluster.sh down >/dev/null 2>&1 || true
  hack/images.sh engine-stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
step "tests: unit, cluster and end-to-end tiers"
# Short tracebacks: a CI log shows the head and tail of the output, and a failed end-to-end test's
# report ends with the cluster's state (tests/support/e2e_diagnostics.py), which must fit in it.
.venv/bin/python -m pytest -p no:cacheprovider --durations=15 --tb=short "$@"
step "done"
