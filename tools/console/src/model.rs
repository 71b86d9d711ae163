//! The console's domain logic, pure: etcd keys under the shop's prefix in, a model of
//! its locks, elections, queues, semaphores and sales out. No I/O here; the watcher
//! feeds it what it mirrored from etcd and the HTTP layer serialises what it returns.
//!
//! Layouts come from the primitives that write them (coord's Go-compatible lock and
//! election keys, `coord::work_queue`'s item and slot format, shop-common's payment
//! item) and from docs/architecture.md's key table:
//!
//! | key under `<prefix>/` | primitive |
//! |---|---|
//! | `locks/<name…>/<lease-hex>` | Mutex: the smallest create revision holds, the rest wait in that order |
//! | `elections/<service>/<job>/<lease-hex>` | Election: the smallest create revision leads; the value is its proclaimed progress |
//! | `queues/<name>/{items,claims,ids,seq,dead}/…` | WorkQueue |
//! | `semaphores/<name>/<lease-hex>_<nanos>` | Semaphore: value N, the N oldest keys hold a permit |
//! | `sales/<sale>/barrier`, `sales/<sale>/customers/<c>` | Barrier (present = closed), stm's per-customer units |
//! | `stock/<sku>`, `stm/holds/<order>` | STM counters and holds |
//! | `rwlocks/<name>/…` | RwMutex |

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

mod queue;
pub use queue::{Claim, QueueItem, QueueView};

/// One key as etcd stores it (what a range read or a watch event carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub lease: i64,
    pub create_rev: i64,
    pub mod_rev: i64,
}

/// Which primitive a key belongs to (the events timeline filters on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Primitive {
    Lock,
    Election,
    Queue,
    Semaphore,
    Barrier,
    Stm,
    Rwlock,
    Other,
}

impl Primitive {
    pub const ALL: [Primitive; 8] = [
        Primitive::Lock,
        Primitive::Election,
        Primitive::Queue,
        Primitive::Semaphore,
        Primitive::Barrier,
        Primitive::Stm,
        Primitive::Rwlock,
        Primitive::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Primitive::Lock => "lock",
            Primitive::Election => "election",
            Primitive::Queue => "queue",
            Primitive::Semaphore => "semaphore",
            Primitive::Barrier => "barrier",
            Primitive::Stm => "stm",
            Primitive::Rwlock => "rwlock",
            Primitive::Other => "other",
        }
    }

    /// The primitive named `name` (as [`Primitive::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Primitive> {
        Primitive::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// The key's path below the prefix (`locks/sku/tea/694d…`), or `None` outside it.
pub fn relative<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')
}

/// The primitive a key under `prefix` belongs to.
pub fn classify(prefix: &str, key: &str) -> Primitive {
    let Some(rel) = relative(prefix, key) else {
        return Primitive::Other;
    };
    let mut parts = rel.split('/');
    match (parts.next(), parts.nth(1)) {
        (Some("locks"), _) => Primitive::Lock,
        (Some("elections"), _) => Primitive::Election,
        (Some("queues"), _) => Primitive::Queue,
        (Some("semaphores"), _) => Primitive::Semaphore,
        (Some("rwlocks"), _) => Primitive::Rwlock,
        (Some("sales"), Some("barrier")) => Primitive::Barrier,
        (Some("sales"), Some("customers")) | (Some("stock"), _) | (Some("stm"), _) => {
            Primitive::Stm
        }
        _ => Primitive::Other,
    }
}

