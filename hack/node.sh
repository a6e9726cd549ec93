#!/usr/bin/env bash
# The local cluster's real node: containerd + runc + CNI bridge, a kubelet and kube-proxy built from
# the pinned Kubernetes module (hack/tools.sh node), registered with the kwok control plane.
# hack/cluster.sh runs it when EXPORTJOBS_REAL_NODE=1; it is not meant to be called by hand.
#
#   hack/node.sh lock      take the machine's node lock (waits, bounded), make the bridge
#   hack/node.sh up        containerd, kubelet, kube-proxy; wait for the node to be Ready
#   hack/node.sh load IMG  import docker images into the node's containerd (skips unchanged ones)
#   hack/node.sh down      stop everything and put the host back as `lock` found it
#   hack/node.sh host-state  print what the node may change on the host (tests compare it)
#
# Only one real node fits on a machine (bridge, port 10250, cgroups): `lock` holds a flock from a
# small holder process until `down`, so a second cluster asking for a node waits for the first.
#
# Network (closed): the pods live on the bridge exportjobs0 (10.244.0.0/24, the host is
# 10.244.0.1). A pod's only routes are its subnet and the Service range (10.0.0.0/24) through the
# host; no default route, no masquerade, no resolver (kubelet resolvConf ""). The host forwards
# nothing into or out of the bridge (EXPORTJOBS-NODE chain at the top of FORWARD); the API server
# and MinIO are reached on 10.244.0.1. Everything the node changes on the host is recorded by
# `lock` and undone by `down`: sysctls, iptables chains, mounts, cgroups, the bridge, directories.
#
# Environment: EXPORTJOBS_LOCAL_DIR (the cluster's state folder, default <repo>/.local), KUBECONFIG (admin),
# EXPORTJOBS_KWOK_PKI (the cluster's CA and admin certificate folder), EXPORTJOBS_NODE_LOCK_TIMEOUT
# (seconds to wait for another cluster's node to go, default 1800), EXPORTJOBS_READY_TIMEOUT.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
local_dir=${EXPORTJOBS_LOCAL_DIR:-$(cd "$here/.." && pwd)/.local}
node_dir=$local_dir/node                 # this cluster's logs, configs, certificates
cache=${EXPORTJOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/exportjobs}
timeout=${EXPORTJOBS_READY_TIMEOUT:-90}
lock_timeout=${EXPORTJOBS_NODE_LOCK_TIMEOUT:-1800}
owner=""                                 # the cluster that held the node before us

NODE_NAME=exportjobs-node
BRIDGE=exportjobs0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
FWD_CHAIN=EXPORTJOBS-NODE
RUN=/run/exportjobs-node                 # sockets, containerd state, CNI config and IPAM
VAR=/var/lib/exportjobs-node             # kubelet root and pod logs
CTR_ROOT=$cache/containerd               # containerd content and snapshots: an image cache, kept
LOCK=/run/lock/exportjobs-node.lock
SOCK=$RUN/containerd.sock
PAUSE_IMAGE=localhost/exportjobs-pause:1
# Sysctls the node may change (kubelet: the kernel defaults it wants; us: ip_forward).
SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet
  net.bridge.bridge-nf-call-iptables"

log() { printf '[node] %s\n' "$*" >&2; }
die() { printf '[node] error: %s\n' "$*" >&2; exit 1; }

# retry SECONDS CMD...: run CMD until it succeeds, at most SECONDS.
retry() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

node_bin() { "$here/tools.sh" path | tail -n 1; }

# Debian's runtime for the node, installed when missing and held against the known-good versions
# in hack/debian-packages.txt (hack/debian.sh).
# shellcheck source=debian.sh
source "$here/debian.sh"
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack openssl)
ensure_packages() {
  command -v apt-get >/dev/null || { command -v containerd >/dev/null && [ -x /usr/lib/cni/bridge ]; } \
    || die "install containerd, runc, the CNI plugins, iptables, conntrack and openssl (this script knows only apt-get)"
  command -v apt-get >/dev/null || return 0
  debian_install host "${NODE_PACKAGES[@]}" || die "the node's packages: see above"
}

