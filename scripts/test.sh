#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. ruff (lint + format check) and mypy; nginx installed for the front's tests
#   2. pytest with coverage on SQLite
#   3. the same pytest suite on a throwaway PostgreSQL cluster, then the API
#      fuzzer (scripts/fuzz.sh: schemathesis against gunicorn on that cluster)
#   4. browser tests (Playwright driving Debian's chromium) on SQLite
#   5. the coverage gate (90% of lines) over 2 and 4
# Where PostgreSQL or chromium cannot be installed (no root) the step is skipped
# with a loud warning; with CI=true nothing may be skipped.
# Extra arguments are passed to every pytest call (e.g. -x, -k name).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/bootstrap.sh dev,tunix
bin=.venv/bin
export DJANGO_SETTINGS_MODULE=tunix_registry.settings_test
unset DATABASE_URL
skipped=()

step() { printf '\n==> %s  (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }
skip() {
  if [ "${CI:-}" = "true" ]; then
    echo "error: $1 cannot run here, and CI=true forbids skipping it" >&2
    exit 1
  fi
  echo "!!!!! SKIPPED: $1 !!!!!" >&2
  skipped+=("$1")
}

step "ruff"
$bin/ruff check .
$bin/ruff format --check .

step "mypy"
$bin/mypy .

step "nginx (for the front's tests, tunix_registry/tests/test_nginx_front.py)"
if NGINX_PATH="$(scripts/ensure-nginx.sh)"; then
  export NGINX_PATH
else
  skip "the nginx front tests (nginx unavailable)"
fi

step "pytest on SQLite (with coverage)"
$bin/coverage erase
$bin/coverage run -m pytest -m "not browser" -p no:cacheprovider "$@"

step "pytest on PostgreSQL"
pgdir="$(mktemp -d "${TMPDIR:-/tmp}/tunix-pg.XXXXXX")"
chmod 755 "$pgdir"
cleanup() { scripts/pg.sh stop "$pgdir" || true; rm -rf "$pgdir"; }
trap cleanup EXIT
if url="$(scripts/pg.sh start "$pgdir")"; then
  # The trainer's own tests are left out here: it is a separate process that
  # imports no Django and touches no database, so they ran once above.
  DATABASE_URL="$url" $bin/pytest -m "not browser" -p no:cacheprovider \
    --ignore=runs/tests/test_trainer.py --ignore=runs/tests/test_trainer_units.py "$@"
  step "API fuzzing (schemathesis) against gunicorn on PostgreSQL"
  scripts/fuzz.sh "$url"
  scripts/pg.sh stop "$pgdir"
else
  skip "the PostgreSQL test run and the API fuzzing (PostgreSQL unavailable)"
fi

step "browser tests (chromium)"
if chromium="$(scripts/ensure-chromium.sh)"; then
  CHROMIUM_PATH="$chromium" $bin/coverage run -a -m pytest -m browser -p no:cacheprovider "$@"
else
  skip "the browser tests (chromium unavailable)"
fi

step "coverage gate"
$bin/coverage report --fail-under=90

if [ ${#skipped[@]} -gt 0 ]; then
  printf '\n!!!!! Skipped on this machine: %s !!!!!\n' "${skipped[*]}" >&2
fi
step "all checks passed"
