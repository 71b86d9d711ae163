#!/usr/bin/env python3
"""Tests of the Kubernetes manifests' check (scripts/k8s_check.py): the rendered
overlays pass, and each guarantee the check gives fails when it is taken out of a
rendered manifest — an unknown field, a missing probe, an HTTP probe where the shop
promises gRPC, a missing preStop, a literal password, a Deployment no
PodDisruptionBudget covers, one replica, no default-deny policy.

Run by .ci/run:  python3 scripts/k8s_check_test.py
(renders with scripts/k8s-validate.sh --render-only: needs kubectl and kubernetes-validate).
"""

import copy
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_check  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = os.environ.get("K8S_VERSION", "1.32.0")


class Rendered(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        subprocess.run(
            [os.path.join(ROOT, "scripts", "k8s-validate.sh"), "--render-only", cls.dir.name],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        cls.files = sorted(os.path.join(cls.dir.name, f) for f in os.listdir(cls.dir.name))
        with open(os.path.join(cls.dir.name, "dev.yaml"), encoding="utf-8") as f:
            cls.dev = [o for o in yaml.safe_load_all(f) if o]

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def findings_after(self, change):
        """The check's findings on the dev overlay after `change(objects)` edits it."""
        objs = copy.deepcopy(self.dev)
        change(objs)
        path = os.path.join(self.dir.name, "mutated.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(objs, f)
        try:
            return k8s_check.check([path], VERSION)[0]
        finally:
            os.remove(path)

    def order(self, objs, kind="Deployment"):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == "order")

    def order_container(self, objs):
        return self.order(objs)["spec"]["template"]["spec"]["containers"][0]

    def assertFinds(self, findings, text):
        self.assertTrue(any(text in f for f in findings), f"no finding with {text!r} in {findings}")

    def test_every_variant_passes(self):
        findings, count = k8s_check.check(self.files, VERSION)
        self.assertEqual(findings, [])
        self.assertGreater(count, 100)

    def test_the_dev_overlay_has_what_the_issue_asks(self):
        kinds = {(o["kind"], o["metadata"]["name"]) for o in self.dev}
        for wanted in [
            ("StatefulSet", "etcd"),
            ("Service", "etcd"),
            ("StatefulSet", "pg-order"),
            ("StatefulSet", "pg-inventory"),
            ("StatefulSet", "pg-payment"),
            ("Deployment", "order"),
            ("Deployment", "inventory"),
            ("Deployment", "payment"),
            ("HorizontalPodAutoscaler", "order"),
            ("PodDisruptionBudget", "etcd"),
            ("NetworkPolicy", "default-deny-ingress"),
            ("NetworkPolicy", "customers-reach-order"),
            ("Secret", "shop-database"),
            ("Secret", "shop-internal-token"),
            ("ConfigMap", "shop-config"),
        ]:
            self.assertIn(wanted, kinds)
        etcd = next(o for o in self.dev if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "etcd")
        self.assertEqual(etcd["spec"]["replicas"], 3)
        self.assertTrue(etcd["spec"]["volumeClaimTemplates"])
        headless = next(o for o in self.dev if o["kind"] == "Service" and o["metadata"]["name"] == "etcd")
        self.assertEqual(headless["spec"]["clusterIP"], "None")

    def test_an_unknown_field_fails(self):
        def change(objs):
            self.order_container(objs)["readinessProbe"]["grpc"]["serviceName"] = "shop.v1.OrderService"

        self.assertFinds(self.findings_after(change), "schema")

    def test_a_misplaced_field_fails(self):
        def change(objs):
            self.order(objs)["spec"]["template"]["spec"]["replicas"] = 2

        self.assertFinds(self.findings_after(change), "schema")

    def test_a_missing_readiness_probe_fails(self):
        self.assertFinds(
            self.findings_after(lambda objs: self.order_container(objs).pop("readinessProbe")),
            "Deployment/order container order: no readinessProbe",
        )

    def test_a_missing_liveness_probe_fails(self):
        self.assertFinds(
            self.findings_after(lambda objs: self.order_container(objs).pop("livenessProbe")),
            "no livenessProbe",
        )

    def test_an_http_probe_on_a_shop_service_fails(self):
        def change(objs):
            self.order_container(objs)["livenessProbe"] = {"httpGet": {"path": "/", "port": 9464}}

        self.assertFinds(self.findings_after(change), "livenessProbe is not a gRPC probe")

    def test_a_readiness_probe_without_the_grpc_service_fails(self):
        def change(objs):
            del self.order_container(objs)["readinessProbe"]["grpc"]["service"]

        self.assertFinds(self.findings_after(change), "readinessProbe names no gRPC service")

    def test_a_missing_prestop_fails(self):
        self.assertFinds(
            self.findings_after(lambda objs: self.order_container(objs).pop("lifecycle")),
            "no preStop hook",
        )

    def test_missing_limits_fail(self):
        self.assertFinds(
            self.findings_after(lambda objs: self.order_container(objs)["resources"].pop("limits")),
            "no limits.cpu",
        )

    def test_a_literal_password_fails(self):
        def change(objs):
            self.order_container(objs)["env"].append({"name": "DATABASE_PASSWORD", "value": "hunter2"})

        self.assertFinds(self.findings_after(change), "literal credential")

    def test_a_url_with_a_password_in_a_configmap_fails(self):
        def change(objs):
            config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "shop-config")
            config["data"]["DATABASE_URL"] = "postgres://shop:hunter2@pg-order:5432/order"

        self.assertFinds(self.findings_after(change), "looks like a credential")

    def test_a_shop_service_without_a_disruption_budget_fails(self):
        def change(objs):
            objs.remove(self.order(objs, "PodDisruptionBudget"))

        self.assertFinds(self.findings_after(change), "Deployment/order: no PodDisruptionBudget")

    def test_one_replica_fails(self):
        def change(objs):
            self.order(objs)["spec"]["replicas"] = 1

        self.assertFinds(self.findings_after(change), "fewer than 2 replicas")

    def test_no_default_deny_fails(self):
        def change(objs):
            objs[:] = [o for o in objs if o["metadata"]["name"] != "default-deny-ingress"]

        self.assertFinds(self.findings_after(change), "no default-deny ingress NetworkPolicy")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"k8s_check_test: {result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed or not result.testsRun else 0)
