#!/usr/bin/env bash
# Runs a single-member etcd 3.5 on loopback for tests and examples.
#   scripts/etcd.sh start [port]   start (data in a temp dir), wait until healthy
#   scripts/etcd.sh stop  [port]   stop it and remove its data
set -euo pipefail
cmd=${1:-start}
port=${2:-2379}
peer=$((port + 1))
run=${TMPDIR:-/tmp}/coord-shop-etcd-$port
eval "$("$(dirname "$0")/install-deps.sh" --env)"
case "$cmd" in
  start)
    if etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1; then
      echo "etcd already running on 127.0.0.1:$port" >&2; exit 0
    fi
    rm -rf "$run"; mkdir -p "$run"
    nohup etcd --name default --data-dir "$run/data" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "default=http://127.0.0.1:$peer" \
      --log-level warn >"$run/etcd.log" 2>&1 &
    echo $! >"$run/pid"
    for _ in $(seq 1 100); do
      if etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1; then
        echo "etcd running on 127.0.0.1:$port (log: $run/etcd.log)" >&2; exit 0
      fi
      sleep 0.1
    done
    echo "etcd did not become healthy; log:" >&2; cat "$run/etcd.log" >&2; exit 1 ;;
  stop)
    [ -f "$run/pid" ] && kill "$(cat "$run/pid")" 2>/dev/null || true
    rm -rf "$run" ;;
  *) echo "usage: $0 start|stop [port]" >&2; exit 2 ;;
esac
