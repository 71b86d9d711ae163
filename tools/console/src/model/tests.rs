use super::*;

const P: &str = "/shop";

fn kv(key: &str, value: &str, lease: i64, create_rev: i64) -> Kv {
    Kv {
        key: format!("{P}/{key}"),
        value: value.as_bytes().to_vec(),
        lease,
        create_rev,
        mod_rev: create_rev,
    }
}

#[test]
fn keys_are_classified_by_their_primitive() {
    let cases = [
        ("locks/sku/tea/694d", Primitive::Lock),
        (
            "elections/order/expire-reservations/694d",
            Primitive::Election,
        ),
        (
            "queues/payments/items/00001/00000000000000000001",
            Primitive::Queue,
        ),
        ("semaphores/provider/694d_17", Primitive::Semaphore),
        ("sales/s1/barrier", Primitive::Barrier),
        ("sales/s1/customers/alice", Primitive::Stm),
        ("stock/tea", Primitive::Stm),
        ("stm/holds/o1", Primitive::Stm),
        ("rwlocks/catalog/read/694d", Primitive::Rwlock),
        ("something/else", Primitive::Other),
    ];
    for (key, want) in cases {
        assert_eq!(classify(P, &format!("{P}/{key}")), want, "{key}");
    }
    // A prefix that merely starts the same is someone else's.
    assert_eq!(classify(P, "/shopping/locks/sku/tea/1"), Primitive::Other);
    assert_eq!(Primitive::parse("lock"), Some(Primitive::Lock));
    assert_eq!(Primitive::parse("locks"), None);
}

#[test]
fn a_lock_is_held_by_the_oldest_key_and_the_rest_wait_in_create_revision_order() {
    let kvs = [
        kv("locks/sku/tea/c", "", 0xc, 30),
        kv("locks/sku/tea/a", "", 0xa, 10),
        kv("locks/sku/tea/b", "", 0xb, 20),
        kv("locks/sku/milk/a", "", 0xa, 40),
        // The replica of lease a, from its election key.
        kv("elections/order/expire-reservations/a", "order-1", 0xa, 5),
    ];
    let ttl = HashMap::from([(0xa, 7), (0xb, 3)]);
    let model = build(P, &kvs, &ttl);
    assert_eq!(model.locks.len(), 2);
    let tea = model.locks.iter().find(|l| l.name == "sku/tea").unwrap();
    assert_eq!(tea.sku.as_deref(), Some("tea"));
    let holder = tea.holder.as_ref().unwrap();
    assert_eq!((holder.lease.as_str(), holder.revision), ("a", 10));
    assert_eq!(holder.replica.as_deref(), Some("order-1"));
    assert_eq!(holder.ttl, Some(7));
    let line: Vec<(&str, i64, Option<i64>)> = tea
        .waiters
        .iter()
        .map(|w| (w.lease.as_str(), w.revision, w.ttl))
        .collect();
    assert_eq!(line, vec![("b", 20, Some(3)), ("c", 30, None)]);
}

#[test]
fn an_election_is_led_by_its_oldest_candidate_whose_value_is_the_progress() {
    let kvs = [
        kv(
            "elections/inventory/reconcile-stock/b",
            "inventory-2",
            0xb,
            12,
        ),
        kv(
            "elections/inventory/reconcile-stock/a",
            r#"{"replica":"inventory-1","pass":3,"token":11}"#,
            0xa,
            11,
        ),
    ];
    let model = build(P, &kvs, &HashMap::new());
    let e = &model.elections[0];
    assert_eq!(e.name, "inventory/reconcile-stock");
    let leader = e.leader.as_ref().unwrap();
    assert_eq!(leader.contender.replica.as_deref(), Some("inventory-1"));
    assert_eq!(leader.contender.revision, 11);
    assert!(leader.value.contains("\"pass\":3"));
    assert_eq!(e.candidates.len(), 1);
    assert_eq!(
        e.candidates[0].contender.replica.as_deref(),
        Some("inventory-2")
    );
}

#[test]
fn leader_history_records_changes_once() {
    let mut history = LeaderHistory::default();
    let at = |value: &str, lease: i64, rev: i64| {
        build(
            P,
            &[kv(
                &format!("elections/order/job/{lease:x}"),
                value,
                lease,
                rev,
            )],
            &HashMap::new(),
        )
        .elections
    };
    assert_eq!(history.observe(&at("order-1", 1, 10), 1).len(), 1);
    assert!(history.observe(&at("order-1", 1, 10), 2).is_empty());
    let moved = history.observe(&at("order-2", 2, 20), 3);
    assert_eq!(moved[0].leader.as_deref(), Some("order-2"));
    assert_eq!(moved[0].revision, Some(20));
    let gone = history.observe(&[], 4);
    assert_eq!(gone[0].leader, None);
    assert_eq!(history.changes().count(), 3);
}

