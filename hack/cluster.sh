#!/usr/bin/env bash
# The local cluster (kwok with real etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# and the local S3 server (MinIO), from the tools hack/tools.sh builds.
#
#   hack/cluster.sh up      start both (a stale cluster of the same name is removed first)
#   hack/cluster.sh down    stop both; no process is left behind
#   hack/cluster.sh status  say what runs
#
# Environment (all optional):
#   EXPORTJOBS_LOCAL_DIR     state folder (default: <repo>/.local); cluster.env is written there
#   EXPORTJOBS_CLUSTER_NAME  kwok cluster name (default: exportjobs)
#   EXPORTJOBS_APISERVER_PORT, EXPORTJOBS_S3_PORT  fixed ports (default: a free port each)
#   EXPORTJOBS_S3_BUCKETS    buckets to create (default: "exports-input exports-output datasets")
#   EXPORTJOBS_READY_TIMEOUT seconds to wait for health (default: 90)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
local_dir=${EXPORTJOBS_LOCAL_DIR:-$repo/.local}
name=${EXPORTJOBS_CLUSTER_NAME:-exportjobs}
buckets=${EXPORTJOBS_S3_BUCKETS:-exports-input exports-output datasets}
timeout=${EXPORTJOBS_READY_TIMEOUT:-90}
export KWOK_WORKDIR=$local_dir/kwok
kubeconfig=$local_dir/kubeconfig
s3_dir=$local_dir/s3
log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

