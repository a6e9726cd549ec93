#!/usr/bin/env bash
# `make bench`: every benchmark in bench/, on the local cluster and S3 server (started if needed).
# Each prints its figures and its ratio against a baseline measured in the same run.
#   hack/bench.sh [name...]   e.g. hack/bench.sh processor   (default: all)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
hack/venv.sh
if [ ! -f .local/cluster.env ] || ! (source .local/cluster.env && kubectl get --raw /readyz >/dev/null 2>&1); then
  hack/cluster.sh up
fi
# shellcheck disable=SC1091
source .local/cluster.env
export PATH=$repo/.venv/bin:$PATH
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(processor operator webhook)
for name in "${names[@]}"; do
  echo "== bench/bench_$name.py"
  python "bench/bench_$name.py"
done
