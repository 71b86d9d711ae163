//! STM: isolation levels against real concurrency, the anomaly ReadCommitted allows,
//! aborts, bounded retries, prefetch, compaction and cancellation.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::etcd_client::Client;
use coord::stm::{self, Abort, Isolation, Options};
use coord::Error;
use rand::Rng;
use tokio::sync::Barrier;

use crate::common::{client, read_counter, unique};

/// Puts `key` = `value` out of band (as another process would) and returns the revision.
async fn put(client: &Client, key: &str, value: impl Into<Vec<u8>>) -> i64 {
    let resp = client.clone().put(key, value, None).await.expect("put");
    resp.header().expect("header").revision()
}

async fn exists(client: &Client, key: &str) -> bool {
    !client
        .clone()
        .get(key, None)
        .await
        .expect("get")
        .kvs()
        .is_empty()
}

/// Quick retries so the conflict-heavy tests stay fast.
fn fast() -> Options {
    Options::new().backoff(Duration::from_millis(1), Duration::from_millis(20))
}

/// 8 workers each make 25 random transfers between 10 accounts; a transfer that would
/// overdraw is skipped (aborted). The total must stay 1000 and no account may go
/// negative — both break if isolation fails.
async fn bank(isolation: Isolation) {
    let c = client().await;
    let bank = unique("stm-bank");
    let accounts: Vec<String> = (0..10).map(|i| format!("{bank}/acct-{i}")).collect();
    for a in &accounts {
        put(&c, a, "100").await;
    }
    let accounts = Arc::new(accounts);
    let mut workers = Vec::new();
    for _ in 0..8 {
        let accounts = accounts.clone();
        workers.push(tokio::spawn(async move {
            let c = client().await;
            let (mut committed, mut skipped) = (0, 0);
            for _ in 0..25 {
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..10);
                    let to = (from + rng.random_range(1..10)) % 10;
                    (from, to, rng.random_range(1..=60i64))
                };
                let (from, to) = (&accounts[from], &accounts[to]);
                let result = stm::run(&c, Options::new().isolation(isolation), |tx| async move {
                    let balances = tx.get_many(&[from, to]).await?;
                    let parse = |v: &Option<Vec<u8>>| -> i64 {
                        String::from_utf8_lossy(v.as_deref().expect("account exists"))
                            .parse()
                            .expect("number")
                    };
                    let (a, b) = (parse(&balances[0]), parse(&balances[1]));
                    if a < amount {
                        return stm::abort("insufficient funds");
                    }
                    tx.put(from, (a - amount).to_string());
                    tx.put(to, (b + amount).to_string());
                    Ok(())
                })
                .await;
                match result {
                    Ok(_) => committed += 1,
                    Err(Abort::Reason("insufficient funds")) => skipped += 1,
                    Err(e) => panic!("transfer failed: {e}"),
                }
            }
            (committed, skipped)
        }));
    }
    let mut committed = 0;
    for w in workers {
        committed += w.await.unwrap().0;
    }
    assert!(committed > 0, "some transfers must go through");
    let mut total = 0;
    for a in accounts.iter() {
        let balance = read_counter(&c, a).await;
        assert!(balance >= 0, "{a} went negative: {balance}");
        total += balance;
    }
    assert_eq!(total, 1000, "money was created or destroyed");
}

#[tokio::test]
async fn bank_transfers_keep_the_total_under_serializable_snapshot() {
    bank(Isolation::SerializableSnapshot).await;
}

#[tokio::test]
async fn bank_transfers_keep_the_total_under_serializable() {
    bank(Isolation::Serializable).await;
}

/// Two closures increment one counter; on their first attempt both read before
/// either commits (a barrier between read and write). Returns the final counter.
async fn two_increments_that_both_read_first(isolation: Isolation) -> (i64, Vec<u32>) {
    let c = client().await;
    let counter = unique("stm-race");
    put(&c, &counter, "0").await;
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (barrier, counter) = (barrier.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let c = client().await;
            let counter = counter.as_str();
            let barrier = &barrier;
            stm::run(&c, fast().isolation(isolation), |tx| async move {
                let n: i64 = tx.get_as(counter).await?.unwrap_or(0);
                if tx.attempt() == 1 {
                    barrier.wait().await; // both have read 0
                }
                tx.put(counter, (n + 1).to_string());
                Ok::<_, Error>(())
            })
            .await
            .expect("increment")
            .attempts
        }));
    }
    let mut attempts = Vec::new();
    for t in tasks {
        attempts.push(t.await.unwrap());
    }
    attempts.sort();
    (read_counter(&c, &counter).await, attempts)
}

