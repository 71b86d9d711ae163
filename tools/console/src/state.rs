//! What the console knows right now, shared by its feeders (etcd watch, database,
//! metrics) and its readers (the HTTP handlers), and the one place a snapshot of it is
//! put together for the page. Every change is pushed to the page as a server-sent
//! event: `watch` per etcd event as it arrives, `snapshot` (the whole picture) at most
//! four times a second and at least once a second.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::metrics::{Counters, Series};
use crate::model::{self, classify, relative, Kv, LeaderChange, LeaderHistory, Primitive};
use crate::stock::{SaleRow, StockRow};

/// Events kept for a page that connects (and for `/api/events/recent`).
pub const KEEP_EVENTS: usize = 1000;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a source answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// False when the console was not told where the source is.
    pub configured: bool,
    pub ok: bool,
    /// What failed, for the banner (empty when ok).
    pub message: String,
    /// Since when this state holds.
    pub since_ms: u64,
}

impl Health {
    fn new(configured: bool) -> Health {
        Health {
            configured,
            ok: false,
            message: if configured {
                "connecting…".into()
            } else {
                String::new()
            },
            since_ms: now_ms(),
        }
    }

    fn set(&mut self, ok: bool, message: String) {
        if self.ok != ok {
            self.since_ms = now_ms();
        }
        self.ok = ok;
        self.message = message;
    }
}

/// One etcd watch event, as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    pub revision: i64,
    /// `put` or `delete`.
    pub kind: &'static str,
    /// The key below the prefix.
    pub key: String,
    pub primitive: Primitive,
    /// The key's lease (hex), empty when none.
    pub lease: String,
    /// The start of the value, lossy UTF-8.
    pub value: String,
    pub at_ms: u64,
}

/// A server-sent event, formatted once for every subscriber.
#[derive(Debug)]
pub struct Message {
    /// `Some` for watch events (the filter of `/api/events?primitive=`).
    pub primitive: Option<Primitive>,
    pub frame: Bytes,
}

fn frame(event: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).expect("console state serialises");
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    pub target: String,
    #[serde(flatten)]
    pub health: Health,
}

struct Inner {
    kvs: BTreeMap<String, Kv>,
    revision: i64,
    etcd: Health,
    ttl: HashMap<i64, i64>,
    events: VecDeque<WatchEvent>,
    history: LeaderHistory,
    database: Health,
    stock: Vec<StockRow>,
    sales: Vec<SaleRow>,
    targets: Vec<TargetHealth>,
    series: Series,
    dirty: bool,
}

/// The console's state; cheap to share (`Arc`).
pub struct Hub {
    prefix: String,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Message>>,
}

/// Everything the page draws, at one moment.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub prefix: String,
    pub revision: i64,
    pub now_ms: u64,
    pub etcd: Health,
    pub database: Health,
    pub metrics: Vec<TargetHealth>,
    pub model: model::Model,
    pub stock: Vec<StockView>,
    pub sales: Vec<SaleView>,
    pub history: Vec<LeaderChange>,
    pub series: Vec<crate::metrics::Point>,
}

/// A SKU: its database row, the verdict, and its lock and stm counter from etcd.
#[derive(Debug, Serialize)]
pub struct StockView {
    #[serde(flatten)]
    pub row: StockRow,
    pub conservation: crate::stock::Conservation,
    pub lock: Option<model::LockView>,
    pub stm_available: Option<i64>,
}

/// A sale: its barrier (etcd) and its customers (database, and stm's etcd counters).
#[derive(Debug, Serialize)]
pub struct SaleView {
    pub sale: String,
    pub barrier_closed: bool,
    pub barrier_revision: Option<i64>,
    pub per_customer_limit: Option<i64>,
    pub open: Option<bool>,
    pub customers: Vec<crate::stock::CustomerUnits>,
    pub stm_customers: BTreeMap<String, i64>,
}

