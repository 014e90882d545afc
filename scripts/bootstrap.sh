#!/usr/bin/env bash
# Create (or reuse) the project virtualenv and install the project into it.
#   scripts/bootstrap.sh            runtime dependencies only
#   scripts/bootstrap.sh dev,tunix  with the named extras
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
UV_VERSION=0.13.9

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo ">> installing python3-venv (apt)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "error: '$python -m venv' failed; install your distribution's python3-venv package" >&2
      exit 1
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

target="."
[ -n "$extras" ] && target=".[$extras]"
stamp="$venv/.installed-$(echo "$extras" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo ">> installing $target into $venv"
  # uv resolves and downloads in parallel (the tunix extra alone is ~1 GB of
  # wheels); plain pip is the fallback when uv cannot be had.
  if [ ! -x "$venv/bin/uv" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
      2>/dev/null || true
  fi
  if [ -x "$venv/bin/uv" ]; then
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -e "$target"
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
  fi
  touch "$stamp"
fi