# ---------------------------------------------------------------------------------------------
# Host state: what `lock` records and `down` restores; `host-state` prints it for the tests.

sysctl_path() { echo "/proc/sys/${1//.//}"; }

host_state() {
  local s t
  for s in $SYSCTLS; do
    printf 'sysctl %s=%s\n' "$s" "$(cat "$(sysctl_path "$s")" 2>/dev/null || echo absent)"
  done
  for t in filter nat mangle raw; do
    for cmd in iptables ip6tables; do
      command -v "$cmd-save" >/dev/null || continue
      "$cmd-save" -t "$t" 2>/dev/null | grep -E '^:(KUBE-|CNI-|EXPORTJOBS-)|(KUBE-|CNI-|EXPORTJOBS-|exportjobs0|10\.244\.)' \
        | sed -E 's/\[[0-9]+:[0-9]+\]//' | sed "s/^/$cmd $t /" || true
    done
  done
  ip -o link show "$BRIDGE" 2>/dev/null | awk '{print "link", $2}' || true
  ip -o route show | grep -E "$BRIDGE|10\.244\.|10\.0\.0\." | sed 's/^/route /' || true
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($VAR|$RUN|$CTR_ROOT|/var/run/netns)" \
    | sed 's/^/mount /' || true
  for t in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$t" ] && echo "cgroup $t"
  done
  # (/run/containerd is left out: every containerd shim on the machine, Docker's too, keeps its
  # socket there; ours are gone with their shims.)
  for t in "$VAR" "$RUN" /var/lib/cni /var/run/netns; do
    [ -e "$t" ] && echo "path $t"
  done
  pgrep -x containerd >/dev/null 2>&1 && for p in $(pgrep -x containerd); do
    grep -qa -- "$SOCK\|$RUN" "/proc/$p/cmdline" 2>/dev/null && echo "process containerd (ours)"
  done
  for t in kubelet kube-proxy; do pgrep -x "$t" >/dev/null 2>&1 && echo "process $t"; done
  true
}

# ---------------------------------------------------------------------------------------------
# lock: the machine-wide node lock, the recorded host state, the bridge and its routes.

lock_held_by_us() {
  [ -f "$node_dir/holder.pid" ] && kill -0 "$(cat "$node_dir/holder.pid")" 2>/dev/null
}

take_lock() {
  mkdir -p "$node_dir" /run/lock
  lock_held_by_us && return 0
  rm -f "$node_dir/holder.pid" "$node_dir/locked"
  owner=$(cat "$LOCK.owner" 2>/dev/null || true)
  # The holder keeps the lock's file descriptor until `down` kills it (or the machine restarts).
  (
    exec 9>"$LOCK"
    if ! flock -n 9; then
      printf '[node] waiting for the real node held by %s (at most %ss)\n' "${owner:-another cluster}" "$lock_timeout" >&2
      flock -w "$lock_timeout" 9 || exit 75
    fi
    echo "$local_dir" >"$LOCK.owner"
    touch "$node_dir/locked"
    exec setsid sleep infinity
  ) </dev/null >/dev/null 2>"$node_dir/lock.log" &
  echo $! >"$node_dir/holder.pid"
  local holder; holder=$!
  while [ ! -f "$node_dir/locked" ]; do
    if ! kill -0 "$holder" 2>/dev/null; then
      cat "$node_dir/lock.log" >&2
      rm -f "$node_dir/holder.pid"
      die "the real node is still held by ${owner:-another cluster} after ${lock_timeout}s: stop it (EXPORTJOBS_LOCAL_DIR=<its dir> hack/cluster.sh down)"
    fi
    sleep 0.2
  done
}

