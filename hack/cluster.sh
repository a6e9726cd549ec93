#!/usr/bin/env bash
# The local cluster (kwok with real etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# and the local S3 server (MinIO), from the tools hack/tools.sh builds.
#
#   hack/cluster.sh up      start both (a stale cluster of the same name is removed first)
#   hack/cluster.sh down    stop both; no process is left behind
#   hack/cluster.sh status  say what runs
#
# With EXPORTJOBS_REAL_NODE=1 (root only) the cluster also gets one real node, `exportjobs-node`:
# containerd, a kubelet and kube-proxy on the bridge 10.244.0.1/24 (hack/node.sh). MinIO and the
# API server are then reached on 10.244.0.1 by the host and the pods alike; kwok's simulated node
# stays but is tainted, so pods run on the real node. One real node per machine: a second cluster
# asking for one waits until the first is down. `down` puts the host back as it was.
#
# Environment (all optional):
#   EXPORTJOBS_LOCAL_DIR     state folder (default: <repo>/.local); cluster.env is written there
#   EXPORTJOBS_CLUSTER_NAME  kwok cluster name (default: exportjobs)
#   EXPORTJOBS_APISERVER_PORT, EXPORTJOBS_S3_PORT  fixed ports (default: a free port each)
#   EXPORTJOBS_S3_BUCKETS    buckets to create (default: "exports-input exports-output datasets")
#   EXPORTJOBS_READY_TIMEOUT seconds to wait for health (default: 90)
#   EXPORTJOBS_REAL_NODE     1 = add the real node (see above)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
local_dir=${EXPORTJOBS_LOCAL_DIR:-$repo/.local}
name=${EXPORTJOBS_CLUSTER_NAME:-exportjobs}
buckets=${EXPORTJOBS_S3_BUCKETS:-exports-input exports-output datasets}
timeout=${EXPORTJOBS_READY_TIMEOUT:-90}
real_node=${EXPORTJOBS_REAL_NODE:-0}
export KWOK_WORKDIR=$local_dir/kwok
export EXPORTJOBS_LOCAL_DIR=$local_dir EXPORTJOBS_KWOK_PKI=$KWOK_WORKDIR/clusters/$name/pki
node_ip=10.244.0.1
s3_host=127.0.0.1
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
    -X "$1" "http://$s3_host:$S3_PORT$2" -o /dev/null
}

ensure_bucket() { s3_request HEAD "/$1" || s3_request PUT "/$1"; }

# retry SECONDS CMD...: a server that says ready may still refuse for a moment (MinIO answered 503
# to the first bucket create right after /minio/health/ready): try again, within a bounded wait.
retry() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" 2>/dev/null; do
    [ $SECONDS -lt "$deadline" ] || { "$@"; return; }
    sleep 0.5
  done
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

# One MinIO start; returns 1 if it exited at start (e.g. its port was taken meanwhile).
try_start_s3() {
  rm -rf "$s3_dir/data"; mkdir -p "$s3_dir/data"  # fresh each time: credentials are new too
  local console; console=$(free_port)
  MINIO_ROOT_USER=$S3_KEY MINIO_ROOT_PASSWORD=$S3_SECRET MINIO_BROWSER=off \
    MINIO_UPDATE=off MINIO_CI_CD=1 \
    nohup minio server --quiet --address "$s3_host:$S3_PORT" --console-address "127.0.0.1:$console" \
    "$s3_dir/data" >"$s3_dir/minio.log" 2>&1 &
  echo $! >"$s3_dir/minio.pid"
  local deadline=$((SECONDS + timeout))
  until curl -fsS --max-time 2 "http://$s3_host:$S3_PORT/minio/health/ready" >/dev/null 2>&1; do
    kill -0 "$(cat "$s3_dir/minio.pid")" 2>/dev/null || { rm -f "$s3_dir/minio.pid"; return 1; }
    [ $SECONDS -lt $deadline ] || die "the S3 server was not ready within ${timeout}s (log: $s3_dir/minio.log)"
    sleep 0.2
  done
}

