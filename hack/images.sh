#!/usr/bin/env bash
# Build the two container images (exportjobs-operator, exportjobs-processor) on this machine.
#
#   hack/images.sh [all]        engine + base + wheels + both images, then print their sizes
#   hack/images.sh engine       make sure a Docker engine answers (install/start Debian's if not)
#   hack/images.sh engine-stop  stop the engine this script started (never one it did not start)
#   hack/images.sh base         make sure the base image exists (pull, or debootstrap + import)
#   hack/images.sh wheels       fill build/wheels/ for the base image's Python (host-side pip)
#   hack/images.sh build        wheels + both images
#   hack/images.sh sizes        print the images' sizes
#
# Environment (all optional):
#   BASE_IMAGE           base for both images. Unset: python:3.12-slim when it is present or can be
#                        pulled, else the local exportjobs-python-base:bookworm (Debian bookworm
#                        minbase + Debian's python3, made with debootstrap + docker import).
#   IMAGE_TAG            tag of both images (default: dev)
#   DEBIAN_MIRROR        debootstrap mirror (default: http://deb.debian.org/debian)
#   EXPORTJOBS_CACHE     cache folder (default: ~/.cache/exportjobs); the base rootfs tarball is kept
#                        there so a fresh engine re-imports it in seconds instead of re-bootstrapping
#
# Why wheels are built on the host: the build then needs no network and no TLS trust inside a
# container (the image build only does `pip install --no-index`). The wheels must match the base's
# Python, so the script asks the base for its version and glibc and downloads for exactly those.
# Everything is idempotent: a present base image, an unchanged wheel set and Docker's layer cache
# are reused; only the project's own wheel is rebuilt on every run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
tag=${IMAGE_TAG:-dev}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${EXPORTJOBS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/exportjobs}
state=$repo/.local/docker
wheels=$repo/build/wheels
local_base=exportjobs-python-base:bookworm
default_base=python:3.12-slim
py=${PYTHON:-$repo/.venv/bin/python}
log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

engine_up() { docker info >/dev/null 2>&1; }

ensure_engine() {
  engine_up && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and dockerd is not installed: install Docker (as root: apt-get install -y docker.io)"
    log "installing Debian's docker.io"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io >/dev/null; then
      apt-get update >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io >/dev/null
    fi
  fi
  [ "$(id -u)" = 0 ] || die "no Docker engine answers; start it (sudo systemctl start docker) and re-run"
  mkdir -p "$state"
  log "starting dockerd (log: $state/dockerd.log; stop: hack/images.sh engine-stop)"
  # setsid: the engine must outlive this script (later builds and tests reuse it).
  setsid dockerd --host unix:///var/run/docker.sock >"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 1 60); do
    engine_up && { log "dockerd is up"; return 0; }
    kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || break
    sleep 1
  done
  tail -n 20 "$state/dockerd.log" >&2
  die "dockerd did not come up (log above: $state/dockerd.log)"
}

stop_engine() {
  local pidfile=$state/dockerd.pid pid
  [ -f "$pidfile" ] || { log "no engine started by this script"; return 0; }
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    log "stopped dockerd ($pid)"
  fi
  rm -f "$pidfile"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The rootfs of the local base: Debian bookworm minbase with Debian's python3 (3.11), python3-venv
# (the builder stage makes a venv offline from it) and CA certificates; no docs, man pages, locales
# or apt lists.
bootstrap_base_tarball() {
  local tarball=$1 root
  command -v debootstrap >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] || die "debootstrap is missing (apt-get install -y debootstrap)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null
  }
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  mkdir -p "$(dirname "$tarball")"
  root=$(mktemp -d "$cache/images/.rootfs-XXXXXX")
  log "debootstrap bookworm minbase + python3 from $mirror (cold: a few minutes; cached in $tarball)"
  if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$mirror" >"$root.log" 2>&1; then
    tail -n 20 "$root.log" >&2
    rm -rf "$root"
    die "debootstrap failed (log: $root.log)"
  fi
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* "$root"/tmp/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
  tar --numeric-owner -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -rf "$root" "$root.log"
}

ensure_local_base() {
  have_image "$local_base" && return 0
  local tarball=$cache/images/python-base-bookworm.tar
  mkdir -p "$cache/images"
  exec {lock}>"$cache/images/.base.lock"
  flock "$lock"
  [ -f "$tarball" ] || bootstrap_base_tarball "$tarball"
  log "importing $tarball as $local_base"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$local_base" >/dev/null
  exec {lock}>&-
}

