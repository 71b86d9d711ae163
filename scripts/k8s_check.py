#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (scripts/k8s-validate.sh renders them).

Two kinds of check, both on every object of every file given:
1. The API schema of a named Kubernetes release, strictly (kubernetes-validate from
   PyPI): a misspelt, unknown or misplaced field is an error, not a warning.
2. The shop's own rules, which the schema cannot express:
   - every Deployment and StatefulSet container has a readiness and a liveness probe;
   - the shop's services (component shop-service) probe with Kubernetes' native gRPC
     probe on grpc.health.v1, readiness naming their gRPC service; they run at least 2
     replicas, have a preStop hook and a termination grace period longer than it, and
     a PodDisruptionBudget selects them;
   - every container requests and limits CPU and memory;
   - no credential is literal: no env value or ConfigMap entry whose name says
     password/token/secret, and no URL with a password in it;
   - a default-deny ingress NetworkPolicy exists.

Usage: scripts/k8s_check.py [--kubernetes-version 1.32.0] FILE.yaml...
Exit 1 with one line per finding; 0 and a summary line when all pass.
"""

import argparse
import os
import re
import sys

import kubernetes_validate
import yaml

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|PRIVATE_KEY", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@:\s]+:[^/@\s]+@")
# Names that match SECRET_NAME but hold no secret: etcd's cluster token only keeps two
# clusters from joining each other by mistake.
NOT_SECRETS = {"ETCD_INITIAL_CLUSTER_TOKEN"}
WORKLOADS = ("Deployment", "StatefulSet")


def objects(paths):
    """(file, object) for every non-empty document of every file."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for obj in yaml.safe_load_all(f):
                if obj:
                    yield path, obj


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_findings(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        return [f"{name_of(obj)}: schema (Kubernetes {version}): {e.message} at /{path}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        return [f"{name_of(obj)}: no schema in Kubernetes {version}: {e}"]
    return []


def container_findings(obj, container, shop_service):
    where = f"{name_of(obj)} container {container.get('name')}"
    found = []
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in container:
            found.append(f"{where}: no {probe}")
        elif shop_service and "grpc" not in container[probe]:
            found.append(f"{where}: {probe} is not a gRPC probe")
    if shop_service:
        if not container.get("readinessProbe", {}).get("grpc", {}).get("service"):
            found.append(f"{where}: readinessProbe names no gRPC service")
        if "preStop" not in container.get("lifecycle", {}):
            found.append(f"{where}: no preStop hook (a leader must drain and resign)")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in resources.get(kind, {}):
                found.append(f"{where}: no {kind}.{res}")
    for env in container.get("env", []):
        value = env.get("value")
        if value is None:
            continue
        name = env["name"]
        if SECRET_NAME.search(name) and not name.endswith("_FILE") and name not in NOT_SECRETS:
            found.append(f"{where}: env {env['name']} is a literal credential (use a Secret)")
        if URL_WITH_PASSWORD.search(value):
            found.append(f"{where}: env {env['name']} holds a URL with a password")
    return found


def rule_findings(objs):
    found = []
    pdb_selectors = [
        o["spec"].get("selector", {}).get("matchLabels", {})
        for o in objs
        if o.get("kind") == "PodDisruptionBudget"
    ]
    if not any(
        o.get("kind") == "NetworkPolicy"
        and o["spec"].get("podSelector") == {}
        and "Ingress" in o["spec"].get("policyTypes", [])
        and not o["spec"].get("ingress")
        for o in objs
    ):
        found.append("no default-deny ingress NetworkPolicy")
    for obj in objs:
        kind = obj.get("kind")
        if kind == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(str(value)):
                    found.append(f"{name_of(obj)}: {key} looks like a credential (use a Secret)")
        if kind not in WORKLOADS:
            continue
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        shop_service = labels.get("app.kubernetes.io/component") == "shop-service"
        for container in pod.get("containers", []):
            found += container_findings(obj, container, shop_service)
        if shop_service:
            if spec.get("replicas", 1) < 2:
                found.append(f"{name_of(obj)}: fewer than 2 replicas")
            if pod.get("terminationGracePeriodSeconds", 30) <= 5:
                found.append(f"{name_of(obj)}: terminationGracePeriodSeconds leaves no time after preStop")
            if not any(sel and sel.items() <= labels.items() for sel in pdb_selectors):
                found.append(f"{name_of(obj)}: no PodDisruptionBudget selects it")
    return found


def check(paths, version):
    """Every finding for the files, and how many objects were checked."""
    found, count = [], 0
    for path in paths:
        label = os.path.basename(path)
        objs = [o for _, o in objects([path])]
        count += len(objs)
        for obj in objs:
            found += [f"{label}: {f}" for f in schema_findings(obj, version)]
        found += [f"{label}: {f}" for f in rule_findings(objs)]
    return found, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", default="1.32.0")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    found, count = check(args.files, args.kubernetes_version)
    for line in found:
        print(line)
    if found:
        print(f"k8s-check: {len(found)} finding(s) in {count} objects", file=sys.stderr)
        return 1
    print(
        f"k8s-check: {count} objects in {len(args.files)} variants pass Kubernetes "
        f"{args.kubernetes_version} (strict) and the shop's rules"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