start_s3() {
  S3_KEY=exportjobs-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  S3_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local attempt
  for attempt in 1 2 3; do
    try_start_s3 && break
    # A port picked free can be taken by another program before MinIO binds it: pick again,
    # unless it was given.
    if [ "$attempt" = 3 ] || [ -n "${EXPORTJOBS_S3_PORT:-}" ]; then
      tail -n 20 "$s3_dir/minio.log" >&2
      die "the S3 server exited at start (log: $s3_dir/minio.log)"
    fi
    log "the S3 server exited at start (port $S3_PORT taken?): trying another port"
    S3_PORT=$(free_port)
  done
  for b in $buckets; do
    retry 30 ensure_bucket "$b" || die "could not create bucket $b (log: $s3_dir/minio.log)"
  done
}

# The kwokctl configuration: the pod and node stages, kwok managing only the simulated nodes
# (annotated kwok.x-k8s.io/node=fake) and, with the real node, what it needs of the API server.
kwok_config() {
  local pki=$KWOK_WORKDIR/clusters/$name/pki
  cat "$here/kwok-stages.yaml"
  cat <<YAML
---
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  kubeApiserverCertSANs: [$node_ip, 10.0.0.1]
componentsPatches:
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false", override: true}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
# One scheduler and one controller manager: no leader election. With it, a slow API server (a
# loaded machine, an API server restart) made them miss a lease renewal and exit for good.
- name: kube-scheduler
  extraArgs:
  - {key: leader-elect, value: "false"}
- name: kube-controller-manager
  extraArgs:
  - {key: leader-elect, value: "false"}
YAML
  [ "$real_node" = 1 ] || return 0
  # Pods reach the API server through the kubernetes Service (10.0.0.1 -> the bridge address);
  # logs, exec and port-forward reach the kubelet at its InternalIP with a client certificate.
  cat <<YAML
- name: kube-apiserver
  extraArgs:
  - {key: advertise-address, value: "$node_ip"}
  - {key: service-cluster-ip-range, value: 10.0.0.0/24}
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
  - {key: kubelet-client-certificate, value: "$pki/admin.crt"}
  - {key: kubelet-client-key, value: "$pki/admin.key"}
YAML
}

cluster_healthy() {
  kubectl get --raw /readyz >/dev/null 2>&1 \
    && kubectl wait --for=condition=Ready node/kwok-node-0 --timeout=2s >/dev/null 2>&1 \
    && kubectl -n default get serviceaccount default >/dev/null 2>&1
}

try_create_cluster() {  # try_create_cluster PORT
  local port=$1 dirs kube_bin etcd_bin kwok_bin
  mapfile -t dirs < <("$here/tools.sh" path)
  kube_bin=${dirs[0]} etcd_bin=${dirs[1]} kwok_bin=${dirs[2]}
  rm -f "$kubeconfig"
  kwokctl create cluster --name "$name" --runtime binary \
      --kubeconfig "$kubeconfig" \
      --kube-apiserver-port "$port" \
      --etcd-binary "$etcd_bin/etcd" \
      --kube-apiserver-binary "$kube_bin/kube-apiserver" \
      --kube-controller-manager-binary "$kube_bin/kube-controller-manager" \
      --kube-scheduler-binary "$kube_bin/kube-scheduler" \
      --kwok-controller-binary "$kwok_bin/kwok" \
      --disable-qps-limits \
      --config "$local_dir/kwok-config.yaml" \
      --timeout "${timeout}s" --wait "${timeout}s" >"$local_dir/kwokctl.log" 2>&1
}

