#!/usr/bin/env bash
# How long a dead holder's lease-held key (a coord lock, a leader key) outlives the
# holder when etcd's leader changes meanwhile (docs/reliability.md, "Lock failover
# across an etcd leader change"). Starts a local 3-member etcd cluster (client ports
# 23853/23855/23857, peers one above), grants a lease of <ttl> seconds and puts a key
# on it that nobody keeps alive, waits, forces a leader change with
# `etcdctl move-leader` (or not), and prints when the key was gone.
#
# usage: scripts/lease-failover.sh <checkpoint:off|on> <ttl> <wait-before-move> <move:yes|no>
set -euo pipefail
eval "$($(dirname "$0")/install-deps.sh --env)"
cp=$1 ttl=$2 wait=$3 move=$4
dir=$(mktemp -d /tmp/lease-failover.XXXXXX); rm -rf "$dir"; mkdir -p "$dir"
flags=""
[ "$cp" = on ] && flags="--experimental-enable-lease-checkpoint --experimental-enable-lease-checkpoint-persist"
cluster="m1=http://127.0.0.1:23854,m2=http://127.0.0.1:23856,m3=http://127.0.0.1:23858"
pids=()
for i in 1 2 3; do
  c=$((23851 + 2*i)); p=$((23852 + 2*i))
  etcd --name m$i --data-dir "$dir/m$i" --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
    --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
    --initial-cluster "$cluster" --initial-cluster-state new $flags >"$dir/m$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill ${pids[*]} 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
eps=127.0.0.1:23853,127.0.0.1:23855,127.0.0.1:23857
for _ in $(seq 100); do etcdctl --endpoints=$eps endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
sleep 1
lease=$(etcdctl --endpoints=$eps lease grant "$ttl" | awk '{print $2}')
t0=$(date +%s.%N)   # the holder dies now: nobody keeps the lease alive
etcdctl --endpoints=$eps put lockkey holder --lease="$lease" >/dev/null
sleep "$wait"
if [ "$move" = yes ]; then
  status=$(etcdctl --endpoints=$eps endpoint status -w json)
  leader=$(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print([hex(e['Status']['header']['member_id'])[2:] for e in s if e['Status']['leader']==e['Status']['header']['member_id']][0])" "$status")
  leader_ep=$(python3 -c "import json,sys; s=json.loads(sys.argv[1]); print([e['Endpoint'] for e in s if e['Status']['leader']==e['Status']['header']['member_id']][0])" "$status")
  target=$(etcdctl --endpoints=$eps member list -w json | python3 -c "import json,sys; l=sys.argv[1]; print([hex(m['ID'])[2:] for m in json.load(sys.stdin)['members'] if hex(m['ID'])[2:]!=l][0])" "$leader")
  etcdctl --endpoints=$leader_ep move-leader "$target" >/dev/null
  tm=$(date +%s.%N)
fi
while [ -n "$(etcdctl --endpoints=$eps get lockkey --print-value-only)" ]; do sleep 0.05; done
t1=$(date +%s.%N)
python3 -c "import sys; t0,t1=float(sys.argv[1]),float(sys.argv[2]); print(f'checkpoint={sys.argv[3]} ttl={sys.argv[4]}s leader-move={sys.argv[5]} after {sys.argv[6]}s: key gone {t1-t0:.2f}s after the holder died')" $t0 $t1 $cp $ttl $move $wait
