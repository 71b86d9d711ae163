#!/usr/bin/env bash
# Makes the shop's internal token (once): the secret that services present to each
# other's internal methods and operators present to admin calls (docs/architecture.md,
# "Customer API and internal API"). compose.yaml's one-shot `internal-token` service
# takes it from INTERNAL_TOKEN_DIR (default .secrets), making it there on the first `up`
# if this script has not; the Swarm stack mounts it as a secret; shopctl and the load
# tester read it through INTERNAL_TOKEN_FILE.
#   scripts/secrets.sh [path]   # default .secrets/internal-token; prints the path
# An existing token is kept (delete the file to rotate it, then recreate the stack).
set -euo pipefail
cd "$(dirname "$0")/.."
path=${1:-${INTERNAL_TOKEN_DIR:-.secrets}/internal-token}
if [ ! -s "$path" ]; then
  mkdir -p "$(dirname "$path")"
  chmod 700 "$(dirname "$path")" 2>/dev/null || true
  umask 022
  # 32 random bytes as hex; readable inside the containers (uid 10001), while the
  # directory (0700) keeps other host users out.
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$path.tmp"
  echo >>"$path.tmp"
  chmod 644 "$path.tmp"
  mv "$path.tmp" "$path"
fi
echo "$path"
