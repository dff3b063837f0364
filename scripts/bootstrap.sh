#!/usr/bin/env bash
# Creates .venv and installs the pinned requirements on first use; a no-op (a hash check) after.
# Usage: scripts/bootstrap.sh [dev]   -- "dev" adds the test and lint tools.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${LOOM_PYTHON:-$(command -v python3.11 || command -v python3)}"

files=("$root/requirements.txt")
[ "${1:-}" = "dev" ] && files+=("$root/requirements-dev.txt")
want="$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)"
stamp="$venv/.loom-requirements-${1:-run}"

if [ ! -x "$venv/bin/python" ]; then
  echo "loom: creating virtualenv in .venv (first run only)" >&2
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv separately; install it once, then retry.
    rm -rf "$venv"
    echo "loom: installing python3-venv with apt" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
fi

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "loom: installing Python packages into .venv (first run or requirements changed)" >&2
  args=()
  for f in "${files[@]}"; do args+=(-r "$f"); done
  "$venv/bin/python" -m pip install --disable-pip-version-check -q "${args[@]}" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$venv/bin/python" -c "import yaml, aiohttp" >/dev/null  # fail loudly if the install failed
  echo "$want" > "$stamp"
fi