release_lock() {
  if [ -f "$node_dir/holder.pid" ]; then
    [ "$(cat "$LOCK.owner" 2>/dev/null)" = "$local_dir" ] && rm -f "$LOCK.owner"
    kill "$(cat "$node_dir/holder.pid")" 2>/dev/null || true
    rm -f "$node_dir/holder.pid" "$node_dir/locked"
  fi
}

net_up() {
  # A node whose owner died without `down` (a killed run) left its state: put the host back first.
  if ip link show "$BRIDGE" >/dev/null 2>&1 || [ -d "$RUN" ]; then
    log "a real node left by an earlier run (${owner:-unknown}): cleaning it first"
    # Restore what that run recorded, if its folder is still there.
    local f
    for f in sysctls-before paths-created; do
      [ -n "$owner" ] && [ "$owner" != "$local_dir" ] && [ -f "$owner/node/$f" ] && cp "$owner/node/$f" "$node_dir/$f"
    done
    teardown_node
    rm -f "$node_dir/sysctls-before" "$node_dir/paths-created" "$node_dir/host-before"
  fi
  [ -f "$node_dir/host-before" ] || host_state >"$node_dir/host-before"
  for s in $SYSCTLS; do
    printf '%s=%s\n' "$s" "$(cat "$(sysctl_path "$s")" 2>/dev/null || echo absent)"
  done >"$node_dir/sysctls-before"
  for t in /var/lib/cni /run/containerd /var/run/netns; do [ -e "$t" ] || echo "$t"; done >"$node_dir/paths-created"
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # The Service range goes to the bridge too, so the host never sends it out of the machine.
  ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
  # Pods talk to each other and to the host; nothing is forwarded to or from anywhere else.
  iptables -N "$FWD_CHAIN"
  iptables -A "$FWD_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A "$FWD_CHAIN" -i "$BRIDGE" -j DROP
  iptables -A "$FWD_CHAIN" -o "$BRIDGE" -j DROP
  iptables -I FORWARD 1 -j "$FWD_CHAIN"
  # Service traffic between pods crosses the host (DNAT), and replies cross the bridge.
  echo 1 >/proc/sys/net/ipv4/ip_forward
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  true
}

# ---------------------------------------------------------------------------------------------
# up: containerd, pause image, kubelet, kube-proxy.

write_containerd_config() {
  mkdir -p "$RUN/cni/net.d" "$RUN/cni/ipam" "$CTR_ROOT"
  cat >"$RUN/cni/net.d/10-exportjobs.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "exportjobs",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.0.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR", "gw": "$NODE_IP"}]
      }
    },
    {"type": "loopback"}
  ]
}
JSON
  cat >"$RUN/containerd.toml" <<TOML
# Written by hack/node.sh: the real node's containerd, apart from any other on the machine.
version = 2
root = "$CTR_ROOT"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # root here lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 would make runc fail.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
TOML
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

start_containerd() {
  write_containerd_config
  setsid containerd --config "$RUN/containerd.toml" >"$node_dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$node_dir/containerd.pid"
  retry "$timeout" ctr_ version >/dev/null 2>&1 || {
    tail -n 20 "$node_dir/containerd.log" >&2
    die "containerd did not answer within ${timeout}s (log: $node_dir/containerd.log)"
  }
  # containerd answers before its CRI service is initialized; a kubelet started then exits at
  # once ("validate CRI v1 runtime API ... server is not initialized yet": the node was never
  # Ready, seen on a loaded machine). Wait for the CRI service itself.
  retry "$timeout" crictl_ info >/dev/null 2>&1 || {
    tail -n 20 "$node_dir/containerd.log" >&2
    die "containerd's CRI service was not ready within ${timeout}s (log: $node_dir/containerd.log)"
  }
}

