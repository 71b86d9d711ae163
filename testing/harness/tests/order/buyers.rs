//! 200 concurrent buyers race for 50 units of one SKU, once per strategy, through
//! CreateOrder. The truth is read from the inventory database, not from the replies.
//!
//! `mutex`, `stm` and `pg` must sell exactly 50 and reject the rest; `none` must oversell
//! (it exists to show why the others do). Timings are printed, never asserted.

use std::time::Instant;

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use crate::helpers::{status, TestShop};

const BUYERS: usize = 200;
const STOCK: i64 = 50;

struct Run {
    reserved: usize,
    rejected: usize,
    promised: i64,
    elapsed: std::time::Duration,
}

async fn race(shop: &TestShop, strategy: Strategy) -> Run {
    let sku = format!("hot-{strategy}");
    shop.set_stock_as(&sku, STOCK, Some(strategy)).await;
    let started = Instant::now();
    let buyers = (0..BUYERS).map(|i| {
        let (shop, sku) = (shop, sku.clone());
        async move {
            let mut request = crate::helpers::create_request(
                &format!("{strategy}-buyer-{i}"),
                &[(&sku, 1)],
                strategy,
            );
            request.customer_id = format!("buyer-{i}");
            shop.orders
                .clone()
                .create_order(request)
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let replies = futures::future::join_all(buyers).await;
    let elapsed = started.elapsed();
    let mut run = Run {
        reserved: 0,
        rejected: 0,
        promised: 0,
        elapsed,
    };
    for reply in replies {
        let order = reply.unwrap_or_else(|e| panic!("{strategy}: a buyer failed: {e:?}"));
        match status(&order) {
            pb::OrderStatus::Reserved => run.reserved += 1,
            pb::OrderStatus::Rejected => run.rejected += 1,
            other => panic!("{strategy}: unexpected order status {other:?}"),
        }
    }
    let truth = shop.truth(&sku).await;
    run.promised = truth.promised();
    eprintln!(
        "{BUYERS} buyers, {STOCK} units, strategy {strategy:>5}: {:>3} reserved, {:>3} rejected, {:>3} units promised in the inventory database ({:+} oversold), {:?}",
        run.reserved,
        run.rejected,
        run.promised,
        run.promised - STOCK,
        run.elapsed
    );
    if strategy == Strategy::None {
        // The lost updates show as broken conservation (the write is of an absolute
        // value: no CHECK can refuse it).
        let broken = truth.check(STOCK).unwrap_err();
        assert!(broken.contains("stocked"), "{broken}");
    } else {
        truth.check(STOCK).unwrap();
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutex_sells_exactly_the_stock() {
    let shop = TestShop::spawn().await;
    let run = race(&shop, Strategy::Mutex).await;
    assert_eq!(run.promised, STOCK, "nothing oversold, nothing lost");
    assert_eq!((run.reserved, run.rejected), (50, 150));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stm_sells_exactly_the_stock() {
    let shop = TestShop::spawn().await;
    let run = race(&shop, Strategy::Stm).await;
    assert_eq!(run.promised, STOCK, "nothing oversold, nothing lost");
    assert_eq!((run.reserved, run.rejected), (50, 150));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_sells_exactly_the_stock() {
    let shop = TestShop::spawn().await;
    let run = race(&shop, Strategy::Pg).await;
    assert_eq!(run.promised, STOCK, "nothing oversold, nothing lost");
    assert_eq!((run.reserved, run.rejected), (50, 150));
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_oversells() {
    let shop = TestShop::spawn().await;
    let run = race(&shop, Strategy::None).await;
    assert!(
        run.promised > STOCK,
        "without coordination {BUYERS} buyers should oversell {STOCK} units, but only {} were promised",
        run.promised
    );
    // The replies agree with the database: every RESERVED order holds a unit.
    assert_eq!(run.reserved as i64, run.promised);
    shop.stop().await;
}
