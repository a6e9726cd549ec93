#!/usr/bin/env bash
# Build the two container images (exportjobs-operator, exportjobs-processor) on this machine.
#
#   hack/images.sh [all]        engine + base + wheels + both images, then print their sizes
#   hack/images.sh engine       make sure a Docker engine answers (install/start Debian's if not)
#   hack/images.sh engine-stop  stop the engine this script started (never one it did not start)
#   hack/images.sh base         make sure the base image exists (pull, or debootstrap + import)
#   hack/images.sh wheels       fill build/wheels/ from the lock for the base image's Python (host pip)
#   hack/images.sh build        wheels + both images
#   hack/images.sh sizes        print the images' sizes
#
# Environment (all optional):
#   BASE_IMAGE           base for both images. Unset: python:3.12-slim when it is present or can be
#                        pulled, else the local exportjobs-python-base:bookworm (Debian bookworm
#                        minbase + Debian's python3, made with debootstrap + docker import).
#   IMAGE_TAG            tag of both images (default: dev)
#   IMAGE_SOURCE         the org.opencontainers.image.source label (default: git remote origin)
#   DEBIAN_MIRROR        debootstrap mirror (default: http://deb.debian.org/debian)
#   EXPORTJOBS_CACHE     cache folder (default: ~/.cache/exportjobs); the base rootfs tarball is kept
#                        there so a fresh engine re-imports it in seconds instead of re-bootstrapping
#
# What goes in is the lock (requirements/<extra>.txt, exported from uv.lock by `make lock`): the
# wheels of its pins are downloaded on the host, checked against the lock's hashes, and the build
# installs the same file with `pip install --no-index --require-hashes`. Each image also gets a
# CycloneDX SBOM of those pins and the OCI labels version, revision and source.
# Why wheels are downloaded on the host: the build then needs no network and no TLS trust inside a
# container. The wheels must match the base's Python, so the script asks the base for its version
# and glibc and downloads for exactly those.
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
# The Debian packages of the engine, debootstrap and the local base are checked against the
# known-good versions in hack/debian-packages.txt (hack/debian.sh).
base_packages=(python3 python3.11 python3-venv ca-certificates libc6 libssl3)
# shellcheck source=hack/debian.sh
source "$here/debian.sh"
log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

engine_up() { docker info >/dev/null 2>&1; }