#[tokio::test]
async fn read_committed_loses_an_update_that_serializable_snapshot_keeps() {
    // ReadCommitted checks nothing: both commit their "0 + 1", one increment is lost.
    let (value, attempts) = two_increments_that_both_read_first(Isolation::ReadCommitted).await;
    assert_eq!(value, 1, "ReadCommitted: lost update expected");
    assert_eq!(attempts, vec![1, 1]);

    // Same orchestration, default isolation: the second commit sees that the counter
    // changed since it was read, runs again on the new value, and both count.
    let (value, attempts) =
        two_increments_that_both_read_first(Isolation::SerializableSnapshot).await;
    assert_eq!(value, 2, "SerializableSnapshot must not lose the update");
    assert_eq!(attempts, vec![1, 2]);
}

/// Reads `a`, then (first attempt only) moves 10 from `a` to `b` out of band, then reads
/// `b`. Returns what the closure saw on each attempt and the attempts used.
async fn transfer_between_reads(isolation: Isolation) -> (Vec<(i64, i64)>, u32) {
    let c = client().await;
    let base = unique("stm-view");
    let (a, b) = (format!("{base}/a"), format!("{base}/b"));
    put(&c, &a, "50").await;
    put(&c, &b, "50").await;
    let seen = std::sync::Mutex::new(Vec::new());
    let (a, b, c2, seen_ref) = (a.as_str(), b.as_str(), &c, &seen);
    let done = stm::run(&c, fast().isolation(isolation), |tx| async move {
        let x: i64 = tx.get_as(a).await?.unwrap();
        if tx.attempt() == 1 {
            // One atomic transfer by someone else: the sum stays 100.
            let transfer = coord::Txn::new().then(coord::Ops::new().put(a, "40").put(b, "60"));
            transfer.commit(c2).await?;
        }
        let y: i64 = tx.get_as(b).await?.unwrap();
        // Reading `a` again answers from memory, whatever happened since.
        assert_eq!(tx.get_as::<i64>(a).await?.unwrap(), x);
        seen_ref.lock().unwrap().push((x, y));
        tx.put(format!("{a}-sum"), (x + y).to_string());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let seen = seen.into_inner().unwrap();
    (seen, done.attempts)
}

#[tokio::test]
async fn repeatable_reads_may_show_a_torn_view_but_never_commit_it() {
    let (seen, attempts) = transfer_between_reads(Isolation::RepeatableReads).await;
    // First attempt: old `a`, new `b` — a state that never existed (sum 110)...
    assert_eq!(seen[0], (50, 60));
    // ... but `a` changed after it was read, so that attempt did not commit.
    assert_eq!(attempts, 2);
    assert_eq!(seen[1], (40, 60));
}

#[tokio::test]
async fn serializable_reads_one_snapshot_even_while_others_commit() {
    for isolation in [Isolation::Serializable, Isolation::SerializableSnapshot] {
        let (seen, attempts) = transfer_between_reads(isolation).await;
        // First attempt: both values from the snapshot of the first read.
        assert_eq!(seen[0], (50, 50), "{isolation:?}");
        assert_eq!(attempts, 2, "{isolation:?}");
        assert_eq!(seen[1], (40, 60), "{isolation:?}");
    }
}

/// Reads `a`; on the first attempt someone else writes `b`; then the closure writes `b`
/// without having read it.
async fn blind_write_after_foreign_write(isolation: Isolation) -> (u32, String) {
    let c = client().await;
    let base = unique("stm-blind");
    let (a, b) = (format!("{base}/a"), format!("{base}/b"));
    put(&c, &a, "x").await;
    let (a, b, c2) = (a.as_str(), b.as_str(), &c);
    let done = stm::run(&c, fast().isolation(isolation), |tx| async move {
        tx.get(a).await?;
        if tx.attempt() == 1 {
            put(c2, b, "theirs").await;
        }
        tx.put(b, "mine");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let value = c
        .clone()
        .get(b, None)
        .await
        .unwrap()
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_owned())
        .unwrap();
    (done.attempts, value)
}

#[tokio::test]
async fn serializable_snapshot_also_checks_blind_writes() {
    // `b` was written by someone else after our snapshot: first attempt conflicts.
    assert_eq!(
        blind_write_after_foreign_write(Isolation::SerializableSnapshot).await,
        (2, "mine".to_owned())
    );
    // Serializable checks reads only: the blind write just overwrites.
    assert_eq!(
        blind_write_after_foreign_write(Isolation::Serializable).await,
        (1, "mine".to_owned())
    );
}

#[tokio::test]
async fn prefetched_keys_are_read_before_the_closure_and_checked_at_commit() {
    let c = client().await;
    let base = unique("stm-prefetch");
    let (a, b, out) = (
        format!("{base}/a"),
        format!("{base}/b"),
        format!("{base}/out"),
    );
    put(&c, &a, "1").await;
    put(&c, &b, "2").await;
    let (a_ref, out_ref, c2) = (a.as_str(), out.as_str(), &c);
    // RepeatableReads reads each key when first asked; only the prefetch explains
    // the closure seeing `a` as it was before the closure changed it out of band.
    let seen = std::sync::Mutex::new(Vec::new());
    let seen_ref = &seen;
    let done = stm::run(
        &c,
        fast()
            .isolation(Isolation::RepeatableReads)
            .prefetch([&a, &b]),
        |tx| async move {
            if tx.attempt() == 1 {
                put(c2, a_ref, "changed").await;
            }
            let a_now = tx.get_string(a_ref).await?;
            seen_ref.lock().unwrap().push(a_now);
            tx.put(out_ref, "done");
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen[0].as_deref(),
        Some("1"),
        "prefetched before the change"
    );
    // `a` is in the read set (prefetched), so its change made attempt 1 conflict.
    assert_eq!(done.attempts, 2);
    assert_eq!(seen[1].as_deref(), Some("changed"));
    assert!(exists(&c, &out).await);

    // A prefetched key the closure never reads is still checked.
    let (b_ref, out2) = (b.as_str(), format!("{base}/out2"));
    let out2_ref = out2.as_str();
    let done = stm::run(&c, fast().prefetch([&b]), |tx| async move {
        if tx.attempt() == 1 {
            put(c2, b_ref, "3").await;
        }
        tx.put(out2_ref, "x");
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(done.attempts, 2);
}

#[derive(Debug, PartialEq)]
enum ShopError {
    OutOfStock { left: i64 },
    Coord(String),
}

impl From<Error> for ShopError {
    fn from(e: Error) -> ShopError {
        ShopError::Coord(e.to_string())
    }
}

#[tokio::test]
async fn a_closure_error_aborts_and_commits_nothing() {
    let c = client().await;
    let base = unique("stm-abort");
    let (stock, order) = (format!("{base}/stock"), format!("{base}/order"));
    put(&c, &stock, "1").await;
    let (stock_ref, order_ref) = (stock.as_str(), order.as_str());
    let runs = AtomicU32::new(0);
    let runs_ref = &runs;

    // A domain outcome through the caller's own error type.
    let result = stm::run(&c, Options::new(), |tx| async move {
        runs_ref.fetch_add(1, Ordering::SeqCst);
        let left: i64 = tx.get_as(stock_ref).await?.unwrap_or(0);
        tx.put(order_ref, "placed"); // buffered, must never land
        if left < 2 {
            return Err(ShopError::OutOfStock { left });
        }
        tx.put(stock_ref, (left - 2).to_string());
        Ok(())
    })
    .await;
    assert_eq!(result, Err(ShopError::OutOfStock { left: 1 }));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "an abort is not retried");
    assert!(!exists(&c, &order).await);
    assert_eq!(read_counter(&c, &stock).await, 1);

    // The same with the ready-made Abort type.
    let result = stm::run(&c, Options::new(), |tx| async move {
        tx.put(order_ref, "placed");
        stm::abort::<(), _>("customer limit exceeded")
    })
    .await;
    assert!(matches!(
        result,
        Err(Abort::Reason("customer limit exceeded"))
    ));
    assert!(!exists(&c, &order).await);
}

#[tokio::test]
async fn endless_conflicts_end_in_too_many_conflicts_and_write_nothing() {
    let c = client().await;
    let base = unique("stm-conflicts");
    let (hot, out) = (format!("{base}/hot"), format!("{base}/out"));
    put(&c, &hot, "0").await;
    let (hot_ref, out_ref, c2) = (hot.as_str(), out.as_str(), &c);
    let runs = AtomicU32::new(0);
    let runs_ref = &runs;
    let result = stm::run(&c, fast().max_attempts(4), |tx| async move {
        runs_ref.fetch_add(1, Ordering::SeqCst);
        let n: i64 = tx.get_as(hot_ref).await?.unwrap();
        // Someone else always changes it between our read and our commit.
        put(c2, hot_ref, (n + 100).to_string()).await;
        tx.put(out_ref, "never");
        Ok::<_, Error>(())
    })
    .await;
    assert!(
        matches!(result, Err(Error::TooManyConflicts(4))),
        "{result:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert!(!exists(&c, &out).await);
}

#[tokio::test]
async fn rev_is_the_mod_revision_read_and_the_commit_revision_is_returned() {
    let c = client().await;
    let base = unique("stm-rev");
    let (k, missing) = (format!("{base}/k"), format!("{base}/missing"));
    let written_at = put(&c, &k, "v").await;
    let (k_ref, missing_ref) = (k.as_str(), missing.as_str());
    let done = stm::run(&c, Options::new(), |tx| async move {
        let before = tx.rev(k_ref).await?;
        tx.put(k_ref, "v2");
        // Still the stored key's revision: our own write has none yet.
        let after_put = tx.rev(k_ref).await?;
        Ok::<_, Error>((before, after_put, tx.rev(missing_ref).await?))
    })
    .await
    .unwrap();
    assert_eq!(done.value, (written_at, written_at, 0));
    let kv = c.clone().get(k.as_str(), None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.mod_revision(), done.revision);
    assert_eq!(kv.value(), b"v2");
}

#[tokio::test]
async fn reads_see_this_transactions_own_puts_and_deletes() {
    let c = client().await;
    let base = unique("stm-own-writes");
    let (gone, new) = (format!("{base}/gone"), format!("{base}/new"));
    put(&c, &gone, "here").await;
    let (gone_ref, new_ref) = (gone.as_str(), new.as_str());
    let done = stm::run(&c, Options::new(), |tx| async move {
        assert_eq!(tx.get_string(gone_ref).await?.as_deref(), Some("here"));
        tx.del(gone_ref);
        tx.put(new_ref, "fresh");
        let many = tx.get_many(&[gone_ref, new_ref]).await?;
        Ok::<_, Error>((tx.get(gone_ref).await?, many))
    })
    .await
    .unwrap();
    assert_eq!(done.value.0, None, "deleted in this transaction");
    assert_eq!(done.value.1, vec![None, Some(b"fresh".to_vec())]);
    assert!(!exists(&c, &gone).await);
    assert!(exists(&c, &new).await);
}

#[tokio::test]
async fn dropping_run_mid_closure_writes_nothing() {
    let c = client().await;
    let key = unique("stm-cancel");
    let key_ref = key.as_str();
    let result = coord::timeout(
        Duration::from_millis(200),
        stm::run(&c, Options::new(), |tx| async move {
            tx.put(key_ref, "partial");
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert!(matches!(result, Err(Error::Timeout(_))));
    assert!(!exists(&c, &key).await);
}

#[tokio::test]
async fn a_compacted_snapshot_restarts_the_attempt() {
    let c = client().await;
    let base = unique("stm-compact");
    let (a, b) = (format!("{base}/a"), format!("{base}/b"));
    put(&c, &a, "1").await;
    put(&c, &b, "1").await;
    let (a_ref, b_ref, c2) = (a.as_str(), b.as_str(), &c);
    let done = stm::run(&c, fast(), |tx| async move {
        tx.get(a_ref).await?; // pins the snapshot
        if tx.attempt() == 1 {
            // Move on and compact history past the snapshot.
            let rev = put(c2, b_ref, "2").await;
            c2.clone().compact(rev, None).await.expect("compact");
        }
        // On attempt 1 this read at the snapshot fails with Compacted; `?` returns it.
        let b: i64 = tx.get_as(b_ref).await?.unwrap();
        Ok::<_, Error>(b)
    })
    .await
    .unwrap();
    assert_eq!(done.attempts, 2);
    assert_eq!(done.value, 2);
}

#[tokio::test]
async fn bad_input_is_invalid_argument() {
    let c = client().await;
    let r = stm::run(&c, Options::new().max_attempts(0), |_tx| async {
        Ok::<_, Error>(())
    })
    .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))));

    let r = stm::run(&c, Options::new(), |tx| async move {
        tx.get("").await?;
        Ok::<_, Error>(())
    })
    .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))));

    // An empty key in a write is caught before anything is sent.
    let other = unique("stm-empty");
    let other_ref = other.as_str();
    let r = stm::run(&c, Options::new(), |tx| async move {
        tx.put(other_ref, "x");
        tx.put("", "x");
        Ok::<_, Error>(())
    })
    .await;
    assert!(matches!(r, Err(Error::InvalidArgument(_))));
    assert!(!exists(&c, &other).await);
}

#[tokio::test]
async fn a_handle_kept_past_its_attempt_is_inert() {
    let c = client().await;
    let key = unique("stm-stale");
    let done = stm::run(&c, Options::new(), |tx| async move { Ok::<_, Error>(tx) })
        .await
        .unwrap();
    let stale = done.value;
    assert!(matches!(
        stale.get(&key).await,
        Err(Error::InvalidArgument(_))
    ));
    stale.put(&key, "late"); // discarded
    assert!(!exists(&c, &key).await);
}
