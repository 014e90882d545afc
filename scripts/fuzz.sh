#!/usr/bin/env bash
# Fuzz every operation of the live API with schemathesis.
#   scripts/fuzz.sh [DATABASE_URL]
# Starts gunicorn (the production config) on a free loopback port against the
# given database (the embedded SQLite in a throwaway data directory when none
# is given), migrates, loads the demo so reads find data (a run, a trace and a
# dataset of it are named to the operations on one record), creates a launcher
# `fuzz` with an API token, runs schemathesis over /api/openapi.json with that
# token on every request (and `ignored_auth`: without it every protected
# operation must refuse) with a fixed seed, and stops the server again.
# Local runs cannot start: the Tunix runtime module is one that does not exist
# (a local run is a 501) and the trainer command is `false` besides. No worker
# runs, so runs launched with mode=async stay pending; a log stream of one of
# them closes after a second.
# Extra arguments go to `st run` (e.g. --max-examples 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

work="$(mktemp -d "${TMPDIR:-/tmp}/tunix-fuzz.XXXXXX")"
server=""
stop() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap stop EXIT

export DJANGO_SETTINGS_MODULE=tunix_registry.settings_test
export TUNIX_REGISTRY_DATA_DIR="$work/data"
export TUNIX_RUNTIME_MODULE=tunix_registry_fuzz_has_no_runtime
export TUNIX_TRAINER_COMMAND=false
export TUNIX_LOG_STREAM_SECONDS=1
# Credentials are required (the default), whatever this shell says.
export TUNIX_ANONYMOUS_ACCESS=none
if [ -n "${1:-}" ]; then export DATABASE_URL="$1"; shift; else unset DATABASE_URL; fi

$bin/python manage.py migrate --verbosity 0
$bin/python manage.py load_demo
# Records the demo holds, so that operations on one record reach its logic
# (scripts/schemathesis.toml names them) instead of answering 404 to every
# generated id: a finished run, a trace, a dataset.
exports="$($bin/python manage.py shell --no-imports -c '
from datasets.models import Dataset
from runs.models import TunixRun
from traces.models import Trace
import shlex
named = {
    "FUZZ_RUN_ID": TunixRun.objects.values_list("pk", flat=True).first(),
    "FUZZ_TRACE_ID": Trace.objects.values_list("pk", flat=True).first(),
    "FUZZ_DATASET_KEY": Dataset.objects.values_list("key", flat=True).first(),
}
missing = [name for name, value in named.items() if value is None]
if missing:
    raise SystemExit(f"the demo holds no record for {missing}")
for name, value in named.items():
    print(f"export {name}={shlex.quote(str(value))}")
')"
eval "$exports"
# The fuzzer acts as a launcher, through a real token: it reaches every
# operation past authentication, reads and writes alike.
DJANGO_USER_PASSWORD="$($bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')" \
  $bin/python manage.py create_user fuzz --role launcher
token="$($bin/python manage.py issue_token fuzz --name fuzz | tail -n 1)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
$bin/gunicorn tunix_registry.wsgi:application --config python:tunix_registry.gunicorn_conf \
  --bind "127.0.0.1:$port" --workers 2 --threads 4 >"$work/gunicorn.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$port/api/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/gunicorn.log" >&2; exit 1; fi
  sleep 0.2
done

status=0
repo="$PWD"
# From the scratch directory: schemathesis and Hypothesis keep their caches in
# the working directory, and nothing of theirs belongs in the repository.
(
  cd "$work"
  PYTHONPATH="$repo/scripts" SCHEMATHESIS_HOOKS=fuzz_hooks \
    "$repo/$bin/st" --config-file "$repo/scripts/schemathesis.toml" \
    run "http://127.0.0.1:$port/api/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance,ignored_auth \
    --seed 20261202 --generation-database none \
    --max-examples 80 --workers 2 --request-timeout 30 --max-time 300 \
    --report-dir "$work/report" --no-color "$@"
) 2>&1 | tee "$work/st.log" || status=$?
# The run must have been a real one: at least 1000 generated requests.
generated="$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$work/st.log" | tail -n 1)"
if [ "$status" -eq 0 ] && [ "${generated:-0}" -lt 1000 ]; then
  echo "error: the fuzzer generated only ${generated:-0} requests (at least 1000 expected)" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "---- server log (errors) ----" >&2
  grep -E 'ERROR|Traceback' -A20 "$work/gunicorn.log" | tail -n 200 >&2 || true
fi
exit "$status"