tool_path() {
  local p
  p=$("$here/tools.sh" path | tr '\n' ':')
  export PATH="$p$PATH"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

pick_port() {  # pick_port VAR_NAME WHAT
  local want=${!1:-}
  if [ -n "$want" ]; then
    if port_in_use "$want"; then
      die "port $want for the $2 ($1) is already in use: stop what listens there (ss -ltnp 'sport = :$want') or choose another port"
    fi
    echo "$want"
  else
    free_port
  fi
}

s3_request() {  # s3_request METHOD PATH
  curl -fsS --max-time 5 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" \
    -X "$1" "http://127.0.0.1:$S3_PORT$2" -o /dev/null
}

stop_s3() {
  local pidfile=$s3_dir/minio.pid
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop_cluster() {
  if [ -d "$KWOK_WORKDIR/clusters/$name" ]; then
    kwokctl delete cluster --name "$name" --kubeconfig "$kubeconfig" >/dev/null 2>&1 || true
  fi
  # A killed run can leave processes kwokctl no longer knows: end any that run from our workdir.
  local pids
  pids=$(pgrep -f -- "$KWOK_WORKDIR/clusters/$name/" || true)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    sleep 1
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
  fi
  rm -rf "${KWOK_WORKDIR:?}/clusters/$name"
}

start_s3() {
  S3_KEY=exportjobs-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  S3_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  rm -rf "$s3_dir/data"; mkdir -p "$s3_dir/data"  # fresh each time: credentials are new too
  local console; console=$(free_port)
  MINIO_ROOT_USER=$S3_KEY MINIO_ROOT_PASSWORD=$S3_SECRET MINIO_BROWSER=off \
    MINIO_UPDATE=off MINIO_CI_CD=1 \
    nohup minio server --quiet --address "127.0.0.1:$S3_PORT" --console-address "127.0.0.1:$console" \
    "$s3_dir/data" >"$s3_dir/minio.log" 2>&1 &
  echo $! >"$s3_dir/minio.pid"
  local deadline=$((SECONDS + timeout))
  until curl -fsS --max-time 2 "http://127.0.0.1:$S3_PORT/minio/health/ready" >/dev/null 2>&1; do
    kill -0 "$(cat "$s3_dir/minio.pid")" 2>/dev/null || { tail -n 20 "$s3_dir/minio.log" >&2; die "the S3 server exited at start (log: $s3_dir/minio.log)"; }
    [ $SECONDS -lt $deadline ] || die "the S3 server was not ready within ${timeout}s (log: $s3_dir/minio.log)"
    sleep 0.2
  done
  for b in $buckets; do s3_request PUT "/$b" || die "could not create bucket $b"; done
}

start_cluster() {
  local port=$API_PORT
  local dirs kube_bin etcd_bin kwok_bin
  mapfile -t dirs < <("$here/tools.sh" path)
  kube_bin=${dirs[0]} etcd_bin=${dirs[1]} kwok_bin=${dirs[2]}
  rm -f "$kubeconfig"
  if ! kwokctl create cluster --name "$name" --runtime binary \
      --kubeconfig "$kubeconfig" \
      --kube-apiserver-port "$port" \
      --etcd-binary "$etcd_bin/etcd" \
      --kube-apiserver-binary "$kube_bin/kube-apiserver" \
      --kube-controller-manager-binary "$kube_bin/kube-controller-manager" \
      --kube-scheduler-binary "$kube_bin/kube-scheduler" \
      --kwok-controller-binary "$kwok_bin/kwok" \
      --disable-qps-limits \
      --config "$here/kwok-stages.yaml" \
      --timeout "${timeout}s" --wait "${timeout}s" >"$local_dir/kwokctl.log" 2>&1; then
    tail -n 30 "$local_dir/kwokctl.log" >&2
    die "kwokctl could not create the cluster (log: $local_dir/kwokctl.log; component logs: kwokctl --name $name logs kube-apiserver)"
  fi
  export KUBECONFIG=$kubeconfig
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "32", memory: 256Gi, pods: "1000"}
YAML
  local deadline=$((SECONDS + timeout))
  until kubectl get --raw /readyz >/dev/null 2>&1 \
      && kubectl wait --for=condition=Ready node/kwok-node-0 --timeout=2s >/dev/null 2>&1 \
      && kubectl -n default get serviceaccount default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "the cluster was not healthy within ${timeout}s (kwokctl --name $name logs kube-apiserver)"
    sleep 0.3
  done
}

write_env() {
  local env=$local_dir/cluster.env
  umask 077
  cat >"$env" <<ENV
# Written by hack/cluster.sh up: \`source $env\` to talk to the local cluster and S3 server.
export KUBECONFIG=$kubeconfig
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET
export AWS_DEFAULT_REGION=us-east-1
export EXPORTJOBS_CLUSTER_NAME=$name
export EXPORTJOBS_S3_BUCKETS="$buckets"
export PATH=$(IFS=:; "$here/tools.sh" path | tr '\n' ':')\$PATH
ENV
}

case ${1:-} in
  up)
    started=$SECONDS
    "$here/tools.sh" all
    tool_path
    command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
    mkdir -p "$local_dir"
    if [ -d "$KWOK_WORKDIR/clusters/$name" ] || [ -f "$s3_dir/minio.pid" ]; then
      log "removing a stale cluster '$name' left by an earlier run"
      stop_cluster; stop_s3
    fi
    t0=$SECONDS
    # Ports first, so a busy one fails before anything starts.
    API_PORT=$(pick_port EXPORTJOBS_APISERVER_PORT "kube-apiserver")
    S3_PORT=$(pick_port EXPORTJOBS_S3_PORT "S3 server")
    trap 'stop_cluster; stop_s3' EXIT
    start_s3
    start_cluster
    write_env
    trap - EXIT
    log "ready in $((SECONDS - t0))s (total $((SECONDS - started))s): source $local_dir/cluster.env"
    ;;
  down)
    tool_path
    stop_cluster
    stop_s3
    rm -f "$local_dir/cluster.env"
    log "stopped"
    ;;
  status)
    tool_path
    kwokctl get clusters 2>/dev/null | grep -qx "$name" && log "cluster $name: up" || log "cluster $name: down"
    if [ -f "$s3_dir/minio.pid" ] && kill -0 "$(cat "$s3_dir/minio.pid")" 2>/dev/null; then log "S3: up"; else log "S3: down"; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
