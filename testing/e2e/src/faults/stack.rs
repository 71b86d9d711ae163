//! The suite's compose stack: its project, fixed ports, how long a fault holds, and
//! where the load tester finds its databases and etcd members.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use loadtest::config::Databases;
use sqlx::postgres::PgConnectOptions;

use crate::Stack;

/// The compose project the suite runs as (apart from the e2e suite's).
pub const PROJECT: &str = "coord-shop-faults";
/// Host ports of the suite's stack. Fixed, not random: a container the suite restarts
/// (a killed replica, a restarted Postgres, an etcd member) must come back on the port
/// the load and the auditor already use.
pub(super) const FIXED_PORTS: [(&str, &str); 13] = [
    ("ETCD_HOST_PORT", "56379"),
    ("ETCD2_HOST_PORT", "56380"),
    ("ETCD3_HOST_PORT", "56381"),
    ("ORDER_HOST_PORT", "56051"),
    ("ORDER2_HOST_PORT", "56061"),
    ("INVENTORY_HOST_PORT", "56052"),
    ("INVENTORY2_HOST_PORT", "56062"),
    ("PAYMENT_HOST_PORT", "56053"),
    ("PAYMENT2_HOST_PORT", "56063"),
    ("PG_ORDER_HOST_PORT", "56432"),
    ("PG_INVENTORY_HOST_PORT", "56433"),
    ("PG_PAYMENT_HOST_PORT", "56434"),
    ("JAEGER_HOST_PORT", "0"),
];

/// How long a fault lasts before it is undone (a pause, a stopped member, a cut).
pub(super) const HOLD: Duration = Duration::from_secs(6);
/// Brings the stack up with the suite's overrides.
pub async fn stack_up() -> anyhow::Result<Stack> {
    let overrides = crate::repo_root().join("docker/compose.faults.yaml");
    // A stack left over from an interrupted run would carry its state; start clean.
    let _ = crate::docker(&["compose", "-p", PROJECT, "down", "-v", "-t", "1"]).await;
    Stack::up(PROJECT, &[overrides], &FIXED_PORTS)
        .await
        .map_err(anyhow::Error::msg)
}

/// The databases of the stack, as the load tester's auditor reaches them.
pub(super) async fn databases(stack: &Stack) -> anyhow::Result<Databases> {
    let db = |service: &'static str, name: &'static str| async move {
        let port = stack
            .port(service, 5432)
            .await
            .map_err(anyhow::Error::msg)?;
        PgConnectOptions::from_str(&format!("postgres://postgres@127.0.0.1:{port}/{name}"))
            .context("database URL")
    };
    Ok(Databases {
        order: db("pg-order", "order").await?,
        inventory: db("pg-inventory", "inventory").await?,
        payment: db("pg-payment", "payment").await?,
    })
}

pub(super) async fn etcd_endpoints(stack: &Stack) -> anyhow::Result<Vec<(String, String)>> {
    let mut endpoints = Vec::new();
    for member in ["etcd1", "etcd2", "etcd3"] {
        let port = stack.port(member, 2379).await.map_err(anyhow::Error::msg)?;
        endpoints.push((member.to_owned(), format!("127.0.0.1:{port}")));
    }
    Ok(endpoints)
}

/// `docker <verb> <container of service>` on the suite's project.
pub(super) async fn docker_on(stack: &Stack, verb: &[&str], service: &str) -> anyhow::Result<()> {
    stack
        .docker_on(verb, service)
        .await
        .map(|_| ())
        .map_err(anyhow::Error::msg)
}

/// Starts a killed or stopped service of the suite's project again.
pub(super) async fn start_again(stack: &Stack, service: &str) -> anyhow::Result<()> {
    stack.start_again(service).await.map_err(anyhow::Error::msg)
}