/// Who holds or waits: one session's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contender {
    /// The session's lease, hex (the last segment of a lock or election key).
    pub lease: String,
    /// The replica owning the lease, when one of its election keys names it.
    pub replica: Option<String>,
    /// The key's create revision: its place in line, and the holder's fencing token.
    pub revision: i64,
    /// Seconds the lease has left, when known.
    pub ttl: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockView {
    /// The lock's name below `locks/` (`sku/tea`).
    pub name: String,
    /// The SKU, for `sku/<sku>` locks (the inventory's `mutex` strategy).
    pub sku: Option<String>,
    pub holder: Option<Contender>,
    /// Waiters in create-revision order: the order they get the lock in.
    pub waiters: Vec<Contender>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    #[serde(flatten)]
    pub contender: Contender,
    /// The key's value: the replica id, then the leader's proclaimed progress.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionView {
    /// `<service>/<job>`.
    pub name: String,
    pub leader: Option<Candidate>,
    /// Campaigning, in line behind the leader.
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemaphoreView {
    pub name: String,
    /// N, as its keys state it (0 when none is present).
    pub permits: u64,
    pub holders: Vec<Contender>,
    pub waiters: Vec<Contender>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SaleKeys {
    pub sale: String,
    /// The barrier key exists: the sale is closed and its buyers wait.
    pub barrier_closed: bool,
    /// Create revision of the barrier key (when closed).
    pub barrier_revision: Option<i64>,
    /// Units per customer, as stm's etcd counters hold them.
    pub stm_customers: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StmCounter {
    pub sku: String,
    pub epoch: i64,
    pub available: i64,
}

/// What the shop's keys say, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    pub locks: Vec<LockView>,
    pub elections: Vec<ElectionView>,
    pub queues: Vec<QueueView>,
    pub semaphores: Vec<SemaphoreView>,
    pub sales: Vec<SaleKeys>,
    pub stm_counters: Vec<StmCounter>,
    pub stm_holds: u64,
    /// RwMutex names with the number of their keys (readers and writers in line).
    pub rwlocks: BTreeMap<String, u64>,
    pub other_keys: u64,
}

/// Splits `a/b/c` into (`a/b`, `c`).
fn dir_and_leaf(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

/// The replica named by an election value: the plain replica id a candidate campaigns
/// with, or the `replica` field of the progress a leader proclaims.
pub fn replica_of(value: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(map)) => map
            .get("replica")
            .and_then(|r| r.as_str())
            .map(String::from),
        Ok(serde_json::Value::String(s)) => Some(s),
        Ok(_) => None,
        Err(_) if !value.is_empty() => Some(value.to_owned()),
        Err(_) => None,
    }
}

/// Builds the model from every key under `prefix`. `ttl` gives a lease's seconds left
/// (leases not in it show none).
pub fn build<'a>(
    prefix: &str,
    kvs: impl IntoIterator<Item = &'a Kv>,
    ttl: &HashMap<i64, i64>,
) -> Model {
    let mut model = Model::default();
    // Grouped by directory first; sorted afterwards.
    let mut locks: BTreeMap<String, Vec<&Kv>> = BTreeMap::new();
    let mut elections: BTreeMap<String, Vec<&Kv>> = BTreeMap::new();
    let mut queues: BTreeMap<String, Vec<(&str, &Kv)>> = BTreeMap::new();
    let mut semaphores: BTreeMap<String, Vec<&Kv>> = BTreeMap::new();
    let mut sales: BTreeMap<String, SaleKeys> = BTreeMap::new();
    for kv in kvs {
        let Some(rel) = relative(prefix, &kv.key) else {
            continue;
        };
        let (head, rest) = rel.split_once('/').unwrap_or((rel, ""));
        match head {
            "locks" => match dir_and_leaf(rest) {
                Some((name, _)) => locks.entry(name.to_owned()).or_default().push(kv),
                None => model.other_keys += 1,
            },
            "elections" => match dir_and_leaf(rest) {
                Some((name, _)) => elections.entry(name.to_owned()).or_default().push(kv),
                None => model.other_keys += 1,
            },
            "queues" => match rest.split_once('/') {
                Some((name, inner)) => queues.entry(name.to_owned()).or_default().push((inner, kv)),
                None => model.other_keys += 1,
            },
            "semaphores" => match dir_and_leaf(rest) {
                Some((name, _)) => semaphores.entry(name.to_owned()).or_default().push(kv),
                None => model.other_keys += 1,
            },
            "rwlocks" => {
                let name = rest.split('/').next().unwrap_or(rest).to_owned();
                *model.rwlocks.entry(name).or_default() += 1;
            }
            "sales" => {
                let mut parts = rest.splitn(3, '/');
                let (sale, what, who) = (parts.next(), parts.next(), parts.next());
                match (sale, what, who) {
                    (Some(sale), Some("barrier"), None) => {
                        let keys = sale_entry(&mut sales, sale);
                        keys.barrier_closed = true;
                        keys.barrier_revision = Some(kv.create_rev);
                    }
                    (Some(sale), Some("customers"), Some(customer)) => {
                        let units = String::from_utf8_lossy(&kv.value)
                            .trim()
                            .parse()
                            .unwrap_or(0);
                        sale_entry(&mut sales, sale)
                            .stm_customers
                            .insert(customer.to_owned(), units);
                    }
                    _ => model.other_keys += 1,
                }
            }
            "stock" => {
                let value = String::from_utf8_lossy(&kv.value);
                match value.split_once(':') {
                    Some((epoch, available)) => model.stm_counters.push(StmCounter {
                        sku: rest.to_owned(),
                        epoch: epoch.parse().unwrap_or(0),
                        available: available.parse().unwrap_or(0),
                    }),
                    None => model.other_keys += 1,
                }
            }
            "stm" => model.stm_holds += 1,
            _ => model.other_keys += 1,
        }
    }

    // A lease's replica, from the values of its election keys.
    let replicas: HashMap<i64, String> = elections
        .values()
        .flatten()
        .filter(|kv| kv.lease != 0)
        .filter_map(|kv| Some((kv.lease, replica_of(&String::from_utf8_lossy(&kv.value))?)))
        .collect();
    let contender = |kv: &Kv| Contender {
        lease: leaf_lease(&kv.key),
        replica: replicas.get(&kv.lease).cloned(),
        revision: kv.create_rev,
        ttl: ttl.get(&kv.lease).copied(),
    };

    for (name, mut keys) in locks {
        keys.sort_by_key(|kv| kv.create_rev);
        let mut line = keys.into_iter().map(contender);
        model.locks.push(LockView {
            sku: name.strip_prefix("sku/").map(String::from),
            name,
            holder: line.next(),
            waiters: line.collect(),
        });
    }
    for (name, mut keys) in elections {
        keys.sort_by_key(|kv| kv.create_rev);
        let mut line = keys.into_iter().map(|kv| Candidate {
            contender: contender(kv),
            value: String::from_utf8_lossy(&kv.value).into_owned(),
        });
        model.elections.push(ElectionView {
            name,
            leader: line.next(),
            candidates: line.collect(),
        });
    }
    for (name, keys) in semaphores {
        let mut keys = keys;
        keys.sort_by_key(|kv| kv.create_rev);
        let permits = keys
            .iter()
            .find_map(|kv| String::from_utf8_lossy(&kv.value).trim().parse().ok())
            .unwrap_or(0u64);
        let mut line: Vec<Contender> = keys.into_iter().map(contender).collect();
        let waiters = line.split_off((permits as usize).min(line.len()));
        model.semaphores.push(SemaphoreView {
            name,
            permits,
            holders: line,
            waiters,
        });
    }
    for (name, keys) in queues {
        model.queues.push(queue::view(name, &keys, &replicas));
    }
    model.sales = sales.into_values().collect();
    model
}

