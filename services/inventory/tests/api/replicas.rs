//! Two inventory replicas (two processes' worth of state: two etcd sessions) share one
//! database. Only the etcd lock stands between their buyers under `mutex`.

use std::time::Instant;

use shop_common::domain::Strategy;
use shop_proto::v1 as pb;

use crate::helpers::{lines, new_order_id, outcome, TestInventory};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_mutex_strategy_sell_exactly_the_stock() {
    let app = TestInventory::spawn().await;
    let (replica, replica_client) = app.spawn_replica().await;
    app.set_stock("hot", 50).await;
    let clients = [app.client(), replica_client];
    let started = Instant::now();
    let buyers = (0..200).map(|i| {
        let mut client = clients[i % 2].clone();
        async move {
            client
                .reserve(pb::ReserveRequest {
                    order_id: new_order_id(),
                    items: lines(&[("hot", 1)]),
                    strategy: Strategy::Mutex.to_proto() as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
        }
    });
    let replies = futures::future::join_all(buyers).await;
    let elapsed = started.elapsed();
    let reserved = replies
        .iter()
        .filter(|r| outcome(r) == pb::ReserveOutcome::Reserved)
        .count();
    let t = app.truth("hot").await;
    eprintln!(
        "200 buyers on 2 replicas, 50 units, mutex: {reserved} reserved, {} promised in the database, {elapsed:?}",
        t.promised()
    );
    assert_eq!(reserved, 50);
    assert_eq!(t.promised(), 50);
    t.assert_consistent(50);
    replica.stop().await.unwrap();
    app.stop().await;
}
