#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite.
#   scripts/pg.sh start DIR   init + start a cluster under DIR on a free loopback
#                             port; prints the DATABASE_URL to use
#   scripts/pg.sh stop DIR    stop it (DIR can then be removed)
# Installs PostgreSQL with apt when it is missing and we are root. As root the
# server runs as the unprivileged 'postgres' user (it refuses to run as root).
set -euo pipefail

find_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then echo "$d"; fi
  done | sort -V | tail -n 1
}

ensure_installed() {
  if [ -z "$(find_bindir)" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo ">> installing postgresql (apt)" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "error: PostgreSQL is not installed and cannot be installed without root" >&2
      return 1
    fi
  fi
}

as_server_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
  start)
    ensure_installed
    bindir="$(find_bindir)"
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
      useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(free_port)"
    as_server_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || as_server_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 \
      >"$dir/initdb.log" 2>&1
    as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" \
      start >/dev/null
    echo "$port" > "$dir/port"
    "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres tunix_registry
    echo "postgres://postgres@127.0.0.1:$port/tunix_registry"
    ;;
  stop)
    bindir="$(find_bindir)"
    if [ -n "$bindir" ] && [ -d "$dir/data" ]; then
      as_server_user "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