start_cluster() {
  local port=$API_PORT attempt
  kwok_config >"$local_dir/kwok-config.yaml"
  for attempt in 1 2; do
    try_create_cluster "$port" && break
    if [ "$attempt" = 2 ] || [ -n "${EXPORTJOBS_APISERVER_PORT:-}" ]; then
      tail -n 30 "$local_dir/kwokctl.log" >&2
      die "kwokctl could not create the cluster (log: $local_dir/kwokctl.log; component logs: kwokctl --name $name logs kube-apiserver)"
    fi
    # A port picked free may have been taken meanwhile (other clusters start on this machine).
    log "kwokctl could not create the cluster (log: $local_dir/kwokctl.log): once more on another port"
    stop_cluster
    port=$(free_port)
  done
  export KUBECONFIG=$kubeconfig
  # With a real node, pods must not land on the simulated one: it takes only what tolerates it.
  local spec="{}"
  [ "$real_node" = 1 ] && spec='{taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]}'
  cat >"$local_dir/kwok-node.yaml" <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
spec: $spec
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "32", memory: 256Gi, pods: "1000"}
YAML
  retry "$timeout" kubectl apply -f "$local_dir/kwok-node.yaml" >/dev/null \
    || die "could not create the simulated node (kwokctl --name $name logs kube-apiserver)"
  retry "$timeout" cluster_healthy \
    || die "the cluster was not healthy within ${timeout}s (kwokctl --name $name logs kube-apiserver)"
}

write_env() {
  local env=$local_dir/cluster.env
  umask 077
  cat >"$env" <<ENV
# Written by hack/cluster.sh up: \`source $env\` to talk to the local cluster and S3 server.
export KUBECONFIG=$kubeconfig
export AWS_ENDPOINT_URL=http://$s3_host:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET
export AWS_DEFAULT_REGION=us-east-1
export EXPORTJOBS_CLUSTER_NAME=$name
export EXPORTJOBS_S3_BUCKETS="$buckets"
export EXPORTJOBS_REAL_NODE=$real_node
export PATH=$(IFS=:; "$here/tools.sh" path | tr '\n' ':')\$PATH
ENV
}

stop_all() {
  # The node first (its pods go while the API server still answers), then the control plane.
  if [ -d "$local_dir/node" ]; then "$here/node.sh" down || true; fi
  stop_cluster
  stop_s3
}

main() {
case ${1:-} in
  up)
    started=$SECONDS
    "$here/tools.sh" all
    tool_path
    command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
    mkdir -p "$local_dir"
    if [ -d "$KWOK_WORKDIR/clusters/$name" ] || [ -f "$s3_dir/minio.pid" ] || [ -f "$local_dir/node/holder.pid" ]; then
      log "removing a stale cluster '$name' left by an earlier run"
      stop_all
    fi
    t0=$SECONDS
    # Ports first, so a busy one fails before anything starts.
    API_PORT=$(pick_port EXPORTJOBS_APISERVER_PORT "kube-apiserver")
    S3_PORT=$(pick_port EXPORTJOBS_S3_PORT "S3 server")
    trap 'stop_all' EXIT
    if [ "$real_node" = 1 ]; then
      # The node's lock and bridge first: MinIO and the API server are reached on the bridge.
      "$here/node.sh" lock
      s3_host=$node_ip
    fi
    start_s3
    start_cluster
    if [ "$real_node" = 1 ]; then
      "$here/node.sh" up
    fi
    write_env
    trap - EXIT
    log "ready in $((SECONDS - t0))s (total $((SECONDS - started))s): source $local_dir/cluster.env"
    ;;
  down)
    tool_path
    stop_all
    rm -f "$local_dir/cluster.env"
    log "stopped"
    ;;
  status)
    tool_path
    kwokctl get clusters 2>/dev/null | grep -qx "$name" && log "cluster $name: up" || log "cluster $name: down"
    if [ -f "$s3_dir/minio.pid" ] && kill -0 "$(cat "$s3_dir/minio.pid")" 2>/dev/null; then log "S3: up"; else log "S3: down"; fi
    if [ -f "$local_dir/node/holder.pid" ] && kill -0 "$(cat "$local_dir/node/holder.pid")" 2>/dev/null; then log "real node: up"; else log "real node: none"; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
}

# The tests source this file for its functions (tests/unit/hack); run, it does the work.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