# The sandbox ("pause") image, made here: no registry is reachable. A static Go program that
# sleeps until a signal, in a one-layer OCI image, imported once into the image cache.
ensure_pause_image() {
  ctr_ images ls -q 2>/dev/null | grep -x "$PAUSE_IMAGE" >/dev/null && return 0
  local work; work=$(mktemp -d "$node_dir/pause-XXXXXX")
  mkdir -p "$work/src"
  cat >"$work/src/main.go" <<'GO'
// pause: the process that holds a pod's namespaces; it sleeps until SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
GO
  printf 'module exportjobs.dev/pause\ngo 1.22\n' >"$work/src/go.mod"
  (cd "$work/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$work/pause" .) \
    || die "could not build the pause binary"
  python3 - "$work" "$PAUSE_IMAGE" <<'PY'
import hashlib, io, json, sys, tarfile
work, name = sys.argv[1], sys.argv[2]
blobs = {}
def blob(data: bytes, media: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as tar:
    info = tarfile.TarInfo("pause"); data = open(f"{work}/pause", "rb").read()
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))
layer_bytes = layer.getvalue()
config = {"architecture": "amd64", "os": "linux",
          "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [blob(layer_bytes, "application/vnd.oci.image.layer.v1.tar")]}
m = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
m["annotations"] = {"io.containerd.image.name": name}
index = {"schemaVersion": 2, "manifests": [m]}
with tarfile.open(f"{work}/pause.tar", "w") as out:
    def add(path: str, data: bytes) -> None:
        info = tarfile.TarInfo(path); info.size = len(data); out.addfile(info, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    add("index.json", json.dumps(index).encode())
    for digest, data in blobs.items():
        add("blobs/sha256/" + digest.split(":")[1], data)
PY
  ctr_ images import "$work/pause.tar" >/dev/null || die "could not import the pause image"
  rm -rf "$work"
}

# Client certificates for the kubelet and kube-proxy, signed by the cluster's CA.
make_cert() {  # make_cert NAME CN ORG
  local pki=${EXPORTJOBS_KWOK_PKI:?EXPORTJOBS_KWOK_PKI is required}
  local subj="/CN=$2"; [ -n "$3" ] && subj="/O=$3/CN=$2"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$node_dir/$1.key" -subj "$subj" \
    -out "$node_dir/$1.csr" 2>/dev/null
  openssl x509 -req -in "$node_dir/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -out "$node_dir/$1.crt" -extfile <(printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n') 2>/dev/null
  rm -f "$node_dir/$1.csr"
  local server; server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  # The node's components reach the API server on the bridge address, like the pods do.
  server=${server/127.0.0.1/$NODE_IP}
  cat >"$node_dir/$1.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}}]
users: [{name: $1, user: {client-certificate: "$node_dir/$1.crt", client-key: "$node_dir/$1.key"}}]
contexts: [{name: $1, context: {cluster: local, user: $1}}]
current-context: $1
YAML
}

start_kubelet() {
  local bin=$1 pki=${EXPORTJOBS_KWOK_PKI}
  make_cert kubelet "system:node:$NODE_NAME" system:nodes
  mkdir -p "$VAR/kubelet" "$VAR/pod-logs"
  cat >"$RUN/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
podLogsDir: $VAR/pod-logs
resolvConf: ""
clusterDomain: cluster.local
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$pki/ca.crt"}
authorization: {mode: Webhook}
# The imported images are not pulled again: never collect them; never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 110
YAML
  setsid "$bin/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$node_dir/kubelet.kubeconfig" \
    --root-dir "$VAR/kubelet" --cert-dir "$node_dir/kubelet-pki" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --node-labels "exportjobs.dev/real-node=true" --v=1 \
    >"$node_dir/kubelet.log" 2>&1 </dev/null &
  echo $! >"$node_dir/kubelet.pid"
}

start_kube_proxy() {
  local bin=$1
  make_cert kube-proxy system:kube-proxy ""
  cat >"$RUN/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: "$node_dir/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: $NODE_IP:10249
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack and route_localnet settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 0s}
YAML
  setsid "$bin/kube-proxy" --config "$RUN/kube-proxy.yaml" --v=1 \
    >"$node_dir/kube-proxy.log" 2>&1 </dev/null &
  echo $! >"$node_dir/kube-proxy.pid"
}

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# The `kubernetes` Service is programmed (kube-proxy synced at least once).
proxy_synced() {
  iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep 'default/kubernetes:https' >/dev/null
}

