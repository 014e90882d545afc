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
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
  touch "$stamp"
fi
