#!/usr/bin/env bash
# Runs coord's benchmark and the Go anchor (etcd's own Go client) on the same fresh,
# dedicated etcd, several rounds in alternating order, and prints a comparison table
# (medians over rounds, coord/Go ratios, the issue's targets).
#
#   scripts/bench-compare.sh [--rounds 3] [-n 400] [--workers 8] [--port 23790] [--out FILE]
#
# - The etcd on --port is started here (scripts/etcd.sh) and stopped at the end, so
#   other load on the shared test etcd does not disturb the numbers. If something
#   already answers on that port it is used as is and left running.
# - One unrecorded warm-up run of each, then round r runs coord first when r is odd
#   and Go first when r is even.
# - Every result line (both implementations, all rounds) is kept in --out
#   (default target/bench-compare/<UTC timestamp>.jsonl); the table is printed by
#   `bench --summarize` from that file, so it can be re-printed later.
# - Needs: cargo, Go (the anchor's run.sh apt-installs golang-go and Debian's etcd
#   client sources if missing), etcd/etcdctl (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 n=400 workers=8 port=23790 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    -n|--n) n=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
endpoint=127.0.0.1:$port
anchor=${GO_ANCHOR:-/work/shared/anchors/gomutex/run.sh}
if [ -z "$out" ]; then
  mkdir -p target/bench-compare
  out=target/bench-compare/$(date -u +%Y%m%dT%H%M%SZ).jsonl
fi
: >"$out"

eval "$(scripts/install-deps.sh --env)"
started=no
if ! etcdctl --endpoints "$endpoint" endpoint health >/dev/null 2>&1; then
  scripts/etcd.sh start "$port"
  started=yes
fi
cleanup() { [ "$started" = yes ] && scripts/etcd.sh stop "$port"; }
trap cleanup EXIT

echo "building coord's bench (release) ..." >&2
cargo build -q --release -p coord --example bench
bench=$root/target/release/examples/bench

run_coord() { "$bench" --endpoint "$endpoint" -n "$n" --workers "$workers" --json; }
run_go() { bash "$anchor" --endpoint "$endpoint" -n "$n" -workers "$workers"; }

# Warm-up, not recorded: a fresh etcd (and a fresh page cache) makes whoever runs
# first look slow.
echo "warm-up (not recorded) ..." >&2
"$bench" --endpoint "$endpoint" -n 100 --workers "$workers" --json >/dev/null 2>&1
bash "$anchor" --endpoint "$endpoint" -n 100 -workers "$workers" >/dev/null

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order="coord go"; else order="go coord"; fi
  for impl in $order; do
    echo "round $round/$rounds: $impl ..." >&2
    "run_$impl" | tee -a "$out" >&2
  done
done

etcd_version=$(etcd --version | head -1)
cat <<EOF

## bench-compare $(date -u '+%Y-%m-%d %H:%M UTC')
- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- coord || echo ' (with uncommitted changes)')
- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)
- etcd: $etcd_version, fresh single member on $endpoint (data under \${TMPDIR:-/tmp})
- Go: $(go version 2>/dev/null || echo unknown); anchor: $anchor
- command: scripts/bench-compare.sh --rounds $rounds -n $n --workers $workers --port $port
- raw results: $out
- medians over $rounds rounds; ratios are coord/Go (ops/s: higher is better for coord; p50: lower is better)

EOF
"$bench" --summarize "$out"