/// An item as coord's work queue stores it: a header line, then the payload.
fn item(id: &str, attempts: u32, payload: &str) -> String {
    format!("coord-wq/1 {{\"id\":\"{id}\",\"attempts\":{attempts},\"enqueued_ms\":1}}\n{payload}")
}

#[test]
fn the_work_queue_shows_depth_per_priority_claims_and_dead_letters() {
    let payment = r#"{"order_id":"o1","customer_id":"alice","tier":"gold","amount_minor":1000}"#;
    let slot = |p: u32, s: u64| format!("{p:05}/{s:020}");
    let kvs = [
        kv(
            &format!("queues/payments/items/{}", slot(1, 1)),
            &item("o1", 1, payment),
            0,
            5,
        ),
        kv(
            &format!("queues/payments/items/{}", slot(2, 2)),
            &item("o2", 0, "{}"),
            0,
            6,
        ),
        kv(
            &format!("queues/payments/items/{}", slot(0, 3)),
            &item("o3", 0, "{}"),
            0,
            7,
        ),
        kv(
            &format!("queues/payments/claims/{}", slot(1, 1)),
            r#"{"lease":"a","attempt":1,"claimed_ms":5}"#,
            0xa,
            8,
        ),
        kv(
            &format!("queues/payments/dead/{}", slot(2, 0)),
            &item("o0", 10, "{}"),
            0,
            4,
        ),
        kv(
            &format!("queues/payments/items/{}", slot(2, 9)),
            "garbage",
            0,
            9,
        ),
        kv("queues/payments/seq", "9", 0, 2),
        kv("queues/payments/ids/o1", "…", 0, 5),
        kv("elections/payment/settle-payments/a", "payment-1", 0xa, 1),
    ];
    let model = build(P, &kvs, &HashMap::new());
    let q = &model.queues[0];
    assert_eq!(q.name, "payments");
    assert_eq!(q.total, 3);
    assert_eq!(q.depth, BTreeMap::from([(0, 1), (1, 1), (2, 1)]));
    assert_eq!(q.claimed, 1);
    assert_eq!(q.malformed, 1);
    let ids: Vec<&str> = q.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["o3", "o1", "o2"],
        "delivery order: priority, then sequence"
    );
    let claimed = &q.items[1];
    assert_eq!(claimed.customer.as_deref(), Some("alice"));
    assert_eq!(claimed.tier.as_deref(), Some("gold"));
    let claim = claimed.claim.as_ref().unwrap();
    assert_eq!(
        (
            claim.lease.as_str(),
            claim.replica.as_deref(),
            claim.attempt
        ),
        ("a", Some("payment-1"), 1)
    );
    assert_eq!(q.dead.len(), 1);
    assert_eq!(q.dead[0].attempts, 10);
}

#[test]
fn semaphores_sales_and_stm_keys() {
    let kvs = [
        kv("semaphores/provider/a_1", "2", 0xa, 10),
        kv("semaphores/provider/b_2", "2", 0xb, 11),
        kv("semaphores/provider/c_3", "2", 0xc, 12),
        kv("sales/s1/barrier", "", 0, 3),
        kv("sales/s2/customers/alice", "2", 0, 4),
        kv("stock/tea", "3:41", 0, 5),
        kv("stm/holds/o1", "{}", 0, 6),
        kv("rwlocks/catalog/read/a", "", 0xa, 7),
    ];
    let model = build(P, &kvs, &HashMap::new());
    let sem = &model.semaphores[0];
    assert_eq!((sem.name.as_str(), sem.permits), ("provider", 2));
    assert_eq!(
        sem.holders
            .iter()
            .map(|h| h.lease.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(sem.waiters[0].lease, "c");
    assert!(model.sales[0].barrier_closed);
    assert_eq!(model.sales[0].barrier_revision, Some(3));
    assert!(!model.sales[1].barrier_closed);
    assert_eq!(model.sales[1].stm_customers["alice"], 2);
    assert_eq!(
        model.stm_counters[0],
        StmCounter {
            sku: "tea".into(),
            epoch: 3,
            available: 41
        }
    );
    assert_eq!(model.stm_holds, 1);
    assert_eq!(model.rwlocks["catalog"], 1);
}

#[test]
fn replicas_come_from_plain_or_proclaimed_values() {
    assert_eq!(replica_of("order-1").as_deref(), Some("order-1"));
    assert_eq!(
        replica_of(r#"{"replica":"order-2","pass":1}"#).as_deref(),
        Some("order-2")
    );
    assert_eq!(replica_of(r#"{"pass":1}"#), None);
    assert_eq!(replica_of(""), None);
}
