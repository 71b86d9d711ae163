#!/usr/bin/env bash
# Runs coord's benchmark and the Go anchor (etcd's own Go client) on the same fresh,
# dedicated etcd, workload by workload in alternating order, several rounds, and prints
# a comparison table (medians over rounds, coord/Go ratios, the issue's targets).
#
#   scripts/bench-compare.sh [--rounds 3] [-n 400] [--workers 8] [--port 23790] [--out FILE]
#                            [--only NAME,...] [--current-thread]
#
# - The etcd on --port is started here (scripts/etcd.sh) and stopped at the end, so
#   other load on the shared test etcd does not disturb the numbers. If something
#   already answers on that port it is used as is and left running.
# - One unrecorded warm-up run of each, then every round runs each workload (all of
#   `bench --list`, or --only) once with coord and once with Go, back to back, so that
#   noise from other load on the machine hits both: coord first for the 1st, 3rd, …
#   workload of odd rounds and the 2nd, 4th, … of even rounds, Go first otherwise.
#   Workloads with no Go counterpart (work_queue_roundtrip, semaphore_contended,
#   put_concurrent, mutex_spread) run
#   coord only.
# - Every result line (both implementations, all rounds) is kept in --out
#   (default target/bench-compare/<UTC timestamp>.jsonl); the table is printed by
#   `bench --summarize` from that file, so it can be re-printed later.
# - Needs: cargo, Go (the anchor's run.sh apt-installs golang-go and Debian's etcd
#   client sources if missing), etcd/etcdctl (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

rounds=3 n=400 workers=8 port=23790 out="" only="" coord_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    -n|--n) n=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --current-thread) coord_flags+=(--current-thread); shift ;; # coord on Tokio's single-threaded runtime
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
endpoint=127.0.0.1:$port
# The anchor lives beside the main checkout (../shared from it); a linked worktree
# finds it through git's common directory, which is inside the main checkout.
main_checkout=$(cd "$(git rev-parse --git-common-dir 2>/dev/null || echo .git)/.." && pwd)
anchor=${GO_ANCHOR:-$main_checkout/../shared/anchors/gomutex/run.sh}
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
cleanup() { if [ "$started" = yes ]; then scripts/etcd.sh stop "$port"; fi; }
trap cleanup EXIT

echo "building coord's bench (release) ..." >&2
cargo build -q --release -p coord --example bench
bench=$root/target/release/examples/bench

# Both run one workload, $workload.
run_coord() { exec "$bench" --endpoint "$endpoint" -n "$n" --workers "$workers" --json --only "$workload" ${coord_flags[@]+"${coord_flags[@]}"}; }
run_go() { exec bash "$anchor" --endpoint "$endpoint" -n "$n" -workers "$workers" -only "$workload"; }

# CPU time (user + system, in clock ticks) a process has used so far; empty if gone.
ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true; }
etcd_pid=$(pgrep -f -- "--listen-client-urls http://$endpoint" | head -1 || true)
hz=$(getconf CLK_TCK)
cpu_fields() { # etcd_ticks client_ticks ops -> ,"etcd_cpu_ms_per_op":…,"client_cpu_ms_per_op":…
  awk -v e="$1" -v c="$2" -v n="$3" -v hz="$hz" 'BEGIN {
    if (e != "") printf ",\"etcd_cpu_ms_per_op\":%.4f", e * 1000 / hz / n
    if (c != "") printf ",\"client_cpu_ms_per_op\":%.4f", c * 1000 / hz / n }'
}

