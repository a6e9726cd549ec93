#!/usr/bin/env bash
# Build the local-cluster tools from pinned Go modules into a versioned cache, or reuse it.
#
#   hack/tools.sh [all|kube|node|etcd|kwok|helm|minio|promql|toxiproxy|s3admin|path]...
#
# Each tool lands in $EXPORTJOBS_TOOLS_DIR/<tool>-<version>/ (default ~/.cache/exportjobs/tools).
# A build runs in a temporary folder under a per-tool flock and is renamed into place only when it
# succeeded, so two runs at once wait for each other and a killed run leaves nothing half-built.
# `hack/tools.sh path` prints the bin folders, one per line, for PATH.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${EXPORTJOBS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/exportjobs/tools}
mkdir -p "$cache"
export GOFLAGS="-buildvcs=false -mod=mod"
export GOTOOLCHAIN=local
log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 || die "no Go toolchain on PATH: install Go >= 1.24 (https://go.dev/dl) or put prebuilt binaries in $cache"
}

# build TOOL VERSION FUNC: run FUNC in a scratch dir with $out as the bin folder, then publish.
build() {
  local tool=$1 version=$2 fn=$3 dest="$cache/$1-$2"
  [ -f "$dest/.complete" ] && return 0
  need_go
  exec {lock}>"$cache/.$tool-$version.lock"
  flock "$lock"
  if [ -f "$dest/.complete" ]; then exec {lock}>&-; return 0; fi
  rm -rf "$cache/.build-$tool-"*  # scratch left by a killed run (we hold the lock)
  local work; work=$(mktemp -d "$cache/.build-$tool-XXXXXX")
  local started=$SECONDS
  log "building $tool $version (cold build; later runs reuse $dest)"
  if ! (cd "$work" && out="$work/bin" && mkdir -p "$out" && "$fn" "$out" "$version") >"$work.log" 2>&1; then
    tail -n 30 "$work.log" >&2
    rm -rf "$work"
    exec {lock}>&-
    die "building $tool $version failed (full log: $work.log)"
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  mv "$work/bin" "$dest/bin"
  rm -rf "$work" "$work.log"
  echo "$((SECONDS - started))" >"$dest/.build-seconds"
  touch "$dest/.complete"
  exec {lock}>&-
  log "built $tool $version in $((SECONDS - started))s"
}

build_kube() {
  local out=$1 v=$2 minor staging
  minor=$(echo "$v" | cut -d. -f2)
  staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
    kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller"
  {
    echo "module exportjobs.dev/kube-tools"
    echo "go 1.24.0"
    echo "godebug default=go1.24"
    echo "require k8s.io/kubernetes $v"
    for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m v0.$minor.${v##*.}"; done
  } >go.mod
  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in $pkg $cgo; do
    ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=$date"
  done
  go mod download k8s.io/kubernetes
  go get "k8s.io/kubernetes@$v"
  go build -trimpath -ldflags "$ld" -o "$out/" "${KUBE_TARGETS[@]}"
}

KUBE_TARGETS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)

