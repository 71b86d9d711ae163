//! What an order costs (etcd, Postgres, CPU) as the load tester reads it from the real
//! servers, and the open loop (`rate`): latency from each order's due time.

use std::time::Duration;

use loadtest::config::{Amount, Scenario};
use shop_common::domain::Strategy;

use crate::helpers::Shop;

/// Orders of the run stored in the order database (any status), with the test's SQL.
async fn stored(shop: &Shop, key_prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders WHERE starts_with(idempotency_key, $1)")
        .bind(key_prefix)
        .fetch_one(&shop.order_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_per_order_is_read_from_etcd_postgres_and_the_processes() {
    let shop = Shop::spawn(Duration::ZERO).await;
    let mut config = shop.config(Scenario::CartMix, &[Strategy::Pg], 8, 100_000);
    config.skus = 20;
    config.use_sale = false;
    config.amount = Amount::Orders(60);
    let reports = loadtest::run(&config).await.expect("the run");
    let c = &reports[0].cost;
    eprintln!("{}", reports[0].to_json());
    assert_eq!(reports[0].orders_accepted, 60, "{:?}", reports[0].errors);
    // A paid order commits at least its payment's enqueue and its claim in etcd (the
    // claim commits with the previous item's ack, or the ack goes alone).
    let writes = c.etcd_writes_per_order.expect("etcd's revision was read");
    assert!(writes >= 2.0, "{writes} etcd writes per order");
    let requests = c.etcd_requests_per_order.expect("etcd's /metrics was read");
    assert!(requests >= writes, "{requests} requests, {writes} writes");
    assert!(
        c.etcd_requests_by_method
            .get("Txn")
            .is_some_and(|&n| n >= 3.0),
        "{c:?}"
    );
    assert!(
        c.etcd_mvcc_per_order.get("put").is_some_and(|&n| n >= 2.0),
        "{c:?}"
    );
    // Each database took part in every order: insert and status (order), reserve and
    // commit (inventory), the payment row (payment).
    for db in ["order", "inventory", "payment"] {
        assert!(
            c.pg_xacts_by_db.get(db).is_some_and(|&n| n >= 1.0),
            "{db}: {c:?}"
        );
    }
    assert!(c.pg_xacts_per_order.is_some_and(|n| n >= 3.0), "{c:?}");
    // etcd and Postgres are found by their ports; the services run in this process.
    for process in ["etcd", "postgres", "loadtest", "total"] {
        assert!(c.cpu_ms_per_order.contains_key(process), "{process}: {c:?}");
    }
    assert!(c.cpu_ms_per_order["total"] > 0.0, "{c:?}");
    let json: serde_json::Value = serde_json::from_str(&reports[0].to_json()).unwrap();
    for field in [
        "etcd_writes_per_order",
        "etcd_requests_per_order",
        "pg_xacts_per_order",
        "cpu_ms_per_order",
        "p99_ms",
        "oversold",
    ] {
        assert!(json.get(field).is_some(), "--json lacks {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_places_rate_times_duration_orders_and_counts_a_stall_from_the_due_times()
{
    const RATE: f64 = 40.0;
    const BUYERS: usize = 20;
    const STALL: Duration = Duration::from_secs(3);
    let shop = Shop::spawn(Duration::ZERO).await;
    let mut config = shop.config(Scenario::CartMix, &[Strategy::Pg], BUYERS, 100_000);
    config.skus = 20;
    config.use_sale = false;
    config.rate = Some(RATE);
    config.amount = Amount::Duration(Duration::from_secs(5));
    let keys = format!("lt-{}-pg-p", config.cluster.run_id);
    let run = tokio::spawn(async move { loadtest::run(&config).await });

    // The stall: once 10 orders are stored, nobody can insert an order for 3 s.
    while stored(&shop, &keys).await < 10 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut lock = shop.order_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    tokio::time::sleep(STALL).await;
    lock.commit().await.unwrap();

    let reports = run.await.unwrap().expect("the run");
    let r = &reports[0];
    assert_eq!(r.load, "open");
    // Orders are due every 1/40 s for 5 s: exactly 200, whatever the stall did.
    assert_eq!(r.orders, 200, "{:?}", r.errors);
    assert_eq!(r.orders_failed, 0, "{:?}", r.errors);
    // Every order due in the stall's first half (60) waited at least half of it, though
    // only 20 were in flight: measured from its due time, not from its sending (which
    // would show the 20 and the few the loaded machine makes that slow anyway).
    let half = STALL.as_micros() as u64 / 2;
    let slow: u64 = r
        .measurements
        .latency
        .iter_recorded()
        .filter(|v| v.value_iterated_to() >= half)
        .map(|v| v.count_at_value())
        .sum();
    eprintln!("{slow} orders took {half} µs or more; max {} ms", r.max_ms);
    assert!(slow >= 55, "only {slow} orders show the stall");
    assert!(
        r.max_ms >= STALL.as_millis() as f64 * 0.9,
        "max {} ms",
        r.max_ms
    );
}

/// `settled_s` and `saga_rps` count the whole saga, payments included (issue 17): with
/// every payment held back until all the run's orders are answered and 2 s more, the
/// run settles at least 2 s after its last answer, and `saga_rps` is the orders over
/// that time, not over the answers' window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_rate_waits_for_the_last_payment() {
    const ORDERS: usize = 40;
    const HOLD: Duration = Duration::from_secs(2);
    let shop = Shop::spawn(Duration::ZERO).await;
    let mut config = shop.config(Scenario::CartMix, &[Strategy::Pg], 8, 100_000);
    config.skus = 20;
    config.use_sale = false;
    config.amount = Amount::Orders(ORDERS);
    let keys = format!("lt-{}-pg-p", config.cluster.run_id);
    // No payment can be recorded while this lock is held.
    let mut lock = shop.payment_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let run = tokio::spawn(async move { loadtest::run(&config).await });
    // The moment: every order of the run is answered (RESERVED, waiting for payment).
    let reserved = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM orders WHERE starts_with(idempotency_key, $1) AND status = 'RESERVED'",
        )
        .bind(&keys)
        .fetch_one(&shop.order_pool)
        .await
        .unwrap()
    };
    while reserved().await < ORDERS as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(HOLD).await;
    lock.commit().await.unwrap();

    let reports = run.await.unwrap().expect("the run");
    let r = &reports[0];
    assert_eq!(r.orders_accepted, ORDERS, "{:?}", r.errors);
    assert_eq!(r.audit.orders_by_status.get("PAID"), Some(&(ORDERS as i64)));
    let settled = r.settled_s.expect("every order settled");
    eprintln!(
        "answered over {:.2} s, settled after {settled:.2} s",
        r.elapsed_s
    );
    assert!(
        settled >= r.elapsed_s + HOLD.as_secs_f64(),
        "settled after {settled} s, last answer at {} s",
        r.elapsed_s
    );
    let saga = r.saga_rps.expect("a saga rate");
    assert!((saga - ORDERS as f64 / settled).abs() < 1e-9, "{saga}");
    assert!(saga < r.throughput_rps, "{saga} vs {}", r.throughput_rps);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    for field in ["settled_s", "saga_rps"] {
        assert!(json[field].is_number(), "--json lacks {field}");
    }
}
