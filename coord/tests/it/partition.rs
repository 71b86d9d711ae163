//! Waiting across a partition, on a three-member etcd cluster of the test's own (see
//! `own_etcd`): a waiter whose watch sits on a member that is cut off from the other
//! two must not hang. coord's clients require a leader (`hasleader`), so the cut-off
//! member cancels the watch ("no leader") and the waiter carries on at a member that
//! has one.

use std::time::Duration;

use coord::etcd_client::Client;
use coord::{EtcdConfig, Mutex, Session};

use crate::common::{keys_under, unique};
use crate::own_etcd::{OwnCluster, ONE_AT_A_TIME};

#[tokio::test]
async fn a_lock_waiter_whose_watch_is_on_a_cut_off_member_still_gets_the_lock() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let cluster = OwnCluster::start("partition").await;
    let (cut_off, healthy) = (&cluster.members[0], &cluster.members[1]);
    let name = unique("partition-lock");

    // The holder talks to a member that stays with the majority.
    let holder_client = Client::connect([healthy.endpoint()], None).await.unwrap();
    let holder = Session::new(holder_client.clone()).await.unwrap();
    let guard = Mutex::new(&holder, &name).unwrap().lock().await.unwrap();

    // The waiter connects (as coord's configuration does) to the member about to be
    // cut off only, so its wait's watch is opened there.
    let waiter_client = EtcdConfig::new(&cut_off.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let waiter = Session::new(waiter_client.clone()).await.unwrap();
    let waiting = {
        let waiter = waiter.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let guard = Mutex::new(&waiter, &name).unwrap().lock().await?;
            guard.unlock().await
        })
    };
    // The moment: the waiter's key is queued and its watch is live on that member.
    for _ in 0..200 {
        if keys_under(&holder_client, &name).await.len() == 2 && cut_off.watchers().await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(keys_under(&holder_client, &name).await.len(), 2);
    assert!(cut_off.watchers().await >= 1, "the waiter's watch is there");

    // The waiter's client may now also reach the majority (as a client configured with
    // every member would), and the member it watches on is cut off.
    waiter_client
        .add_endpoint(healthy.endpoint())
        .await
        .unwrap();
    cluster.isolate(0).await;
    cluster.wait_for_leader(cut_off, false).await;
    eprintln!("member 0 is cut off and knows no leader; releasing the lock");

    // The release commits on the majority; the cut-off member never sees it.
    guard.unlock().await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), waiting).await;
    let Ok(joined) = outcome else {
        panic!("the waiter hung: its watch stayed on the member cut off from the cluster");
    };
    joined
        .unwrap()
        .expect("the waiter took and released the lock");
    holder.close().await.unwrap();
}