node_up() {
  lock_held_by_us || die "node.sh up needs the node lock: run node.sh lock first"
  local bin started=$SECONDS
  bin=$(node_bin)
  [ -x "$bin/kubelet" ] || die "no kubelet in $bin (hack/tools.sh node)"
  start_containerd
  ensure_pause_image
  start_kubelet "$bin"
  start_kube_proxy "$bin"
  retry "$timeout" node_ready || {
    tail -n 30 "$node_dir/kubelet.log" >&2
    die "node $NODE_NAME was not Ready within ${timeout}s (log: $node_dir/kubelet.log)"
  }
  retry "$timeout" proxy_synced || {
    tail -n 30 "$node_dir/kube-proxy.log" >&2
    die "kube-proxy did not program the Services within ${timeout}s (log: $node_dir/kube-proxy.log)"
  }
  log "node $NODE_NAME Ready in $((SECONDS - started))s"
}

# restart kubelet|containerd: stop one of the node's services and start it again, as a node's
# service restarts (tests/e2e/test_node_faults.py). Running containers stay: containerd's shims
# hold them while containerd is away, and the kubelet finds its pods again when it starts.
restart_component() {
  lock_held_by_us || die "node.sh restart needs this cluster's node (EXPORTJOBS_LOCAL_DIR)"
  case ${1:-} in
    kubelet) stop_pidfile "$node_dir/kubelet.pid"; start_kubelet "$(node_bin)" ;;
    containerd) stop_pidfile "$node_dir/containerd.pid"; start_containerd ;;
    *) die "restart kubelet|containerd" ;;
  esac
  retry "$timeout" node_ready || die "node $NODE_NAME not Ready after restarting $1"
  log "$1 restarted"
}

# load IMAGE...: docker images into the node's containerd, skipped when the same image is there.
load_images() {
  local image want have
  for image in "$@"; do
    want=$(docker image inspect -f '{{.Id}}' "$image") || die "no docker image $image"
    have=$(crictl_ images -q --no-trunc "$image" 2>/dev/null || true)
    [ "$have" = "$want" ] && continue
    log "importing $image into the node's containerd"
    docker save "$image" | ctr_ images import - >/dev/null || die "could not import $image"
  done
}

crictl_() { "$(node_bin)/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@"; }

# ---------------------------------------------------------------------------------------------
# down: everything `lock` and `up` did, in reverse.

