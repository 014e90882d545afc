#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. ruff (lint + format check) and mypy (beside the installs); nginx,
#      PostgreSQL and chromium installed and a throwaway PostgreSQL cluster started
#   2. two lanes side by side, each a process of its own (the machine has two
#      cores; the suites spend much of their time waiting on subprocesses):
#        a. pytest on SQLite, then the API fuzzer (scripts/fuzz.sh:
#           schemathesis against gunicorn on the PostgreSQL cluster)
#        b. the same pytest suite on PostgreSQL, then the browser tests
#           (Playwright driving Debian's chromium) on SQLite
#      Lane a prints as it goes; lane b's output follows when it ends.
#   3. the coverage gate (90% of lines) over every pytest run of both lanes
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

# What an early exit must stop or remove (set as each starts).
mypy_pid="" mypy_log="" laneb="" laneb_log="" pgdir=""
cleanup() {
  if [ -n "$mypy_pid" ]; then kill "$mypy_pid" 2>/dev/null || true; fi
  if [ -n "$laneb" ]; then kill -- "-$laneb" 2>/dev/null || true; fi
  if [ -n "$pgdir" ]; then scripts/pg.sh stop "$pgdir" || true; rm -rf "$pgdir"; fi
  rm -f "$mypy_log" "$laneb_log"
}
trap cleanup EXIT

step "mypy (beside the installs below, which mostly wait on the network)"
mypy_log="$(mktemp "${TMPDIR:-/tmp}/tunix-mypy.XXXXXX")"
$bin/mypy . >"$mypy_log" 2>&1 &
mypy_pid=$!

step "nginx (for the front's tests, tunix_registry/tests/test_nginx_front.py)"
if NGINX_PATH="$(scripts/ensure-nginx.sh)"; then
  export NGINX_PATH
else
  skip "the nginx front tests (nginx unavailable)"
fi

step "PostgreSQL (a throwaway cluster)"
pgdir="$(mktemp -d "${TMPDIR:-/tmp}/tunix-pg.XXXXXX")"
chmod 755 "$pgdir"
laneb_log="$(mktemp "${TMPDIR:-/tmp}/tunix-laneb.XXXXXX")"
url=""
if ! url="$(scripts/pg.sh start "$pgdir")"; then
  url=""
  skip "the PostgreSQL test run and the API fuzzing (PostgreSQL unavailable)"
fi

step "chromium (for the browser tests)"
chromium=""
if ! chromium="$(scripts/ensure-chromium.sh)"; then
  chromium=""
  skip "the browser tests (chromium unavailable)"
fi

step "mypy's result"
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
mypy_pid=""
cat "$mypy_log"
if [ "$mypy_status" != 0 ]; then exit "$mypy_status"; fi

# Every pytest run is measured in parallel mode (a data file each), combined
# for the gate at the end.
$bin/coverage erase
covered() { $bin/coverage run --parallel-mode -m pytest -p no:cacheprovider "$@"; }

# Lane b, in its own process group (so that an early exit stops all of it).
lane_b() {
  if [ -n "$url" ]; then
    echo "==> lane b: pytest on PostgreSQL"
    # The trainer's own tests are left out here: it is a separate process that
    # imports no Django and touches no database, so they run once, on SQLite.
    DATABASE_URL="$url" covered -m "not browser" \
      --ignore=runs/tests/test_trainer.py --ignore=runs/tests/test_trainer_units.py "$@"
  fi
  if [ -n "$chromium" ]; then
    echo "==> lane b: browser tests (chromium)"
    CHROMIUM_PATH="$chromium" covered -m browser "$@"
  fi
}
set -m
lane_b "$@" >"$laneb_log" 2>&1 &
laneb=$!
set +m

step "lane a: pytest on SQLite (lane b, PostgreSQL then the browser, runs beside it)"
lane_a=0
covered -m "not browser" "$@" || lane_a=$?
if [ "$lane_a" = 0 ] && [ -n "$url" ]; then
  step "lane a: API fuzzing (schemathesis) against gunicorn on PostgreSQL"
  scripts/fuzz.sh "$url" || lane_a=$?
fi

step "lane b's output (pytest on PostgreSQL, then the browser tests)"
lane_b_status=0
wait "$laneb" || lane_b_status=$?
laneb=""
cat "$laneb_log"
if [ "$lane_a" != 0 ] || [ "$lane_b_status" != 0 ]; then
  echo "error: lane a exited with $lane_a, lane b with $lane_b_status" >&2
  exit 1
fi
scripts/pg.sh stop "$pgdir"

step "coverage gate"
$bin/coverage combine --quiet
$bin/coverage report --fail-under=90

if [ ${#skipped[@]} -gt 0 ]; then
  printf '\n!!!!! Skipped on this machine: %s !!!!!\n' "${skipped[*]}" >&2
fi
step "all checks passed"
