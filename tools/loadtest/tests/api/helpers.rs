//! A whole shop for one test (inventory, order, payment, each with its own database),
//! and what the load tester needs to find it.

#![allow(dead_code)]

use std::time::Duration;

use loadtest::config::{Amount, Cluster, Databases, Endpoints, RunConfig, Scenario};
use shop_common::domain::Strategy;
use shop_harness::Services;
use shop_test_support::etcd_endpoints;

/// The three services ([`Services`], payment started; its pools are the truth the
/// tests read behind the APIs), with what the load tester needs to find them.
pub struct Shop {
    pub services: Services,
}

impl std::ops::Deref for Shop {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.services
    }
}

impl Shop {
    /// Starts the three services. `think_time` is inventory's pause between reading
    /// and writing stock in `none`/`mutex`: longer makes `none`'s lost updates certain.
    pub async fn spawn(think_time: Duration) -> Shop {
        let services =
            Services::spawn("loadtest", |s| s.inventory.think_time = think_time, true).await;
        Shop { services }
    }

    /// A run of `scenario` with `buyers` buyers for `stock` units, one order each, in
    /// a flash sale, as one process.
    pub fn config(
        &self,
        scenario: Scenario,
        strategies: &[Strategy],
        buyers: usize,
        stock: i64,
    ) -> RunConfig {
        RunConfig {
            scenario,
            strategies: strategies.to_vec(),
            buyers,
            stock,
            skus: 1,
            zipf_exponent: 1.1,
            max_lines: 3,
            max_quantity: 1,
            per_customer_limit: 0,
            customers: buyers,
            amount: Amount::OnePerBuyer,
            rate: None,
            cpu_ports: Vec::new(),
            use_sale: true,
            direct_reserve: false,
            endpoints: Endpoints {
                order: self.order.uri(),
                inventory: self.inventory().uri(),
            },
            databases: Databases {
                order: self.order_db.settings().options,
                inventory: self.inventory_db.settings().options,
                payment: self.payment_db.settings().options,
            },
            cluster: Cluster {
                run_id: format!("{:08x}", rand_u32()),
                processes: 1,
                index: 0,
                etcd: coord::EtcdConfig::new(&etcd_endpoints()).unwrap(),
                etcd_prefix: self.etcd_prefix.clone(),
            },
            settle_timeout: Duration::from_secs(60),
            join_timeout: Duration::from_secs(60),
            progress: false,
            sample_stock: false,
            seed: 7,
            internal_token: None,
        }
    }

    /// Command-line options that point the binaries at this shop.
    pub fn binary_args(&self) -> Vec<String> {
        [
            ("--order-addr", self.order.uri()),
            ("--inventory-addr", self.inventory().uri()),
            ("--payment-addr", self.payment().uri()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }

    /// The load tester's database and etcd options for this shop.
    pub fn loadtest_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self.binary_args().into_iter().take(4).collect();
        for (flag, db) in [
            ("--order-db", &self.order_db),
            ("--inventory-db", &self.inventory_db),
            ("--payment-db", &self.payment_db),
        ] {
            args.extend([flag.to_owned(), db.url()]);
        }
        args.extend([
            "--etcd-endpoints".to_owned(),
            etcd_endpoints(),
            "--etcd-prefix".to_owned(),
            self.etcd_prefix.clone(),
        ]);
        args
    }

    /// Units promised to buyers (lines of RESERVED or COMMITTED reservations) of SKUs
    /// whose name starts with `prefix`, read here with SQL of the test's own.
    pub async fn promised(&self, sku_prefix: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(sum(l.quantity), 0)::bigint FROM reservation_lines l
             JOIN reservations r ON r.order_id = l.order_id
             WHERE starts_with(l.sku, $1) AND r.state IN ('RESERVED', 'COMMITTED')",
        )
        .bind(sku_prefix)
        .fetch_one(&self.inventory_pool)
        .await
        .unwrap()
    }

    /// Units sold (committed) of SKUs starting with `prefix`, from the stock counters.
    pub async fn sold(&self, sku_prefix: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(sum(sold), 0)::bigint FROM stock WHERE starts_with(sku, $1)",
        )
        .bind(sku_prefix)
        .fetch_one(&self.inventory_pool)
        .await
        .unwrap()
    }

    /// Orders whose idempotency key starts with `prefix`, with status `status`.
    pub async fn orders_with_status(&self, key_prefix: &str, status: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE starts_with(idempotency_key, $1) AND status = $2",
        )
        .bind(key_prefix)
        .bind(status)
        .fetch_one(&self.order_pool)
        .await
        .unwrap()
    }
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}
