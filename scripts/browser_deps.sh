#!/usr/bin/env bash
# Installs Debian's chromium for the editor's browser tests (tests/browser) when it is missing.
# Playwright (Python) comes from requirements-dev.txt; it drives this system browser through
# executable_path, so `playwright install` (a browser download of its own) is never needed.
# Quiet and idempotent: a no-op when $LOOM_CHROMIUM or /usr/bin/chromium exists.
set -euo pipefail
browser="${LOOM_CHROMIUM:-/usr/bin/chromium}"
[ -x "$browser" ] && exit 0
if [ -n "${LOOM_CHROMIUM:-}" ]; then
  echo "loom: LOOM_CHROMIUM=$LOOM_CHROMIUM is not an executable file" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "loom: chromium is missing and apt-get needs root: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "loom: chromium is missing and there is no apt-get: install Chromium and set LOOM_CHROMIUM to its path" >&2
  exit 1
fi
echo "loom: installing chromium with apt-get (browser tests; first run only)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium; } >/dev/null; then
  echo "loom: 'apt-get install chromium' failed; the browser tests (tests/browser) need it" >&2
  exit 1
fi
if [ ! -x "$browser" ]; then
  echo "loom: chromium was installed but $browser is still missing" >&2
  exit 1
fi
