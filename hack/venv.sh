#!/usr/bin/env bash
# Create .venv and make it exactly the lock: requirements/dev.txt (every extra, exported from
# uv.lock by `make lock`) installed with pip --require-hashes, the project itself editable, and
# anything not locked removed. Re-runs only when pyproject.toml or the lock changed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EXPORTJOBS_VENV:-$repo/.venv}
python=${PYTHON:-python3}
reqs=$repo/requirements/dev.txt
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "[venv] error: Python >= 3.11 is needed ($python is $("$python" -V 2>&1))" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# An egg-info left in the checkout by an earlier setuptools build shadows the project's installed
# metadata (dependencies, version) for anything run from the checkout, the tests included.
rm -rf "$repo"/*.egg-info
stamp=$venv/.exportjobs-installed
want=$(cat "$repo/pyproject.toml" "$reqs" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing the locked dependencies (requirements/dev.txt) into $venv" >&2
  # The venv's pip is the one its Python shipped: not upgraded, as nothing unlocked gets in.
  pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  # Wheels only: an sdist build would pull unpinned build dependencies.
  "${pip[@]}" install -q --require-hashes --no-deps --only-binary=:all: -r "$reqs"
  # The project: built by the locked setuptools already in the venv, offline.
  "${pip[@]}" install -q --no-deps --no-build-isolation --no-index -e "$repo"
  lock=("$venv/bin/python" "$repo/hack/lock.py")
  # What the lock no longer has (a dropped dependency, something installed by hand) goes.
  extra=$("${pip[@]}" freeze --all --exclude-editable | "${lock[@]}" extraneous "$reqs" --ignore pip)
  if [ -n "$extra" ]; then
    echo "[venv] removing what the lock does not have: $(echo $extra)" >&2
    # shellcheck disable=SC2086  # one name per word
    "${pip[@]}" uninstall -q -y $extra
  fi
  "${pip[@]}" freeze --all --exclude-editable | "${lock[@]}" compare "$reqs" --ignore pip >&2 \
    || { echo "[venv] error: $venv differs from requirements/dev.txt (above)" >&2; exit 1; }
  echo "$want" >"$stamp"
  # The lock is what gets installed, so a pyproject.toml edited without `make lock` is not in the
  # venv: say so now rather than at the first import error (the lint step fails on it too).
  "$repo/hack/lock.sh" check 2>/dev/null ||
    echo "[venv] warning: uv.lock does not match pyproject.toml: run \`make lock\` (re-locks, re-exports, syncs this venv)" >&2
fi
