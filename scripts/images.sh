#!/usr/bin/env bash
# Builds, from Debian packages only, local stand-ins for the container images that
# compose.yaml and the testcontainers helpers use, tagged with the upstream names so
# both run unchanged on a machine that reaches no container registry:
#   debian:bookworm-slim          debootstrap (minbase) of Debian bookworm
#   quay.io/coreos/etcd:v3.5.16   + etcd/etcdctl 3.5.16 from Debian trixie
#   postgres:15-bookworm          + Debian's postgresql-15, official-image compatible env
#   coord-shop:dev                the shop's binaries compiled on the host
#                                 (docker/Dockerfile.prebuilt; PROFILE=debug|release)
#   coord-shop:test-hooks         coord-shop:dev with its `inventory` replaced by one built
#                                 with `--features test-hooks` (only the fault suite's
#                                 pause-in-section runs it; part of `shop` and `all`)
#   prom/prometheus:v2.42.0       + Debian bookworm's prometheus (2.42); only for the
#                                 optional `metrics`/`grafana` compose profiles, so not
#                                 part of `all` (CI does not build it)
# A user with a registry never needs this script. An image that already exists is left
# alone unless --force is given.
#   scripts/images.sh [--force] [base|etcd|postgres|shop|all|prometheus]
set -euo pipefail
cd "$(dirname "$0")/.."
force=0
[ "${1:-}" = --force ] && { force=1; shift; }
what=${1:-all}
cache=${COORD_SHOP_CACHE:-$HOME/.cache/coord-shop}/images
mkdir -p "$cache"
eval "$(scripts/install-deps.sh --env)"
deps=$(dirname "$(dirname "$(dirname "$(command -v etcd)")")")

have() { [ $force = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
log() { echo "images: $*" >&2; }

build_base() {
  have debian:bookworm-slim && { log "debian:bookworm-slim present"; return; }
  local tarball=$cache/bookworm-minbase.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || scripts/install-deps.sh
    local root; root=$(mktemp -d)
    log "debootstrap bookworm (minbase) into $root"
    debootstrap --variant=minbase --include=ca-certificates,netbase bookworm "$root" \
      http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball" .
    rm -rf "$root"
  fi
  docker import -c 'CMD ["bash"]' "$tarball" debian:bookworm-slim >/dev/null
  log "tagged debian:bookworm-slim"
}

build_etcd() {
  have quay.io/coreos/etcd:v3.5.16 && { log "etcd image present"; return; }
  local ctx; ctx=$(mktemp -d)
  cp docker/standins/etcd/Dockerfile "$ctx/"
  cp "$deps"/usr/bin/etcd "$deps"/usr/bin/etcdctl "$deps"/usr/bin/etcdutl "$ctx/"
  docker build -q -t quay.io/coreos/etcd:v3.5.16 "$ctx" >/dev/null
  rm -rf "$ctx"
  log "tagged quay.io/coreos/etcd:v3.5.16"
}

build_postgres() {
  have postgres:15-bookworm && { log "postgres image present"; return; }
  docker build -q -t postgres:15-bookworm docker/standins/postgres >/dev/null
  log "tagged postgres:15-bookworm"
}

build_prometheus() {
  local image=${PROMETHEUS_IMAGE:-prom/prometheus:v2.42.0}
  have "$image" && { log "$image present"; return; }
  docker build -q -t "$image" docker/standins/prometheus >/dev/null
  log "tagged $image"
}

build_shop() {
  local profile=${PROFILE:-release} ctx
  local flag=--release
  [ "$profile" = debug ] && flag=""
  ctx=$(mktemp -d)
  mkdir "$ctx/bin" "$ctx/fonts" "$ctx/hooked"
  # The hooked inventory first, set aside: the normal build below overwrites
  # target/<profile>/inventory (cargo keeps both feature sets' artifacts, so switching
  # back and forth relinks nothing).
  # HOOKED_FEATURES adds test-only features to it, e.g. `test-hooks,knockout-fencing`
  # to watch the fault suite's pause-in-section fail with fencing removed.
  local features=${HOOKED_FEATURES:-test-hooks}
  log "cargo build $flag -p inventory-service --features $features (the hooked inventory)"
  cargo build -q $flag -p inventory-service --features "$features" --bin inventory
  cp "target/$profile/inventory" "$ctx/hooked/inventory"
  log "cargo build $flag --bins (the shop image's binaries)"
  cargo build -q $flag --workspace --bins
  cp docker/Dockerfile.prebuilt "$ctx/Dockerfile"
  # The load tester's charts need a font (fonts-dejavu-core, from install-deps.sh).
  cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf "$ctx/fonts/" 2>/dev/null \
    || log "no DejaVuSans.ttf on the host: loadtest --report will not work in the image"
  find "target/$profile" -maxdepth 1 -type f -perm -u+x -exec cp {} "$ctx/bin/" \;
  # The normal image must carry no hook: its inventory must not know the hook's key.
  if grep -q "test-hooks/in-section" "$ctx/bin/inventory"; then
    log "target/$profile/inventory contains the test hook (built with test-hooks?); not tagging"
    exit 1
  fi
  grep -q "test-hooks/in-section" "$ctx/hooked/inventory" \
    || { log "the hooked inventory has no hook"; exit 1; }
  docker build -q -t "${SHOP_IMAGE:-coord-shop:dev}" "$ctx" >/dev/null
  log "tagged ${SHOP_IMAGE:-coord-shop:dev} ($profile binaries)"
  # The hooked image: the normal one, its inventory replaced.
  printf 'ARG BASE\nFROM ${BASE}\nCOPY hooked/inventory /usr/local/bin/inventory\n' \
    >"$ctx/Dockerfile.hooked"
  docker build -q -t "${HOOKED_IMAGE:-coord-shop:test-hooks}" -f "$ctx/Dockerfile.hooked" \
    --build-arg "BASE=${SHOP_IMAGE:-coord-shop:dev}" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "tagged ${HOOKED_IMAGE:-coord-shop:test-hooks} (inventory built with --features $features)"
}

case "$what" in
  base) build_base ;;
  etcd) build_base; build_etcd ;;
  postgres) build_base; build_postgres ;;
  shop) build_base; build_shop ;;
  all) build_base; build_etcd; build_postgres; build_shop ;;
  prometheus) build_base; build_prometheus ;;
  *) echo "usage: $0 [--force] [base|etcd|postgres|shop|all|prometheus]" >&2; exit 2 ;;
esac