# Prints the base image to use.
resolve_base() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    have_image "$BASE_IMAGE" || docker pull "$BASE_IMAGE" >&2 || die "cannot pull BASE_IMAGE=$BASE_IMAGE"
    echo "$BASE_IMAGE"
    return 0
  fi
  if have_image "$default_base" || timeout 60 docker pull "$default_base" >/dev/null 2>&1; then
    echo "$default_base"
  else
    log "$default_base cannot be pulled here: using the local Debian base $local_base"
    ensure_local_base
    echo "$local_base"
  fi
}

# Fill build/wheels/{deps-operator,deps-processor,project} for the base's Python and glibc.
# deps-* hold the whole resolved closure of each extra, pinned to the versions in .venv (the ones
# the tests ran with), as binary wheels only.
build_wheels() {
  local base=$1 target pyver abi glibc key
  target=$(docker run --rm --network none --entrypoint python3 "$base" -c \
    'import platform, sys; print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], platform.libc_ver()[1]))')
  read -r pyver glibc <<<"$target"
  abi=cp${pyver/./}
  mkdir -p "$wheels"
  # Pin to what .venv has (what the tests ran with); local/URL installs cannot be constraints.
  "$py" -m pip freeze --exclude-editable | grep -v -i -e '^exportjobs' -e ' @ ' >"$wheels/constraints.txt"
  key=$(cat pyproject.toml "$wheels/constraints.txt" <(echo "$pyver $glibc") | sha256sum | cut -c1-16)
  if [ "$(cat "$wheels/.deps-key" 2>/dev/null)" != "$key" ]; then
    log "downloading dependency wheels for Python $pyver, glibc $glibc"
    rm -rf "$wheels/deps-operator" "$wheels/deps-processor" "$wheels/.deps-key"
    # pip does not widen --platform to older manylinux tags: list every one this glibc runs.
    local extra minor platforms=()
    for minor in $(seq "${glibc#*.}" -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    for extra in operator processor; do
      "$py" -c 'import sys, tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]))' \
        "$extra" >"$wheels/requirements-$extra.txt"
      # PIP_FIND_LINKS (a local wheel folder on some machines) is ignored: PyPI only, binary only.
      PIP_FIND_LINKS='' "$py" -m pip download --quiet --only-binary=:all: \
        --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none \
        "${platforms[@]}" \
        -c "$wheels/constraints.txt" -r "$wheels/requirements-$extra.txt" \
        --dest "$wheels/deps-$extra"
    done
    echo "$key" >"$wheels/.deps-key"
  fi
  rm -rf "$wheels/project"
  # A fixed zip timestamp makes the wheel byte-identical while the code is unchanged, so Docker's
  # layer cache skips the project layers of a warm rebuild.
  SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel --quiet --no-deps --wheel-dir "$wheels/project" "$repo"
  rm -rf "$repo/build/lib" "$repo/build/bdist."*
}

build_images() {
  local base=$1 started image
  mkdir -p "$state"
  for image in operator processor; do
    started=$SECONDS
    log "building exportjobs-$image:$tag on $base (log: $state/build-$image.log)"
    docker build --build-arg "BASE_IMAGE=$base" -f "Dockerfile.$image" \
      -t "exportjobs-$image:$tag" . >"$state/build-$image.log" 2>&1 || {
      tail -n 30 "$state/build-$image.log" >&2
      die "building exportjobs-$image failed (log: $state/build-$image.log)"
    }
    log "built exportjobs-$image:$tag in $((SECONDS - started))s"
  done
}

sizes() {
  docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E "^(exportjobs-(operator|processor):$tag|$local_base|$default_base)\b" || true
}

cmd=${1:-all}
case $cmd in
  engine) ensure_engine ;;
  engine-stop) stop_engine ;;
  base) ensure_engine; resolve_base ;;
  wheels) ensure_engine; build_wheels "$(resolve_base)" ;;
  build | all)
    ensure_engine
    started=$SECONDS
    base=$(resolve_base)
    build_wheels "$base"
    build_images "$base"
    log "done in $((SECONDS - started))s"
    sizes
    ;;
  sizes) sizes ;;
  *) die "unknown command '$cmd' (all|engine|engine-stop|base|wheels|build|sizes)" ;;
esac
