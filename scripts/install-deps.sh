#!/usr/bin/env bash
# Installs what building and testing coord-shop needs, from Debian's package
# registry only (no other downloads), idempotently:
#   - protoc (Debian bookworm's protobuf-compiler) for the gRPC crates;
#   - etcd/etcdctl 3.5.16 and the docker compose v2 CLI plugin, unpacked from
#     Debian trixie's etcd-server, etcd-client and docker-compose packages into
#     $DEPS (nothing is installed into the system from trixie);
#   - debootstrap, for building offline container images (scripts/images.sh);
#   - PostgreSQL 15 (Debian bookworm), run by scripts/postgres.sh for the shop tests;
#   - DejaVu Sans (Debian bookworm's fonts-dejavu-core): the text of the load
#     tester's charts (loadtest --report) and of its test.
#   - openssl (Debian bookworm), with which coord's TLS tests make throwaway certificates.
#   - chromium and chromium-driver (Debian bookworm): the console's browser test drives
#     headless Chromium through chromedriver (WebDriver).
#   - kubernetes-validate (PyPI, pinned) for scripts/k8s-validate.sh, which renders
#     deploy/kubernetes with `kubectl kustomize` (kustomize v5: the machine's kubectl;
#     Debian's kubernetes-client only where there is none, and its kustomize is too
#     old for components, which k8s-validate.sh then says).
# Prints the PATH addition to use: eval "$(scripts/install-deps.sh --env)".
set -euo pipefail
DEPS=${COORD_SHOP_DEPS:-$HOME/.cache/coord-shop/deps}
quiet() { "$@" >/dev/null 2>&1; }

env_only=0
[ "${1:-}" = "--env" ] && env_only=1

if [ $env_only = 0 ]; then
  need_apt=()
  command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
  command -v debootstrap >/dev/null || need_apt+=(debootstrap)
  command -v openssl >/dev/null || need_apt+=(openssl)
  command -v pg_ctl >/dev/null || [ -x /usr/lib/postgresql/15/bin/pg_ctl ] || need_apt+=(postgresql)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
  command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${need_apt[*]}" >&2
    quiet apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi

  if [ ! -x "$DEPS/root/usr/bin/etcd" ] || [ ! -x "$DEPS/root/usr/libexec/docker/cli-plugins/docker-compose" ]; then
    echo "install-deps: fetching etcd 3.5 and compose v2 from Debian trixie into $DEPS" >&2
    apt_dir=$DEPS/apt
    mkdir -p "$apt_dir/lists/partial" "$DEPS/root"
    echo 'deb http://deb.debian.org/debian trixie main' >"$apt_dir/sources.list"
    o=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::archives="$apt_dir")
    quiet apt-get "${o[@]}" update
    (cd "$apt_dir" && quiet apt-get "${o[@]}" download etcd-server etcd-client docker-compose)
    for deb in "$apt_dir"/*.deb; do dpkg -x "$deb" "$DEPS/root"; done
  fi
  kv=1.37.0
  if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$kv')" 2>/dev/null; then
    echo "install-deps: pip install kubernetes-validate==$kv" >&2
    python3 -m pip install -q --disable-pip-version-check "kubernetes-validate==$kv" >/dev/null
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  if ! docker compose version >/dev/null 2>&1; then
    cp "$DEPS/root/usr/libexec/docker/cli-plugins/docker-compose" "$HOME/.docker/cli-plugins/"
  fi
  version=$("$DEPS/root/usr/bin/etcd" --version)
  echo "install-deps: ${version%%$'\n'*}" >&2
fi
echo "export PATH=\"$DEPS/root/usr/bin:\$PATH\""