fn sale_entry<'a>(sales: &'a mut BTreeMap<String, SaleKeys>, sale: &str) -> &'a mut SaleKeys {
    sales.entry(sale.to_owned()).or_insert_with(|| SaleKeys {
        sale: sale.to_owned(),
        barrier_closed: false,
        barrier_revision: None,
        stm_customers: BTreeMap::new(),
    })
}

/// The lease part of a session key: `694d7a1b2c3d` of `…/694d7a1b2c3d` (and of a
/// semaphore's `…/694d7a1b2c3d_<nanos>`).
fn leaf_lease(key: &str) -> String {
    let leaf = key.rsplit('/').next().unwrap_or(key);
    leaf.split('_').next().unwrap_or(leaf).to_owned()
}

/// A leader change the console saw: the timeline of who led each election when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderChange {
    pub election: String,
    /// The new leader's replica (or lease, when no replica is known); `None`: nobody leads.
    pub leader: Option<String>,
    pub revision: Option<i64>,
    pub at_ms: u64,
}

/// Remembers each election's leader and reports changes, newest last (bounded).
#[derive(Debug, Default)]
pub struct LeaderHistory {
    current: BTreeMap<String, Option<(String, i64)>>,
    changes: std::collections::VecDeque<LeaderChange>,
}

impl LeaderHistory {
    pub const KEEP: usize = 200;

    /// Compares `elections` with the leaders seen last; returns (and keeps) the changes.
    pub fn observe(&mut self, elections: &[ElectionView], at_ms: u64) -> Vec<LeaderChange> {
        let mut seen = BTreeMap::new();
        for e in elections {
            let leader = e.leader.as_ref().map(|l| {
                let who = l
                    .contender
                    .replica
                    .clone()
                    .unwrap_or_else(|| l.contender.lease.clone());
                (who, l.contender.revision)
            });
            seen.insert(e.name.clone(), leader);
        }
        // An election whose keys are all gone has no leader.
        for name in self.current.keys() {
            seen.entry(name.clone()).or_insert(None);
        }
        let mut changes = Vec::new();
        for (name, leader) in seen {
            let before = self.current.get(&name);
            if before != Some(&leader) && !(before.is_none() && leader.is_none()) {
                changes.push(LeaderChange {
                    election: name.clone(),
                    leader: leader.as_ref().map(|(who, _)| who.clone()),
                    revision: leader.as_ref().map(|(_, rev)| *rev),
                    at_ms,
                });
            }
            self.current.insert(name, leader);
        }
        for change in &changes {
            self.changes.push_back(change.clone());
            if self.changes.len() > Self::KEEP {
                self.changes.pop_front();
            }
        }
        changes
    }

    pub fn changes(&self) -> impl Iterator<Item = &LeaderChange> {
        self.changes.iter()
    }
}

#[cfg(test)]
mod tests;
