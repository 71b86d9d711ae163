#!/usr/bin/env bash
# Renders every Kubernetes variant of deploy/kubernetes with `kubectl kustomize` and
# checks every rendered object (scripts/k8s_check.py): strict validation against the
# API schemas of Kubernetes $K8S_VERSION (kubernetes-validate, PyPI: an unknown or
# misplaced field fails), plus the shop's own rules (every Deployment has readiness and
# liveness probes, the shop's are gRPC probes, every container has requests and limits,
# no credential is a literal). Offline: no cluster is needed.
#   scripts/k8s-validate.sh                    # render + check dev, production and the components
#   scripts/k8s-validate.sh --render-only DIR  # write each variant's YAML to DIR/<variant>.yaml
#   scripts/k8s-validate.sh --make-dev-secrets # random credentials for the dev overlay (uncommitted files)
# The overlays' credential files are not committed: rendering uses a temporary copy
# whose missing ones hold placeholders (nothing is written into deploy/).
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.32.0}
src=deploy/kubernetes
# variant name, then the overlay and components it stacks.
variants=(
  "dev overlays/dev"
  "production overlays/production"
  "dev-console-observability overlays/dev components/console components/observability"
  "production-observability overlays/production components/observability"
)
secret_files() {
  grep -rhoE '(files:|- [a-z-]+=)secrets/[a-z-]+' "$src" --include=kustomization.yaml \
    | sed 's/.*secrets\///' | sort -u
}

if [ "${1:-}" = --make-dev-secrets ]; then
  for f in order-password inventory-password payment-password internal-token; do
    [ -s "$src/overlays/dev/secrets/$f" ] || openssl rand -hex 24 | tr -d '\n' >"$src/overlays/dev/secrets/$f"
  done
  url=$src/components/console/secrets/inventory-url
  [ -s "$url" ] || printf 'postgres://shop:%s@pg-inventory:5432/inventory' \
    "$(cat "$src/overlays/dev/secrets/inventory-password")" >"$url"
  echo "k8s-validate: dev credentials in $src/overlays/dev/secrets and $src/components/console/secrets" >&2
  exit 0
fi

out=
if [ "${1:-}" = --render-only ]; then out=${2:?usage: $0 --render-only DIR}; mkdir -p "$out"; fi
command -v kubectl >/dev/null || { echo "k8s-validate: kubectl missing (scripts/install-deps.sh)" >&2; exit 1; }
kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
[ "${kustomize:-0}" -ge 5 ] || { echo "k8s-validate: kubectl's kustomize is older than v5 (components, labels need it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src" "$work/k"
for dir in "$work"/k/overlays/* "$work"/k/components/*; do
  [ -d "$dir/secrets" ] || continue
  for f in $(secret_files); do
    [ -e "$dir/secrets/$f" ] || printf 'placeholder-not-a-credential' >"$dir/secrets/$f"
  done
done
rendered=()
for v in "${variants[@]}"; do
  read -r name overlay components <<<"$v"
  dir=$work/k/variants/$name
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources: [../../$overlay]"
    if [ -n "$components" ]; then
      echo "components:"
      for c in $components; do echo "  - ../../$c"; done
    fi
  } >"$dir/kustomization.yaml"
  file=${out:-$work}/$name.yaml
  kubectl kustomize "$dir" >"$file" || { echo "k8s-validate: $name does not render" >&2; exit 1; }
  rendered+=("$file")
done
[ -n "$out" ] && { echo "k8s-validate: rendered ${#rendered[@]} variants into $out" >&2; exit 0; }
python3 scripts/k8s_check.py --kubernetes-version "$K8S_VERSION" "${rendered[@]}"
