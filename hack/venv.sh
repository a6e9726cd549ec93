#!/usr/bin/env bash
# Create .venv and install the project with every extra; reinstall only when pyproject.toml changed.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EXPORTJOBS_VENV:-$repo/.venv}
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "[venv] error: Python >= 3.11 is needed ($python is $("$python" -V 2>&1))" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp=$venv/.exportjobs-installed
want=$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing exportjobs and its dev tools into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[operator,processor,dev]"
  echo "$want" >"$stamp"
fi
