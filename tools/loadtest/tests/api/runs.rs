//! The load tester as a library: each strategy on its own SKUs, the numbers it reports
//! checked against the inventory and order databases with the test's own queries.

use std::time::Duration;

use loadtest::config::Scenario;
use loadtest::StrategyReport;
use shop_common::domain::Strategy;

use crate::helpers::Shop;

const BUYERS: usize = 40;
const STOCK: i64 = 10;

fn report_for(reports: &[StrategyReport], strategy: Strategy) -> &StrategyReport {
    reports
        .iter()
        .find(|r| r.strategy == strategy.as_str())
        .unwrap_or_else(|| panic!("no report for {strategy}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_flash_sale_mutex_stm_and_pg_oversell_nothing_and_none_oversells_as_the_database_shows(
) {
    // 20 ms between none's read and write: with 40 buyers at once, overlapping reads
    // (lost updates) are certain, not a matter of luck.
    let shop = Shop::spawn(Duration::from_millis(20)).await;
    let config = shop.config(
        Scenario::FlashSale,
        &[
            Strategy::None,
            Strategy::MutexUnfenced,
            Strategy::Mutex,
            Strategy::Stm,
            Strategy::Pg,
        ],
        BUYERS,
        STOCK,
    );
    let reports = loadtest::run(&config).await.expect("the run");
    assert_eq!(reports.len(), 5);

    for r in &reports {
        // `mutex` is a prefix of `mutex-unfenced`: SKUs end in `-sku<k>`, keys
        // continue with `-p<process>`.
        let base = format!("lt-{}-{}-sku", config.cluster.run_id, r.strategy);
        let keys = format!("lt-{}-{}-p", config.cluster.run_id, r.strategy);
        let promised = shop.promised(&base).await;
        eprintln!(
            "{}: {} accepted, {} rejected, {} promised in the database, oversold {}, {:.0} orders/s",
            r.strategy, r.orders_accepted, r.orders_rejected, promised, r.audit.oversold, r.throughput_rps
        );
        // What the report says is what the databases hold.
        assert_eq!(
            r.audit.oversold,
            (promised - STOCK).max(0),
            "{}",
            r.strategy
        );
        assert_eq!(r.audit.units_promised, promised, "{}", r.strategy);
        assert_eq!(r.audit.units_sold, shop.sold(&base).await, "{}", r.strategy);
        assert_eq!(
            r.orders_accepted as i64,
            shop.orders_with_status(&keys, "PAID").await,
            "{}: every accepted order was paid",
            r.strategy
        );
        assert_eq!(
            r.orders_rejected as i64,
            shop.orders_with_status(&keys, "REJECTED").await,
            "{}",
            r.strategy
        );
        assert_eq!((r.buyers, r.stock, r.orders), (BUYERS, STOCK, BUYERS));
        assert_eq!(r.orders_failed, 0, "{}: {:?}", r.strategy, r.errors);
        assert_eq!(
            (
                r.audit.lost_orders,
                r.audit.duplicate_payments,
                r.audit.payment_mismatches,
                r.audit.status_mismatches
            ),
            (0, 0, 0, 0)
        );
        assert!(
            r.audit.drift.is_empty(),
            "{}: {:?}",
            r.strategy,
            r.audit.drift
        );
        assert!(r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    }

    for strategy in [
        Strategy::MutexUnfenced,
        Strategy::Mutex,
        Strategy::Stm,
        Strategy::Pg,
    ] {
        let r = report_for(&reports, strategy);
        assert_eq!(r.audit.oversold, 0, "{strategy}");
        assert_eq!(r.audit.conservation_violations, 0, "{strategy}");
        assert_eq!(
            (r.orders_accepted, r.orders_rejected),
            (10, 30),
            "{strategy}"
        );
        assert_eq!(
            r.audit.units_sold, STOCK,
            "{strategy}: all the stock, no more"
        );
        assert!(
            r.violations().is_empty(),
            "{strategy}: {:?}",
            r.violations()
        );
    }
    let none = report_for(&reports, Strategy::None);
    assert!(
        none.audit.oversold > 0,
        "40 uncoordinated buyers with a 20 ms think time oversell 10 units; got {none:?}"
    );
    assert_eq!(none.audit.units_sold, STOCK + none.audit.oversold);
    // Its lost updates show as broken conservation: the counters add up to more than
    // the stock (the write is of an absolute value, so no CHECK refused it).
    assert_eq!(none.audit.conservation_violations, 1, "{none:?}");
    assert!(
        none.violations().is_empty(),
        "overselling is none's nature, not a violation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_start_together_and_are_audited_as_one_run() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    let mut first = shop.config(Scenario::FlashSale, &[Strategy::Pg], 15, 20);
    first.cluster.processes = 2;
    let mut second = first.clone();
    second.cluster.index = 1;
    // The second process arrives later; the first waits for it at the DoubleBarrier.
    let (a, b) = tokio::join!(loadtest::run(&first), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        loadtest::run(&second).await
    });
    let (a, b) = (a.expect("process 0"), b.expect("process 1"));
    let (a, b) = (&a[0], &b[0]);
    // Each process counts its own 15 orders; the databases hold both processes' 30.
    assert_eq!((a.orders, b.orders), (15, 15));
    assert_eq!(
        a.orders_accepted + b.orders_accepted,
        20,
        "the stock, sold once"
    );
    for r in [a, b] {
        assert_eq!((r.buyers, r.processes), (30, 2));
        assert_eq!(
            (r.audit.units_sold, r.audit.oversold, r.audit.lost_orders),
            (20, 0, 0)
        );
        assert_eq!(r.audit.orders_by_status.get("PAID"), Some(&20));
        assert_eq!(r.audit.orders_by_status.get("REJECTED"), Some(&10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_mix_orders_several_skus_and_the_charts_are_written() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    let mut config = shop.config(Scenario::CartMix, &[Strategy::Mutex], 12, 4);
    // Outside a sale: the buyers only start together.
    config.use_sale = false;
    config.skus = 5;
    config.max_lines = 3;
    config.max_quantity = 2;
    config.amount = loadtest::config::Amount::Orders(30);
    config.sample_stock = true;
    let reports = loadtest::run(&config).await.expect("the run");
    let r = &reports[0];
    let base = format!("lt-{}-mutex-", config.cluster.run_id);
    assert_eq!((r.orders, r.stock, r.skus), (30, 20, 5));
    assert_eq!(r.audit.units_promised, shop.promised(&base).await);
    assert_eq!(r.audit.oversold, 0);
    assert!(r.audit.units_sold <= 20 && r.audit.units_sold > 0, "{r:?}");
    assert!(!r.measurements.stock.is_empty(), "stock was sampled");
    let carts: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM order_lines l JOIN orders o ON o.order_id = l.order_id
         WHERE starts_with(o.idempotency_key, $1) GROUP BY o.order_id",
    )
    .bind(&base)
    .fetch_all(&shop.order_pool)
    .await
    .unwrap();
    assert_eq!(carts.len(), 30);
    assert!(carts.iter().all(|&lines| (1..=3).contains(&lines)));
    assert!(
        carts.iter().any(|&lines| lines > 1),
        "multi-SKU carts: {carts:?}"
    );

    let dir = std::env::temp_dir().join(format!("loadtest-report-{}", config.cluster.run_id));
    std::fs::create_dir_all(&dir).unwrap();
    loadtest::charts::register_font(None).expect("a font (fonts-dejavu-core)");
    loadtest::cli::write_report(&dir, &reports).expect("the report");
    for chart in ["latency", "throughput", "stock", "cost"] {
        let png = std::fs::read(dir.join(format!("mutex-{chart}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}.png is a PNG");
        let svg = std::fs::read_to_string(dir.join(format!("mutex-{chart}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("mutex"), "{chart}.svg");
    }
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(summary.contains("| mutex |"), "{summary}");
    assert!(summary.contains("mutex-stock.png"), "{summary}");
    // The cost chart and table carry what the servers counted for this run.
    let cost_svg = std::fs::read_to_string(dir.join("mutex-cost.svg")).unwrap();
    assert!(
        cost_svg.contains("etcd writes") && cost_svg.contains("etcd"),
        "cost.svg"
    );
    assert!(summary.contains("| strategy | etcd writes |"), "{summary}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sales_per_customer_limit_holds_for_mutex_stm_and_pg() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    // 40 buyers sharing 10 customers, one unit each, at most one per customer: the
    // limit binds long before the 100 units run out.
    let mut config = shop.config(
        Scenario::CustomerLimit,
        &[Strategy::Mutex, Strategy::Stm, Strategy::Pg],
        BUYERS,
        100,
    );
    config.per_customer_limit = 1;
    config.customers = 10;
    let reports = loadtest::run(&config).await.expect("the run");
    for r in &reports {
        let base = format!("lt-{}-{}-", config.cluster.run_id, r.strategy);
        let per_customer: Vec<i64> = sqlx::query_scalar(
            "SELECT sum(l.quantity)::bigint FROM orders o
             JOIN order_lines l ON l.order_id = o.order_id
             WHERE starts_with(o.idempotency_key, $1) AND o.status = 'PAID'
             GROUP BY o.customer_id",
        )
        .bind(&base)
        .fetch_all(&shop.order_pool)
        .await
        .unwrap();
        assert_eq!(
            per_customer,
            vec![1; 10],
            "{}: one unit per customer",
            r.strategy
        );
        assert_eq!(r.audit.over_limit_units, Some(0), "{}", r.strategy);
        assert_eq!(
            (r.orders_accepted, r.orders_rejected),
            (10, 30),
            "{}",
            r.strategy
        );
        assert_eq!(
            (r.audit.units_sold, r.audit.oversold),
            (10, 0),
            "{}",
            r.strategy
        );
        assert!(
            r.violations().is_empty(),
            "{}: {:?}",
            r.strategy,
            r.violations()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reserves_measure_the_strategies_without_the_saga() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    let mut config = shop.config(
        Scenario::FlashSale,
        &[Strategy::Mutex, Strategy::Pg],
        BUYERS,
        STOCK,
    );
    config.direct_reserve = true;
    let reports = loadtest::run(&config).await.expect("the run");
    for r in &reports {
        let base = format!("lt-{}-{}-", config.cluster.run_id, r.strategy);
        assert_eq!(r.mode, "reserve");
        assert_eq!(
            (r.orders_accepted, r.orders_rejected),
            (10, 30),
            "{}",
            r.strategy
        );
        assert_eq!(shop.promised(&base).await, STOCK, "{}", r.strategy);
        assert_eq!(r.audit.units_promised, STOCK);
        // No saga: nothing in the order database, nothing paid or sold.
        assert!(r.audit.orders_by_status.is_empty(), "{r:?}");
        assert_eq!((r.audit.units_sold, r.audit.payments), (0, 0));
        assert!(r.violations().is_empty(), "{:?}", r.violations());
    }
}