stop_pidfile() {  # stop_pidfile FILE [GRACE_SECONDS]
  local file=$1 grace=${2:-10} pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

cgroup_cleanup() {
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$dir" ] || continue
    # Any process still inside (a container the runtime lost) is killed first.
    find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    # A freshly killed process may hold its cgroup a moment longer.
    retry 10 bash -c "find '$dir' -depth -type d -exec rmdir {} + 2>/dev/null; [ ! -d '$dir' ]" || log "could not remove $dir"
  done
}

iptables_cleanup() {
  local cmd t chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    while "$cmd" -D FORWARD -j "$FWD_CHAIN" 2>/dev/null; do :; done
    for t in filter nat mangle raw; do
      # Rules in built-in chains that jump to ours, then our chains themselves.
      { "$cmd-save" -t "$t" 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE-|CNI-|EXPORTJOBS-)' \
        | grep -vE '^-A (KUBE-|CNI-|EXPORTJOBS-)' || true; } | sed 's/^-A /-D /' | while read -r rule; do
          eval "$cmd -t $t $rule" 2>/dev/null || true
        done
      local chains
      chains=$("$cmd-save" -t "$t" 2>/dev/null | grep -oE '^:(KUBE-|CNI-|EXPORTJOBS-)[^ ]+' | tr -d : || true)
      for chain in $chains; do "$cmd" -t "$t" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$cmd" -t "$t" -X "$chain" 2>/dev/null || true; done
    done
  done
}

unmount_under() {  # unmount every mount point below a path, deepest first
  local path
  for path in "$@"; do
    { awk '{print $5}' /proc/self/mountinfo | grep -E "^$path(/|$)" || true; } | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
}

# stop_ours NAME: a NAME process left by a killed run, recognised by our paths in its command line.
stop_ours() {
  local p
  for p in $(pgrep -x "$1" 2>/dev/null); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -F -e "$RUN/" -e "$VAR/" >/dev/null; then
      kill -9 "$p" 2>/dev/null || true
    fi
  done
}

teardown_node() {
  local bin; bin=$(node_bin 2>/dev/null || true)
  # kube-proxy and the kubelet stop together (each takes a second or two); then the pods go.
  [ -f "$node_dir/kube-proxy.pid" ] && kill "$(cat "$node_dir/kube-proxy.pid")" 2>/dev/null || true
  stop_pidfile "$node_dir/kubelet.pid" 15
  stop_ours kubelet
  if [ -S "$SOCK" ] && [ -x "$bin/crictl" ]; then
    timeout 60 "$bin/crictl" --runtime-endpoint "unix://$SOCK" rmp -fa >/dev/null 2>&1 || true
  fi
  stop_pidfile "$node_dir/kube-proxy.pid" 10
  stop_ours kube-proxy
  [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_pidfile "$node_dir/containerd.pid" 15
  stop_ours containerd
  # Shims of our containerd (their -address names our socket) outlive it: end them.
  for p in $(pgrep -f -- "-address $SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  cgroup_cleanup
  unmount_under "$VAR" "$RUN" "$CTR_ROOT"
  rm -rf "$VAR" "$RUN"
  iptables_cleanup
  ip link del "$BRIDGE" 2>/dev/null || true
  # Directories the runtime made that were not there before.
  if [ -f "$node_dir/paths-created" ]; then
    while read -r p; do
      [ -n "$p" ] || continue
      case $p in
        /run/containerd) rmdir "$p/s" "$p/runc" "$p" 2>/dev/null || true ;;
        *) unmount_under "$p"; rm -rf "$p" ;;
      esac
    done <"$node_dir/paths-created"
  fi
  if [ -f "$node_dir/sysctls-before" ]; then
    while IFS='=' read -r s v; do
      [ "$v" = absent ] && continue
      [ "$(cat "$(sysctl_path "$s")" 2>/dev/null)" = "$v" ] || echo "$v" >"$(sysctl_path "$s")" 2>/dev/null || log "could not restore $s=$v"
    done <"$node_dir/sysctls-before"
  fi
}

node_down() {
  # Only the cluster holding the node tears it down: another cluster's node is left alone.
  if ! lock_held_by_us; then
    rm -f "$node_dir/holder.pid" "$node_dir/locked"
    return 0
  fi
  local started=$SECONDS
  teardown_node
  rm -f "$node_dir/host-before" "$node_dir/sysctls-before" "$node_dir/paths-created"
  release_lock
  log "node stopped, host restored in $((SECONDS - started))s"
}

main() {
case ${1:-} in
  lock)
    [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, the kubelet, iptables)"
    mkdir -p "$node_dir"
    ensure_packages
    take_lock
    net_up ;;
  up) node_up ;;
  load) shift; load_images "$@" ;;
  restart) shift; restart_component "$@" ;;
  down) mkdir -p "$node_dir"; node_down ;;
  host-state) host_state ;;
  *) echo "usage: $0 lock|up|load IMAGE...|restart (kubelet|containerd)|down|host-state" >&2; exit 2 ;;
esac
}

# The tests source this file for its functions (tests/unit/hack); run, it does the work.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