# Runs one implementation and adds to each result line the CPU time etcd and the
# client process spent per operation during that workload (from /proc, clock-tick
# resolution). The client's CPU for the last workload, which ends as the process
# exits, comes from its rusage total (/usr/bin/time) minus what was already counted.
run_measured() {
  local impl=$1 fd cpid pid="" line pending="" etcd_used="" e0 c0 e1 c1 used=0 tfile total
  tfile=$(mktemp)
  if [ -x /usr/bin/time ]; then
    coproc CLIENT { exec /usr/bin/time -f "%U %S" -o "$tfile" bash -c "$(declare -f "run_$impl"); $(declare -p bench anchor endpoint n workers workload coord_flags 2>/dev/null); run_$impl"; }
  else
    coproc CLIENT { "run_$impl"; }
  fi
  # bash forgets CLIENT and CLIENT_PID once the coprocess ends: keep copies.
  exec {fd}<&"${CLIENT[0]}"
  cpid=$CLIENT_PID
  e0=$(ticks "$etcd_pid"); c0=0
  emit() { # $1: client ticks for the pending line, or empty
    if [[ $pending =~ \"ops\":([0-9]+) ]]; then
      pending=${pending%\}}$(cpu_fields "$etcd_used" "$1" "${BASH_REMATCH[1]}")\}
    fi
    echo "$pending"
    pending=""
  }
  while IFS= read -r line <&"$fd"; do
    # The client proper: /usr/bin/time's child (bash execs the bench, or run.sh which
    # execs the Go binary), or the coprocess itself.
    if [ -z "$pid" ] && [ -x /usr/bin/time ]; then pid=$(pgrep -P "$cpid" | head -1 || true); fi
    e1=$(ticks "$etcd_pid"); c1=$(ticks "${pid:-$cpid}")
    pending=$line
    etcd_used=""
    if [ -n "$e1" ] && [ -n "$e0" ]; then etcd_used=$((e1 - e0)); fi
    e0=$e1
    if [ -n "$c1" ]; then
      emit "$((c1 - c0))"
      used=$c1; c0=$c1
    fi
  done
  wait "$cpid"
  if [ -n "$pending" ]; then # the client exited before we could read its CPU
    total=$(awk -v hz="$hz" 'NF == 2 { printf "%d", ($1 + $2) * hz }' "$tfile" 2>/dev/null || true)
    if [ -n "$total" ]; then emit "$((total - used))"; else emit ""; fi
  fi
  rm -f "$tfile"
}
# Warm-up, not recorded: a fresh etcd (and a fresh page cache) makes whoever runs
# first look slow.
echo "warm-up (not recorded) ..." >&2
"$bench" --endpoint "$endpoint" -n 100 --workers "$workers" --json >/dev/null 2>&1
bash "$anchor" --endpoint "$endpoint" -n 100 -workers "$workers" >/dev/null
# (The anchor is built by that first call, so later runs measure only the Go binary.)

if [ -n "$only" ]; then workloads=${only//,/ }; else workloads=$("$bench" --list); fi
go_has() { grep -q "want(\"$1\")" "$(dirname "$anchor")/main.go" 2>/dev/null; }
for round in $(seq 1 "$rounds"); do
  k=0
  for workload in $workloads; do
    k=$((k + 1))
    if [ $(((round + k) % 2)) -eq 0 ]; then order="coord go"; else order="go coord"; fi
    go_has "$workload" || order=coord
    for impl in $order; do
      echo "round $round/$rounds, $workload: $impl ..." >&2
      run_measured "$impl" | tee -a "$out" >&2
    done
  done
done

etcd_version=$(etcd --version)
etcd_version=${etcd_version%%$'\n'*}
cat <<EOF

## bench-compare $(date -u '+%Y-%m-%d %H:%M UTC')
- commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- coord || echo ' (with uncommitted changes)')
- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)
- etcd: $etcd_version, fresh single member on $endpoint (data under \${TMPDIR:-/tmp})
- Go: $(go version 2>/dev/null || echo unknown); anchor: $anchor
- command: scripts/bench-compare.sh --rounds $rounds -n $n --workers $workers --port $port${only:+ --only $only} ${coord_flags[*]+"${coord_flags[*]}"}
- raw results: $out
- medians over $rounds rounds, each workload run by coord and Go back to back; ratios are coord/Go (ops/s: higher is better for coord; p50, p99: lower is better)

EOF
"$bench" --summarize "$out"