ensure_engine() {
  if ! engine_up; then
    if ! command -v dockerd >/dev/null 2>&1; then
      [ "$(id -u)" = 0 ] || die "no Docker engine answers and dockerd is not installed: install Docker (as root: apt-get install -y docker.io)"
      log "installing Debian's docker.io"
      debian_install host docker.io || die "docker.io: see above"
    fi
    [ "$(id -u)" = 0 ] || die "no Docker engine answers; start it (sudo systemctl start docker) and re-run"
    mkdir -p "$state"
    log "starting dockerd (log: $state/dockerd.log; stop: hack/images.sh engine-stop)"
    # setsid: the engine must outlive this script (later builds and tests reuse it).
    setsid dockerd --host unix:///var/run/docker.sock >"$state/dockerd.log" 2>&1 </dev/null &
    echo $! >"$state/dockerd.pid"
    for _ in $(seq 1 60); do
      engine_up && { log "dockerd is up"; break; }
      kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || break
      sleep 1
    done
    engine_up || {
      tail -n 20 "$state/dockerd.log" >&2
      die "dockerd did not come up (log above: $state/dockerd.log)"
    }
  fi
  # Debian's engine is held against the known-good list; another engine (Docker's own packages,
  # a desktop) is the machine owner's and only named.
  if dpkg-query -W -f '${db:Status-Status}' docker.io 2>/dev/null | grep -qx installed; then
    debian_check host docker.io || die "docker.io: see above"
  else
    log "engine: $(docker version --format 'Docker {{.Server.Version}}' 2>/dev/null) (not Debian's docker.io: not checked)"
  fi
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
  debian_install host debootstrap || die "debootstrap: see above"
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

# The local base's Debian packages, printed and checked on every build.
check_local_base() {
  debian_check_image image-base "$local_base" "${base_packages[@]}" || die "$local_base: see above"
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
    check_local_base
    echo "$local_base"
  fi
}

# Fill build/wheels/ from the lock for the base's Python and glibc, per image (extra):
#   requirements-<extra>.txt  the committed export requirements/<extra>.txt: the Dockerfile installs
#                             it with --require-hashes
#   deps-<extra>/             one binary wheel per pin that applies to the base's Python
#   sbom-<extra>.cdx.json     CycloneDX SBOM of those pins, with the SHA-256 of each wheel
# and project/: the project's wheel plus project.txt, its pin with that wheel's hash.
build_wheels() {
  local base=$1 target pyfull pyver abi glibc version key extra minor platforms=()
  target=$(docker run --rm --network none --entrypoint python3 "$base" -c \
    'import platform, sys; print("%d.%d.%d %s" % (*sys.version_info[:3], platform.libc_ver()[1]))')
  read -r pyfull glibc <<<"$target"
  pyver=${pyfull%.*}
  abi=cp${pyver/./}
  version=$(project_version)
  # pip does not widen --platform to older manylinux tags: list every one this glibc runs.
  for minor in $(seq "${glibc#*.}" -1 5); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  mkdir -p "$wheels"
  for extra in operator processor; do
    key=$(cat "requirements/$extra.txt" hack/lock.py <(echo "$pyfull $glibc $version") | sha256sum | cut -c1-16)
    if [ "$(cat "$wheels/.deps-$extra.key" 2>/dev/null)" != "$key" ]; then
      log "downloading the locked wheels of '$extra' for Python $pyfull, glibc $glibc"
      rm -rf "$wheels/deps-$extra" "$wheels/.deps-$extra.key"
      # The export's pins whose markers hold for the base's Python (pip would judge the markers by
      # the host's Python), each with the lock's hashes: pip checks every download against them.
      "$py" hack/lock.py target "requirements/$extra.txt" --python "$pyfull" >"$wheels/target-$extra.txt"
      # PIP_FIND_LINKS (a local wheel folder on some machines) is ignored: PyPI only, binary only.
      PIP_FIND_LINKS='' "$py" -m pip download --quiet --require-hashes --no-deps --only-binary=:all: \
        --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none \
        "${platforms[@]}" -r "$wheels/target-$extra.txt" --dest "$wheels/deps-$extra"
      "$py" hack/lock.py sbom "requirements/$extra.txt" --python "$pyfull" \
        --name "exportjobs-$extra" --version "$version" --wheels "$wheels/deps-$extra" \
        >"$wheels/sbom-$extra.cdx.json"
      echo "$key" >"$wheels/.deps-$extra.key"
    fi
    cp "requirements/$extra.txt" "$wheels/requirements-$extra.txt"
  done
  rm -rf "$wheels/project"
  # A fixed zip timestamp makes the wheel byte-identical while the code is unchanged, so Docker's
  # layer cache skips the project layers of a warm rebuild.
  SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel --quiet --no-deps --no-build-isolation \
    --wheel-dir "$wheels/project" "$repo"
  # setuptools' by-products in the checkout; a stale egg-info at the root would shadow the venv's
  # metadata of the project for anything run from there (the tests, `--version`).
  rm -rf "$repo/build/lib" "$repo/build/bdist."* "$repo"/*.egg-info
  local wheel
  wheel=$(echo "$wheels"/project/exportjobs-*.whl)
  echo "exportjobs==$version --hash=sha256:$(sha256sum "$wheel" | cut -d' ' -f1)" >"$wheels/project/project.txt"
}

project_version() {
  "$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'
}

# The OCI labels' values: the commit (suffixed -dirty when tracked files differ from it) and the
# repository it came from (IMAGE_SOURCE, else the git remote `origin`, else this checkout).
image_revision() {
  local rev
  rev=$(git -C "$repo" rev-parse HEAD 2>/dev/null) || { echo unknown; return 0; }
  git -C "$repo" diff --quiet HEAD -- 2>/dev/null || rev=$rev-dirty
  echo "$rev"
}

image_source() {
  local url
  url=${IMAGE_SOURCE:-$(git -C "$repo" remote get-url origin 2>/dev/null || echo "$repo")}
  case $url in
    /*) echo "file://$url" ;;
    *) echo "$url" ;;
  esac
}

build_images() {
  local base=$1 started image version revision source
  version=$(project_version)
  revision=$(image_revision)
  source=$(image_source)
  mkdir -p "$state"
  for image in operator processor; do
    started=$SECONDS
    log "building exportjobs-$image:$tag ($version, $revision) on $base (log: $state/build-$image.log)"
    docker build --build-arg "BASE_IMAGE=$base" --build-arg "IMAGE_VERSION=$version" \
      --build-arg "IMAGE_REVISION=$revision" --build-arg "IMAGE_SOURCE=$source" \
      -f "Dockerfile.$image" -t "exportjobs-$image:$tag" . >"$state/build-$image.log" 2>&1 || {
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
