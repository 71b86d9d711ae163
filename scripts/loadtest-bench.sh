#!/usr/bin/env bash
# Measures the strategies under load on a clean, dedicated shop: starts a fresh etcd and
# Postgres on their own ports, the three services as release binaries on loopback, runs
# the load tester with the given options, then stops everything it started.
#   scripts/loadtest-bench.sh [--port-base N] [--keep] -- <loadtest options>
#   scripts/loadtest-bench.sh -- --scenario flash-sale --strategy all --buyers 200 --stock 100
# Ports: etcd N+0 (peer N+1), Postgres N+2, order N+11, inventory N+12, payment N+13
# (N = 23790 unless --port-base; --etcd-port and --pg-port move those two alone).
# Service logs go to target/loadtest-bench/.
# --keep leaves the shop running (for more runs; stop it with --stop).
# PROFILE=debug uses debug binaries instead (no release build; CPU figures are then
# several times a release build's).
set -euo pipefail
cd "$(dirname "$0")/.."
base=23790 keep=0 stop=0 etcd_port= pg_port=
while [ $# -gt 0 ]; do
  case "$1" in
    --port-base) base=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --etcd-port) etcd_port=$2; shift 2 ;;
    --pg-port) pg_port=$2; shift 2 ;;
    --stop) stop=1; shift ;;
    --) shift; break ;;
    *) echo "loadtest-bench: unknown option $1 (options for loadtest go after --)" >&2; exit 2 ;;
  esac
done
etcd_port=${etcd_port:-$base} pg_port=${pg_port:-$((base + 2))}
order_port=$((base + 11)) inventory_port=$((base + 12)) payment_port=$((base + 13))
logs=target/loadtest-bench
mkdir -p "$logs"
pg="postgres://postgres@127.0.0.1:$pg_port"

stop_all() {
  for svc in payment order inventory; do
    if [ -f "$logs/$svc.pid" ]; then
      kill "$(cat "$logs/$svc.pid")" 2>/dev/null || true
      rm -f "$logs/$svc.pid"
    fi
  done
  sleep 1
  scripts/postgres.sh stop "$pg_port" >/dev/null 2>&1 || true
  scripts/etcd.sh stop "$etcd_port" >/dev/null 2>&1 || true
}
if [ $stop = 1 ]; then stop_all; exit 0; fi

eval "$(scripts/install-deps.sh --env)"
# The services refuse to start without the internal token, and the load tester presents
# it for stocking and opening the sale: one token for this bench shop, kept with its logs.
export INTERNAL_TOKEN_FILE=${INTERNAL_TOKEN_FILE:-$(scripts/secrets.sh "$logs/internal-token")}
profile=${PROFILE:-release}
profile_flag=--release
[ "$profile" = debug ] && profile_flag=
cargo build -q $profile_flag -p grpc-health -p inventory-service -p order-service -p payment-service -p loadtest --bins

if [ ! -f "$logs/inventory.pid" ]; then
  scripts/etcd.sh start "$etcd_port"
  scripts/postgres.sh start "$pg_port"
  # No metrics endpoints: their default ports may be taken by another local shop.
  export ETCD_ENDPOINTS=127.0.0.1:$etcd_port RUST_LOG=${RUST_LOG:-warn} METRICS_ADDR=${METRICS_ADDR:-off}
  export ORDER_ADDR=127.0.0.1:$order_port INVENTORY_ADDR=127.0.0.1:$inventory_port PAYMENT_ADDR=127.0.0.1:$payment_port
  start() { # service port
    GRPC_ADDR=127.0.0.1:$2 DATABASE_URL=$pg/$1 nohup "target/$profile/$1" >"$logs/$1.log" 2>&1 &
    echo $! >"$logs/$1.pid"
    for _ in $(seq 1 100); do
      "target/$profile/grpc-health" "127.0.0.1:$2" >/dev/null 2>&1 && return 0
      sleep 0.1
    done
    echo "loadtest-bench: $1 did not become healthy (log: $logs/$1.log)" >&2
    stop_all
    exit 1
  }
  start inventory "$inventory_port"
  start order "$order_port"
  start payment "$payment_port"
fi
[ $keep = 1 ] || trap stop_all EXIT

# CPU time (clock ticks) of a process, and of Postgres (the postmaster and its backends).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() {
  local pm sum c
  pm=$(head -1 "${TMPDIR:-/tmp}/coord-shop-postgres-$pg_port/data/postmaster.pid")
  sum=$(ticks "$pm")
  for c in $(cat /proc/"$pm"/task/*/children 2>/dev/null); do sum=$((sum + $(ticks "$c"))); done
  echo "$sum"
}
cpu_snapshot() {
  echo "$(ticks "$(cat "$logs/order.pid")") $(ticks "$(cat "$logs/inventory.pid")") \
$(ticks "$(cat "$logs/payment.pid")") $(ticks "$(cat "${TMPDIR:-/tmp}/coord-shop-etcd-$etcd_port/pid")") $(pg_ticks)"
}

echo "loadtest-bench: machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
before=($(cpu_snapshot))
status=0
/usr/bin/time -f "%U %S" -o "$logs/loadtest.time" "target/$profile/loadtest" \
  --order-addr "127.0.0.1:$order_port" --inventory-addr "127.0.0.1:$inventory_port" \
  --order-db "$pg/order" --inventory-db "$pg/inventory" --payment-db "$pg/payment" \
  --etcd-endpoints "127.0.0.1:$etcd_port" --cpu-port "payment=$payment_port" "$@" || status=$?
after=($(cpu_snapshot))
hz=$(getconf CLK_TCK)
names=(order inventory payment etcd postgres)
line="loadtest-bench: CPU seconds during the run (setup, buyers, settling, audit):"
for i in 0 1 2 3 4; do
  line+=" ${names[$i]} $(awk -v t=$((after[i] - before[i])) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
done
line+=" loadtest $(awk '{ printf "%.2f", $1 + $2 }' "$logs/loadtest.time")"
echo "$line" >&2
exit $status
