#!/usr/bin/env bash
# Runs every coord example against the etcd at $ETCD_ENDPOINTS (default
# 127.0.0.1:2379), each with a time limit, and the benchmark with a tiny load so CI
# proves it still works (its numbers from CI are not meaningful; -n 20 is the
# smallest load that runs one round of double_barrier_round, which runs n/20).
set -euo pipefail
cd "$(dirname "$0")/.."
export ETCD_ENDPOINTS=${ETCD_ENDPOINTS:-127.0.0.1:2379}
cargo build -q -p coord --examples
for src in coord/examples/*.rs; do
  name=$(basename "$src" .rs)
  echo "-- example $name"
  timeout 120 cargo run -q -p coord --example "$name"
done
if [ -f coord/examples/bench/main.rs ]; then
  echo "-- example bench (smoke run)"
  timeout 300 cargo run -q -p coord --example bench -- --endpoint "${ETCD_ENDPOINTS%%,*}" -n 20 --json
fi
