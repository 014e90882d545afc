#!/usr/bin/env bash
# Run Tunix Registry on its embedded default (SQLite in the data directory):
# install, migrate, create a local admin, load the demo, then serve with
# gunicorn on 127.0.0.1:8000 (override with HOST/PORT) beside one worker
# (`manage.py run_worker`) that executes the queued runs; both stop together.
# `EXTRAS=tunix make run` also installs the Tunix runtime (JAX on the CPU,
# ~1 GB) so local runs can train.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh "${EXTRAS:-}"
py=.venv/bin/python

export TUNIX_REGISTRY_DATA_DIR="${TUNIX_REGISTRY_DATA_DIR:-$PWD/var}"
mkdir -p "$TUNIX_REGISTRY_DATA_DIR"
chmod 700 "$TUNIX_REGISTRY_DATA_DIR"

# A secret key of this installation, generated once and kept beside the data;
# settings read it from there too, so `manage.py` needs nothing exported.
key_file="$TUNIX_REGISTRY_DATA_DIR/secret_key"
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
  if [ ! -s "$key_file" ]; then
    (umask 077 && "$py" -c 'import secrets; print(secrets.token_urlsafe(50))' > "$key_file")
  fi
  DJANGO_SECRET_KEY="$(cat "$key_file")"
  export DJANGO_SECRET_KEY
fi

"$py" manage.py migrate --noinput
"$py" manage.py collectstatic --noinput -v 0

# A local admin account; its password is generated once and printed.
pw_file="$TUNIX_REGISTRY_DATA_DIR/admin_password"
if [ ! -s "$pw_file" ]; then
  (umask 077 && "$py" -c 'import secrets; print(secrets.token_urlsafe(12))' > "$pw_file")
fi
DJANGO_SUPERUSER_PASSWORD="$(cat "$pw_file")" "$py" manage.py ensure_admin --username admin

if "$py" manage.py help load_demo >/dev/null 2>&1; then
  "$py" manage.py load_demo
fi
if "$py" manage.py help reap_runs >/dev/null 2>&1; then
  "$py" manage.py reap_runs
fi

host="${HOST:-127.0.0.1}"
port="${PORT:-8000}"
worker_log="$TUNIX_REGISTRY_DATA_DIR/worker.log"

# The worker and gunicorn each run in a session of their own, so that Ctrl-C in
# this terminal reaches only this script, which then stops both, once each: the
# worker by SIGTERM (it stops and records the run it executes), gunicorn by
# SIGTERM (graceful).
worker_pid=""
web_pid=""
stop() {
  trap - EXIT INT TERM
  for pid in $web_pid $worker_pid; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $web_pid $worker_pid; do
    wait "$pid" 2>/dev/null || true
  done
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

setsid "$py" manage.py run_worker >>"$worker_log" 2>&1 &
worker_pid=$!

echo
echo "Tunix Registry: http://$host:$port/"
echo "  sign in: http://$host:$port/accounts/login/  user 'admin', password $(cat "$pw_file")  (kept in $pw_file)"
echo "  admin:   http://$host:$port/admin/"
echo "  API:     http://$host:$port/api/docs  (send 'Authorization: Bearer <token>')"
echo "  users:   $py manage.py create_user NAME --role viewer|launcher|admin"
echo "  tokens:  $py manage.py issue_token NAME --name LABEL  (the secret is the last line)"
echo "  worker:  one, queue ${TUNIX_DEFAULT_QUEUE:-default} (pid $worker_pid), log in $worker_log"
echo
# Show each request in the terminal (production leaves access lines off).
export GUNICORN_ACCESSLOG="${GUNICORN_ACCESSLOG:--}"
setsid .venv/bin/gunicorn tunix_registry.wsgi:application \
  --config python:tunix_registry.gunicorn_conf \
  --bind "$host:$port" &
web_pid=$!
# Until either stops (or this script is told to): then the other goes too.
wait -n "$web_pid" "$worker_pid" || true
