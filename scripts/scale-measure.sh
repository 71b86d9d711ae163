#!/usr/bin/env bash
# What one order costs each component, measured: runs the load tester against a
# dedicated shop (scripts/loadtest-bench.sh: fresh etcd and Postgres, the services as
# release binaries on loopback) and reads, around the run, etcd's own counters
# (/metrics: raft proposals committed, KV puts/txns/ranges, gRPC messages by method,
# WAL fsyncs), Postgres' (pg_stat_database of the three databases: transactions and
# rows written) and every process's CPU time (loadtest-bench prints it). Prints per
# order figures; docs/scaling.md turns them into the scale model.
#   scripts/scale-measure.sh [--port-base N] -- <loadtest options>
#   scripts/scale-measure.sh -- --scenario cart-mix --strategy mutex --buyers 32 --duration 30s
# The shop is started with one small warm-up run (not counted) and stopped at the end.
# Counts include what the load tester itself asks (stocking the SKUs, the start
# barrier, the audit's reads): with thousands of orders per run that is noise.
set -euo pipefail
cd "$(dirname "$0")/.."
base=23790
[ "${1:-}" = --port-base ] && { base=$2; shift 2; }
[ "${1:-}" = -- ] && shift
etcd_port=$base pg_port=$((base + 2))
bench() { scripts/loadtest-bench.sh --port-base "$base" "$@"; }
trap 'bench --stop' EXIT

echo "scale-measure: starting the shop (warm-up run)" >&2
bench --keep -- --scenario cart-mix --strategy mutex --orders 40 --buyers 4 --quiet >/dev/null

etcd_counters() {
  curl -sf "http://127.0.0.1:$etcd_port/metrics" | awk '
    /^etcd_server_proposals_committed_total / { p = $2 }
    /^etcd_mvcc_put_total / { put = $2 }
    /^etcd_mvcc_txn_total / { txn = $2 }
    /^etcd_mvcc_range_total / { range = $2 }
    /^etcd_mvcc_delete_total / { del = $2 }
    /^etcd_disk_wal_fsync_duration_seconds_count / { fsync = $2 }
    /^grpc_server_msg_received_total/ {
      match($0, /grpc_method="[A-Za-z]+"/); m = substr($0, RSTART + 13, RLENGTH - 14)
      msgs += $2; by[m] += $2
    }
    END {
      printf "proposals=%d puts=%d txns=%d ranges=%d deletes=%d fsyncs=%d grpc_msgs=%d", p, put, txn, range, del, fsync, msgs
      for (m in by) if (by[m] > 0) printf " msg_%s=%d", m, by[m]
      printf "\n"
    }'
}
pg_counters() {
  psql -qAt "postgres://postgres@127.0.0.1:$pg_port/postgres" -c "
    SELECT string_agg(format('%s_xacts=%s %s_rows=%s', datname, xact_commit + xact_rollback,
                             datname, tup_inserted + tup_updated + tup_deleted), ' ')
    FROM pg_stat_database WHERE datname IN ('order', 'inventory', 'payment')"
}
snapshot() { echo "$(etcd_counters) $(pg_counters)"; }

before=$(snapshot)
out=$(mktemp)
status=0
bench --keep -- "$@" --json --quiet >"$out" 2>"$out.err" || status=$?
sleep 2 # Postgres publishes a backend's statistics up to a second after its transaction
after=$(snapshot)
cat "$out.err" >&2
python3 - "$out" "$before" "$after" <<'PY'
import json, re, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
parse = lambda s: {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", s)}
before, after = parse(sys.argv[2]), parse(sys.argv[3])
delta = {k: after[k] - before.get(k, 0) for k in after}
orders = sum(r["orders"] for r in runs)
accepted = sum(r["orders_accepted"] for r in runs)
secs = sum(r["elapsed_s"] for r in runs)
print(f"scale-measure: {orders} orders ({accepted} accepted) in {secs:.1f} s = {orders / secs:.0f} orders/s; "
      f"strategies {','.join(r['strategy'] for r in runs)}; invariants: "
      + ", ".join(f"{r['strategy']} oversold {r['oversold']} lost {r['lost_orders']} "
                  f"duplicate payments {r['duplicate_payments']}" for r in runs))
print("per order (all orders, accepted or not):")
for k in ["proposals", "puts", "txns", "ranges", "deletes", "fsyncs", "grpc_msgs"]:
    print(f"  etcd {k:<10} {delta.get(k, 0) / orders:8.2f}")
for k in sorted(delta):
    if k.startswith("msg_") and delta[k] > 0:
        print(f"  etcd {k[4:]:<24} {delta[k] / orders:8.2f} messages")
for db in ["order", "inventory", "payment"]:
    print(f"  postgres {db:<10} {delta.get(db + '_xacts', 0) / orders:6.2f} transactions, "
          f"{delta.get(db + '_rows', 0) / orders:6.2f} rows written")
PY
exit $status
