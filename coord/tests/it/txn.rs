//! Txn builder: comparison helpers, both branches, typed results, fencing with a lock.

use coord::txn::{
    create_rev_is, key_exists, key_missing, mod_rev_is, unchanged_since, value_is, Ops, Txn,
};
use coord::{Error, Mutex};

use crate::common::{client, session, unique};

#[tokio::test]
async fn the_then_branch_runs_when_every_compare_holds() {
    let c = client().await;
    let base = unique("txn-then");
    let (stock, name) = (format!("{base}/stock"), format!("{base}/name"));
    c.clone().put(name.as_str(), "widget", None).await.unwrap();

    let created = Txn::new()
        .when(key_missing(stock.as_str()))
        .when(value_is(name.as_str(), "widget"))
        .then(Ops::new().put(stock.as_str(), "10"))
        .then(Ops::new().get(stock.as_str()).get(name.as_str()))
        .or_else(Ops::new().get(stock.as_str()))
        .commit(&c)
        .await
        .unwrap();
    assert!(created.succeeded());
    assert_eq!(created.parse::<i64>(&stock).unwrap(), Some(10));
    assert_eq!(created.value_str(&name).unwrap(), Some("widget"));
    let kv = created.kv(&stock).unwrap().expect("stock exists");
    assert_eq!(kv.mod_revision(), created.revision());
    assert_eq!(kv.create_revision(), created.revision());

    // Now the key exists: the same transaction takes the else branch, which only reads.
    let again = Txn::new()
        .when(key_missing(stock.as_str()))
        .then(Ops::new().put(stock.as_str(), "999"))
        .or_else(Ops::new().get(stock.as_str()))
        .commit(&c)
        .await
        .unwrap();
    assert!(!again.succeeded());
    assert_eq!(again.parse::<i64>(&stock).unwrap(), Some(10));
    assert_eq!(again.responses().len(), 1);
}

#[tokio::test]
async fn revision_compares_track_writes_and_incarnations() {
    let c = client().await;
    let key = unique("txn-revs");
    let first = c.clone().put(key.as_str(), "1", None).await.unwrap();
    let rev1 = first.header().unwrap().revision();

    let check = |compare| {
        let c = c.clone();
        async move {
            Txn::new()
                .when(compare)
                .commit(&c)
                .await
                .unwrap()
                .succeeded()
        }
    };
    assert!(check(key_exists(key.as_str())).await);
    assert!(check(mod_rev_is(key.as_str(), rev1)).await);
    assert!(check(create_rev_is(key.as_str(), rev1)).await);
    assert!(check(unchanged_since(key.as_str(), rev1)).await);

    // A second write moves the mod revision, not the create revision.
    c.clone().put(key.as_str(), "2", None).await.unwrap();
    assert!(!check(mod_rev_is(key.as_str(), rev1)).await);
    assert!(!check(unchanged_since(key.as_str(), rev1)).await);
    assert!(check(create_rev_is(key.as_str(), rev1)).await);

    // Delete and re-create: a new incarnation.
    let deleted = Txn::new()
        .then(Ops::new().delete(key.as_str()))
        .commit(&c)
        .await
        .unwrap();
    assert_eq!(deleted.deleted(&key).unwrap(), 1);
    assert!(check(key_missing(key.as_str())).await);
    assert!(check(mod_rev_is(key.as_str(), 0)).await);
    c.clone().put(key.as_str(), "3", None).await.unwrap();
    assert!(!check(create_rev_is(key.as_str(), rev1)).await);
}

#[tokio::test]
async fn prefix_reads_and_deletes_are_found_by_prefix() {
    let c = client().await;
    let base = unique("txn-prefix");
    let dir = format!("{base}/items/");
    let outcome = Txn::new()
        .then(
            Ops::new()
                .put(format!("{dir}a"), "1")
                .put(format!("{dir}b"), "2"),
        )
        .commit(&c)
        .await
        .unwrap();
    assert!(outcome.succeeded());

    let read = Txn::new()
        .then(Ops::new().get_prefix(dir.as_str()))
        .commit(&c)
        .await
        .unwrap();
    let keys: Vec<&str> = read
        .kvs(&dir)
        .unwrap()
        .iter()
        .map(|kv| kv.key_str().unwrap())
        .collect();
    assert_eq!(keys, vec![format!("{dir}a"), format!("{dir}b")]);

    let removed = Txn::new()
        .then(Ops::new().delete_prefix(dir.as_str()))
        .commit(&c)
        .await
        .unwrap();
    assert_eq!(removed.deleted(&dir).unwrap(), 2);
}

#[tokio::test]
async fn asking_for_a_result_the_branch_did_not_read_is_an_error() {
    let c = client().await;
    let key = unique("txn-typed");
    let outcome = Txn::new()
        .when(key_exists(key.as_str())) // false: key absent
        .then(Ops::new().get(key.as_str()))
        .or_else(
            Ops::new()
                .put(key.as_str(), "not a number")
                .get(key.as_str()),
        )
        .commit(&c)
        .await
        .unwrap();
    assert!(!outcome.succeeded());
    assert!(matches!(
        outcome.value("some/other/key"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        outcome.deleted(&key),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(outcome.value(&key).unwrap(), Some(&b"not a number"[..]));
    assert!(matches!(
        outcome.parse::<i64>(&key),
        Err(Error::Malformed { .. })
    ));

    // A read of a missing key is Ok(None), not an error.
    let missing = Txn::new()
        .then(Ops::new().get(format!("{key}-absent")))
        .commit(&c)
        .await
        .unwrap();
    assert_eq!(missing.value(format!("{key}-absent")).unwrap(), None);

    // Empty keys are refused before anything is sent.
    let empty = Txn::new().then(Ops::new().put("", "x")).commit(&c).await;
    assert!(matches!(empty, Err(Error::InvalidArgument(_))));
}

#[tokio::test]
async fn helpers_combine_with_a_mutex_guard_for_fenced_writes() {
    let s = session(10).await;
    let c = s.client();
    let name = unique("txn-fenced");
    let (data, lock) = (format!("{name}-data"), Mutex::new(&s, &name).unwrap());

    let guard = lock.lock().await.unwrap();
    let write = |guard_cmp| {
        Txn::new()
            .when(guard_cmp)
            .when(key_missing(data.as_str()))
            .then(Ops::new().put_with_lease(data.as_str(), "owned", s.lease()))
            .or_else(Ops::new().get(data.as_str()))
            .commit(&c)
    };
    let outcome = write(guard.is_owner()).await.unwrap();
    assert!(outcome.succeeded());

    // After the lock is gone, the same fenced write is refused.
    let stale = guard.is_owner();
    guard.unlock().await.unwrap();
    c.clone().delete(data.as_str(), None).await.unwrap();
    let outcome = write(stale).await.unwrap();
    assert!(!outcome.succeeded());
    assert_eq!(outcome.value(&data).unwrap(), None);
    s.close().await.unwrap();
}
