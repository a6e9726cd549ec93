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
# The webhook's GET figure is measured with wrk (Debian package `wrk`); install it when we can,
# and check its version against hack/debian-packages.txt (hack/debian.sh) like every apt install.
if [[ " ${names[*]} " == *" webhook "* ]]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck source=hack/debian.sh
    source hack/debian.sh
    debian_install host wrk || echo "[bench] warning: wrk: see above" >&2
  fi
  command -v wrk >/dev/null 2>&1 || echo "[bench] wrk not found (apt-get install wrk): the" \
    "webhook GET figure uses the slower Python fallback client and is not comparable" >&2
fi
for name in "${names[@]}"; do
  echo "== bench/bench_$name.py"
  python "bench/bench_$name.py"
done
