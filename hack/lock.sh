#!/usr/bin/env bash
# The dependency lock. uv.lock is uv's lock of pyproject.toml: every package of every extra, one
# version each, with the hashes of its files on PyPI, for any Python >= 3.11 and platform. pip
# installs from its hash-pinned exports, one per install target:
#   requirements/operator.txt   the operator image (extra `operator`)
#   requirements/processor.txt  the processor image (extra `processor`)
#   requirements/dev.txt        the venv: every extra (operator, processor, dev)
#
#   hack/lock.sh [refresh]       after editing pyproject.toml: re-lock (pins that still fit stay),
#                                re-export, bring .venv to the new lock. `make lock` runs this.
#   hack/lock.sh upgrade [PKG]   move every pin (or only PKG's) to the newest release allowed
#   hack/lock.sh check           exit 1 when uv.lock or an export does not match pyproject.toml
#                                (the lint step of hack/test.sh, so CI fails on a stale lock)
#
# uv itself is pinned by the lock (dev extra) and runs from .venv. It only ever talks to PyPI:
# UV_PYTHON_DOWNLOADS=never keeps it from fetching a Python build, it uses .venv's interpreter.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A folder with pyproject.toml, uv.lock and requirements/ (tests use a copy; default: the repo).
project=${EXPORTJOBS_LOCK_PROJECT:-$repo}
venv=${EXPORTJOBS_VENV:-$repo/.venv}
uv=${UV:-$venv/bin/uv}
export UV_PYTHON_DOWNLOADS=never
log() { printf '[lock] %s\n' "$*" >&2; }
die() { printf '[lock] error: %s\n' "$*" >&2; exit 1; }

targets=(operator processor dev)
export_args() {
  case $1 in
    operator | processor) echo "--extra $1" ;;
    dev) echo "--all-extras" ;;
  esac
}

# Writes the export of target $1 to file $2.
export_target() {
  # shellcheck disable=SC2046  # the extra flags split on purpose
  {
    echo "# The locked '$1' install (uv.lock exported by \`make lock\`; do not edit by hand)."
    "$uv" export --quiet --directory "$project" --frozen --no-header --no-emit-project \
      --format requirements.txt $(export_args "$1")
  } >"$2.part"
  mv "$2.part" "$2"
}

need_uv() {
  [ -x "$uv" ] || {
    [ "$project" = "$repo" ] && "$repo/hack/venv.sh"
    [ -x "$uv" ] || die "no uv at $uv (run hack/venv.sh)"
  }
}

cmd=${1:-refresh}
case $cmd in
  refresh | upgrade)
    need_uv
    args=()
    if [ "$cmd" = upgrade ]; then
      if [ -n "${2:-}" ]; then args=(--upgrade-package "$2"); else args=(--upgrade); fi
    fi
    log "locking pyproject.toml with $("$uv" --version)"
    "$uv" lock --directory "$project" --python "$venv/bin/python" "${args[@]}"
    mkdir -p "$project/requirements"
    for target in "${targets[@]}"; do export_target "$target" "$project/requirements/$target.txt"; done
    log "exported requirements/{$(IFS=,; echo "${targets[*]}")}.txt"
    if [ "$project" = "$repo" ]; then "$repo/hack/venv.sh"; fi
    git -C "$project" status --short -- uv.lock requirements/ >&2 2>/dev/null || true
    ;;
  check)
    need_uv
    # --locked: fail instead of rewriting uv.lock when pyproject.toml asks for something else.
    "$uv" lock --directory "$project" --python "$venv/bin/python" --check --quiet ||
      die "uv.lock does not match pyproject.toml: run \`make lock\` and commit uv.lock and requirements/"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for target in "${targets[@]}"; do
      export_target "$target" "$tmp/$target.txt"
      cmp -s "$tmp/$target.txt" "$project/requirements/$target.txt" ||
        die "requirements/$target.txt is not the export of uv.lock: run \`make lock\` and commit it"
    done
    log "uv.lock and requirements/ match pyproject.toml"
    ;;
  *) die "unknown command '$cmd' (refresh|upgrade [PKG]|check)" ;;
esac
