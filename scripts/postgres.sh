#!/usr/bin/env bash
# Runs a throwaway PostgreSQL 15 cluster on loopback for tests and local runs.
#   scripts/postgres.sh start [port]   initdb (data under $TMPDIR), start, wait until ready
#   scripts/postgres.sh stop  [port]   stop it and remove its data
#   scripts/postgres.sh url   [port]   print the DATABASE_URL to use
# PG_EXTRA_OPTIONS adds server options at start, e.g. to see where Postgres' time goes:
#   PG_EXTRA_OPTIONS="-c shared_preload_libraries=pg_stat_statements" scripts/postgres.sh start
#
# The cluster trusts every connection from 127.0.0.1 as user `postgres` (no password):
# it is for tests on this machine only. It is tuned for speed, not durability
# (fsync off): a crash loses it, which is fine for data that lives one test run.
# Postgres refuses to run as root, so initdb and pg_ctl run as the `postgres` user.
set -euo pipefail
cmd=${1:-start}
port=${2:-5432}
run=${TMPDIR:-/tmp}/coord-shop-postgres-$port
url="postgres://postgres@127.0.0.1:$port/postgres"

bin=${PG_BIN:-}
if [ -z "$bin" ]; then
  for candidate in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$candidate/pg_ctl" ] && { bin=$candidate; break; }
  done
fi
[ -n "$bin" ] || { echo "postgres.sh: no PostgreSQL server found (scripts/install-deps.sh installs it)" >&2; exit 1; }

# Run a server binary as the postgres user (or as ourselves when we are not root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; }

case "$cmd" in
  start)
    if ready; then
      if "$bin/psql" -qtA -d "$url" -c 'SELECT 1' >/dev/null 2>&1; then
        echo "postgres already running on 127.0.0.1:$port" >&2; exit 0
      fi
      echo "postgres.sh: a server on 127.0.0.1:$port does not let user postgres in without a" >&2
      echo "password (another cluster?); use another port: scripts/postgres.sh start 5433" >&2
      exit 1
    fi
    if [ -f "$run/data/postmaster.pid" ]; then
      as_pg "$bin/pg_ctl" -D "$run/data" stop -m immediate >/dev/null 2>&1 || true
    fi
    rm -rf "$run"; mkdir -p "$run"
    [ "$(id -u)" = 0 ] && chown postgres: "$run"
    as_pg "$bin/initdb" -D "$run/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >"$run/initdb.log" 2>&1 || { cat "$run/initdb.log" >&2; exit 1; }
    as_pg "$bin/pg_ctl" -D "$run/data" -l "$run/postgres.log" -w -t 60 start -o \
      "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$run \
       -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
       ${PG_EXTRA_OPTIONS:-}" \
      >/dev/null || { echo "postgres did not start; log:" >&2; cat "$run/postgres.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
      if ready; then
        echo "postgres running on 127.0.0.1:$port (log: $run/postgres.log); DATABASE_URL=$url" >&2; exit 0
      fi
      sleep 0.1
    done
    echo "postgres did not become ready; log:" >&2; cat "$run/postgres.log" >&2; exit 1 ;;
  stop)
    if [ -f "$run/data/postmaster.pid" ]; then
      as_pg "$bin/pg_ctl" -D "$run/data" stop -m fast >/dev/null 2>&1 || true
    fi
    rm -rf "$run" ;;
  url)
    echo "$url" ;;
  *) echo "usage: $0 start|stop|url [port]" >&2; exit 2 ;;
esac
