#!/usr/bin/env bash
# The fault suite (docs/reliability.md, "Fault matrix"): brings the compose stack up
# (compose.yaml + docker/compose.faults.yaml), runs the flash-sale load through both
# order replicas once per fault while injecting it — a paused or killed lock holder,
# a killed or SIGTERMed job leader, a stopped etcd member, the etcd leader killed,
# Postgres restarted, a payment worker killed, a replica cut off from the network,
# duplicate and out-of-order saga messages, etcd compaction, a lock holder held inside
# its critical section (pause-in-section, fenced and unfenced, against the hooked
# inventory image), a lock holder or job leader killed while etcd's leader is moved —
# and rewrites the fault matrix in docs/reliability.md with what the databases say
# (oversold, lost orders, duplicate payments) and what it measured (stall, failover).
#
#   scripts/faults.sh                      # every fault (about 15 minutes here)
#   scripts/faults.sh --only kill-etcd-leader,compact-etcd --report -
#   scripts/faults.sh --help
#
# Needs Docker with the compose v2 plugin; offline, the images are built from Debian
# packages first (scripts/images.sh). PROFILE=release builds the shop's image and
# the suite from release binaries (default debug, as CI).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-deps.sh --env)"
profile=${PROFILE:-debug}
PROFILE=$profile scripts/images.sh all
flag=""
[ "$profile" = release ] && flag=--release
cargo build -q $flag -p e2e --bin faults
exec "target/$profile/faults" "$@"