# The real node's binaries: kubelet and kube-proxy from the same wrapper module (the Go build
# cache shared with the control plane makes this mostly incremental), and crictl, which Debian
# bookworm does not package.
build_node() {
  local out=$1 v=$2
  KUBE_TARGETS=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  build_kube "$out" "$v"
  GOBIN=$out go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

build_etcd() {
  local out=$1 v=$2
  printf 'module exportjobs.dev/etcd-tools\ngo 1.24.0\nrequire go.etcd.io/etcd/server/v3 %s\n' "$v" >go.mod
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' >main.go
  go get "go.etcd.io/etcd/server/v3@$v"
  go build -trimpath -ldflags "-s -w" -o "$out/etcd" .
}

build_kwok() {
  local out=$1 v=$2
  GOBIN=$out go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$v -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$KUBE_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$v" "sigs.k8s.io/kwok/cmd/kwokctl@$v"
}

# helm's own release builds stamp the Kubernetes version `helm template` and `helm lint` assume
# (that of the client-go they link); a plain `go install` leaves v1.20, and the chart's kubeVersion
# (>= 1.30) would then refuse to render. The cache key carries it: HELM_BUILD.
build_helm() {
  local out=$1 v=${2%%-k8s*} major minor
  major=$(echo "$KUBE_VERSION" | cut -d. -f1 | tr -d v) minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  local stamp="" pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    stamp+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  GOBIN=$out go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v$stamp" \
    "helm.sh/helm/v3/cmd/helm@$v"
}
HELM_BUILD=$HELM_VERSION-k8s$(echo "$KUBE_VERSION" | cut -d. -f1-2 | tr -d v)

build_minio() {
  local out=$1 v=$2
  GOBIN=$out go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$v"
}

# promql-check (hack/promql): Prometheus's own PromQL parser, for the chart's alert rules and
# dashboard queries (tests/cluster/chart/test_monitoring.py). Keyed by its sources' hash.
build_promql() {
  local out=$1
  cp "$here/promql/go.mod" "$here/promql/go.sum" "$here/promql/main.go" .
  go build -trimpath -ldflags "-s -w" -o "$out/promql-check" .
}
PROMQL_VERSION=v$(cat "$here/promql/go.mod" "$here/promql/go.sum" "$here/promql/main.go" | sha256sum | cut -c1-12)
# s3-admin (hack/s3admin): MinIO users with their own policies (madmin-go, the admin client of the
# pinned MinIO's own go.mod), so the demo and the e2e tier give each component least-privilege keys
# (hack/s3_users.py). Keyed by its sources' hash.
build_s3admin() {
  local out=$1
  cp "$here/s3admin/go.mod" "$here/s3admin/go.sum" "$here/s3admin/main.go" .
  go build -trimpath -ldflags "-s -w" -o "$out/s3-admin" .
}
S3ADMIN_VERSION=v$(cat "$here/s3admin/go.mod" "$here/s3admin/go.sum" "$here/s3admin/main.go" | sha256sum | cut -c1-12)
# Toxiproxy's server (cmd/server), named toxiproxy-server: TCP faults (latency, bandwidth, resets)
# between the processor and the S3 server in the fault tests.
build_toxiproxy() {
  local out=$1 v=$2
  GOBIN=$out go install -trimpath -ldflags "-s -w -X github.com/Shopify/toxiproxy/v2.Version=$v" \
    "github.com/Shopify/toxiproxy/v2/cmd/server@$v"
  mv "$out/server" "$out/toxiproxy-server"
}

bindir() { echo "$cache/$1-$2/bin"; }

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(all)
for t in "${targets[@]}"; do
  case $t in
    all)
      # Three lanes at once: the Go compiler leaves cores idle while it links or downloads.
      pids=()
      { build kube "$KUBE_VERSION" build_kube && build node "$KUBE_VERSION" build_node; } & pids+=($!)
      { build minio "$MINIO_VERSION" build_minio \
          && build toxiproxy "$TOXIPROXY_VERSION" build_toxiproxy \
          && build s3admin "$S3ADMIN_VERSION" build_s3admin; } & pids+=($!)
      { build etcd "$ETCD_VERSION" build_etcd && build kwok "$KWOK_VERSION" build_kwok \
          && build helm "$HELM_BUILD" build_helm && build promql "$PROMQL_VERSION" build_promql; } & pids+=($!)
      failed=0
      for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
      [ $failed -eq 0 ] || die "some tools failed to build (see above)" ;;
    kube) build kube "$KUBE_VERSION" build_kube ;;
    node) build node "$KUBE_VERSION" build_node ;;
    etcd) build etcd "$ETCD_VERSION" build_etcd ;;
    kwok) build kwok "$KWOK_VERSION" build_kwok ;;
    helm) build helm "$HELM_BUILD" build_helm ;;
    minio) build minio "$MINIO_VERSION" build_minio ;;
    promql) build promql "$PROMQL_VERSION" build_promql ;;
    toxiproxy) build toxiproxy "$TOXIPROXY_VERSION" build_toxiproxy ;;
    s3admin) build s3admin "$S3ADMIN_VERSION" build_s3admin ;;
    path)
      bindir kube "$KUBE_VERSION"; bindir etcd "$ETCD_VERSION"; bindir kwok "$KWOK_VERSION"
      # node last: hack/node.sh takes the last line as the kubelet's folder.
      bindir helm "$HELM_BUILD"; bindir minio "$MINIO_VERSION"; bindir promql "$PROMQL_VERSION"
      bindir toxiproxy "$TOXIPROXY_VERSION"; bindir s3admin "$S3ADMIN_VERSION"
      bindir node "$KUBE_VERSION" ;;
    *) die "unknown tool '$t' (all|kube|node|etcd|kwok|helm|minio|promql|toxiproxy|s3admin|path)" ;;
  esac
done