impl Hub {
    pub fn new(prefix: &str, database: bool, targets: &[String]) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(Hub {
            prefix: prefix.trim_end_matches('/').to_owned(),
            inner: Mutex::new(Inner {
                kvs: BTreeMap::new(),
                revision: 0,
                etcd: Health::new(true),
                ttl: HashMap::new(),
                events: VecDeque::new(),
                history: LeaderHistory::default(),
                database: Health::new(database),
                stock: Vec::new(),
                sales: Vec::new(),
                targets: targets
                    .iter()
                    .map(|t| TargetHealth {
                        target: t.clone(),
                        health: Health::new(true),
                    })
                    .collect(),
                series: Series::default(),
                dirty: true,
            }),
            tx,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Message>> {
        self.tx.subscribe()
    }

    fn send(&self, message: Message) {
        // No subscriber is fine: nobody is looking.
        let _ = self.tx.send(Arc::new(message));
    }

    /// Replaces the mirror with a fresh read of the prefix at `revision`.
    pub fn resync(&self, kvs: Vec<Kv>, revision: i64) {
        let mut inner = self.lock();
        inner.kvs = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        inner.revision = revision;
        inner.etcd.set(true, String::new());
        self.observe_leaders(&mut inner);
        inner.dirty = true;
    }

    /// Applies watch events (`Some(kv)`: put; `None`: delete of the key), in order.
    pub fn apply(&self, events: Vec<(String, Option<Kv>, i64)>) {
        let mut inner = self.lock();
        for (key, kv, revision) in events {
            let primitive = classify(&self.prefix, &key);
            let event = WatchEvent {
                revision,
                kind: if kv.is_some() { "put" } else { "delete" },
                key: relative(&self.prefix, &key).unwrap_or(&key).to_owned(),
                primitive,
                lease: kv
                    .as_ref()
                    .filter(|kv| kv.lease != 0)
                    .map(|kv| format!("{:x}", kv.lease))
                    .unwrap_or_default(),
                value: kv
                    .as_ref()
                    .map(|kv| {
                        String::from_utf8_lossy(&kv.value)
                            .chars()
                            .take(120)
                            .collect()
                    })
                    .unwrap_or_default(),
                at_ms: now_ms(),
            };
            match kv {
                Some(kv) => {
                    inner.kvs.insert(key, kv);
                }
                None => {
                    inner.kvs.remove(&key);
                }
            }
            inner.revision = inner.revision.max(revision);
            self.send(Message {
                primitive: Some(primitive),
                frame: frame("watch", &event),
            });
            inner.events.push_back(event);
            if inner.events.len() > KEEP_EVENTS {
                inner.events.pop_front();
            }
        }
        inner.etcd.set(true, String::new());
        self.observe_leaders(&mut inner);
        inner.dirty = true;
    }

    fn observe_leaders(&self, inner: &mut Inner) {
        // Only the election keys: this runs on every batch of watch events.
        let elections = format!("{}/elections/", self.prefix);
        let keys = inner
            .kvs
            .range(elections.clone()..)
            .take_while(|(key, _)| key.starts_with(&elections))
            .map(|(_, kv)| kv);
        let model = model::build(&self.prefix, keys, &inner.ttl);
        inner.history.observe(&model.elections, now_ms());
    }

    pub fn etcd_failed(&self, message: String) {
        let mut inner = self.lock();
        inner.etcd.set(false, message);
        inner.dirty = true;
    }

    /// The leases the model shows (locks, elections, semaphores, claims).
    pub fn leases(&self) -> Vec<i64> {
        let inner = self.lock();
        let mut leases: Vec<i64> = inner
            .kvs
            .values()
            .map(|kv| kv.lease)
            .filter(|l| *l != 0)
            .collect();
        leases.sort_unstable();
        leases.dedup();
        leases
    }

    pub fn set_ttls(&self, ttl: HashMap<i64, i64>) {
        let mut inner = self.lock();
        inner.ttl = ttl;
        inner.dirty = true;
    }

    pub fn set_database(&self, read: Result<(Vec<StockRow>, Vec<SaleRow>), String>) {
        let mut inner = self.lock();
        match read {
            Ok((stock, sales)) => {
                inner.stock = stock;
                inner.sales = sales;
                inner.database.set(true, String::new());
            }
            // The last rows stay on the page, under the banner.
            Err(message) => inner.database.set(false, message),
        }
        inner.dirty = true;
    }

    /// One scrape of every target: the counters of those that answered.
    pub fn record_metrics(&self, scrapes: Vec<Result<Counters, String>>) {
        let mut inner = self.lock();
        let mut sum = Counters::default();
        for (target, scrape) in inner.targets.iter_mut().zip(scrapes) {
            match scrape {
                Ok(c) => {
                    sum = sum + c;
                    target.health.set(true, String::new());
                }
                Err(e) => target.health.set(false, e),
            }
        }
        if inner.targets.iter().any(|t| t.health.ok) {
            inner.series.record(now_ms(), sum);
        }
        inner.dirty = true;
    }

    pub fn recent_events(&self, primitive: Option<Primitive>, limit: usize) -> Vec<WatchEvent> {
        let inner = self.lock();
        let matching: Vec<&WatchEvent> = inner
            .events
            .iter()
            .filter(|e| primitive.is_none_or(|p| e.primitive == p))
            .collect();
        matching[matching.len().saturating_sub(limit)..]
            .iter()
            .map(|e| (*e).clone())
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let model = model::build(&self.prefix, inner.kvs.values(), &inner.ttl);
        let stock = inner
            .stock
            .iter()
            .map(|row| StockView {
                conservation: row.conservation(),
                lock: model
                    .locks
                    .iter()
                    .find(|l| l.sku.as_deref() == Some(&row.sku))
                    .cloned(),
                stm_available: model
                    .stm_counters
                    .iter()
                    .find(|c| c.sku == row.sku)
                    .map(|c| c.available),
                row: row.clone(),
            })
            .collect();
        let mut sales: BTreeMap<String, SaleView> = BTreeMap::new();
        for keys in &model.sales {
            sales.insert(
                keys.sale.clone(),
                SaleView {
                    sale: keys.sale.clone(),
                    barrier_closed: keys.barrier_closed,
                    barrier_revision: keys.barrier_revision,
                    per_customer_limit: None,
                    open: None,
                    customers: Vec::new(),
                    stm_customers: keys.stm_customers.clone(),
                },
            );
        }
        for row in &inner.sales {
            let view = sales.entry(row.sale.clone()).or_insert_with(|| SaleView {
                sale: row.sale.clone(),
                barrier_closed: false,
                barrier_revision: None,
                per_customer_limit: None,
                open: None,
                customers: Vec::new(),
                stm_customers: BTreeMap::new(),
            });
            view.per_customer_limit = Some(row.per_customer_limit);
            view.open = Some(row.open);
            view.customers = row.customers.clone();
        }
        Snapshot {
            prefix: self.prefix.clone(),
            revision: inner.revision,
            now_ms: now_ms(),
            etcd: inner.etcd.clone(),
            database: inner.database.clone(),
            metrics: inner.targets.clone(),
            model,
            stock,
            sales: sales.into_values().collect(),
            history: inner.history.changes().cloned().collect(),
            series: inner.series.points(),
        }
    }

    /// The first frames a new page gets: the snapshot, then the recent events.
    pub fn opening_frames(&self, primitive: Option<Primitive>) -> Vec<Bytes> {
        let mut frames = vec![frame("snapshot", &self.snapshot())];
        frames.extend(
            self.recent_events(primitive, 200)
                .iter()
                .map(|e| frame("watch", e)),
        );
        frames
    }

    /// Pushes a snapshot when something changed (at most every 250 ms), and every
    /// second regardless (leases count down), until the hub is dropped elsewhere.
    pub async fn publish(self: Arc<Hub>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut quiet = 0u32;
        loop {
            tick.tick().await;
            let dirty = std::mem::take(&mut self.lock().dirty);
            quiet += 1;
            if (dirty || quiet >= 4) && self.tx.receiver_count() > 0 {
                quiet = 0;
                self.send(Message {
                    primitive: None,
                    frame: frame("snapshot", &self.snapshot()),
                });
            }
        }
    }
}
