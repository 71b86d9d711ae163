//! The workloads, each the same as the Go anchor's workload of the same name
//! (`/work/shared/anchors/gomutex/main.go`), plus two coord-only ones.

use std::future::Future;
use std::pin::Pin;

use coord::{
    stm, DoubleBarrier, Election, Mutex, PriorityQueue, Queue, RwMutex, Semaphore, Session,
    WorkQueue,
};

/// What every operation of one run shares: the run's unique key prefix and its shape.
pub struct Job {
    pub key: String,
    pub workers: usize,
    pub per_worker: usize,
}

/// One operation of a workload, run by a worker on its own session; `index` numbers
/// the operation across all workers (`worker * per_worker + i`, as the anchor does).
pub type Op = for<'a> fn(&'a Session, &'a Job, usize) -> BoxedOp<'a>;
pub type BoxedOp<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// How many workers run a workload and how many operations each runs.
#[derive(Clone, Copy)]
pub enum Shape {
    /// One worker, `n` operations.
    Single,
    /// `--workers` workers, `n / workers * 2` operations each.
    Contended,
    /// `min(--workers, 4)` workers, `n / 20` operations (barrier rounds) each.
    Barrier,
}

impl Shape {
    /// (workers, operations per worker) for `-n` and `--workers`.
    pub fn size(self, n: usize, workers: usize) -> (usize, usize) {
        match self {
            Shape::Single => (1, n),
            Shape::Contended => (workers, n / workers * 2),
            Shape::Barrier => (workers.min(4), n / 20),
        }
    }
}

/// A named workload: what one operation does and how many run it.
pub struct Workload {
    pub name: &'static str,
    pub shape: Shape,
    pub op: Op,
}

/// The workloads, in the anchor's order, then the coord-only ones. A new workload is
/// one more entry here and one function below.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "put_sequential_floor",
        shape: Shape::Single,
        op: put_floor,
    },
    Workload {
        name: "put_concurrent",
        shape: Shape::Contended,
        op: put_concurrent,
    },
    Workload {
        name: "mutex_uncontended",
        shape: Shape::Single,
        op: mutex_uncontended,
    },
    Workload {
        name: "mutex_contended",
        shape: Shape::Contended,
        op: mutex_contended,
    },
    Workload {
        name: "mutex_spread",
        shape: Shape::Contended,
        op: mutex_spread,
    },
    Workload {
        name: "election_campaign_resign",
        shape: Shape::Single,
        op: election_campaign_resign,
    },
    Workload {
        name: "stm_counter_contended",
        shape: Shape::Contended,
        op: stm_counter_contended,
    },
    Workload {
        name: "rwmutex_read_heavy",
        shape: Shape::Contended,
        op: rwmutex_read_heavy,
    },
    Workload {
        name: "queue_roundtrip",
        shape: Shape::Contended,
        op: queue_roundtrip,
    },
    Workload {
        name: "priority_queue_roundtrip",
        shape: Shape::Contended,
        op: priority_queue_roundtrip,
    },
    Workload {
        name: "double_barrier_round",
        shape: Shape::Barrier,
        op: double_barrier_round,
    },
    // coord only: the Go client has no counterpart.
    Workload {
        name: "work_queue_roundtrip",
        shape: Shape::Contended,
        op: work_queue_roundtrip,
    },
    Workload {
        name: "semaphore_contended",
        shape: Shape::Contended,
        op: semaphore_contended,
    },
];

/// The floor: one plain put, the cheapest write etcd can commit.
fn put_floor<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let key = &job.key;
        session
            .client()
            .put(format!("{key}/floor"), "x", None)
            .await?;
        Ok(())
    })
}

/// Every worker puts its own keys at once: how many writes one etcd commits per second
/// when many clients write (etcd batches them into fewer raft entries and fsyncs).
fn put_concurrent<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let key = format!("{}/pc/{index}", job.key);
        session.client().put(key, "x", None).await?;
        Ok(())
    })
}

/// Lock and unlock a name nobody else uses.
fn mutex_uncontended<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(lock_cycle(session, format!("{}/m1", job.key)))
}

/// Lock and unlock a name every worker uses.
fn mutex_contended<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(lock_cycle(session, format!("{}/m2", job.key)))
}

/// Every worker locks and unlocks its own name: many SKUs' locks at once, how many lock
/// cycles one etcd serves when no two contend.
fn mutex_spread<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    let per_worker = job.per_worker.max(1);
    Box::pin(lock_cycle(
        session,
        format!("{}/ms/{}", job.key, index / per_worker),
    ))
}

async fn lock_cycle(session: &Session, name: String) -> anyhow::Result<()> {
    let guard = Mutex::new(session, &name)?.lock().await?;
    guard.unlock().await?;
    Ok(())
}

/// Win an election nobody else runs in, then resign.
fn election_campaign_resign<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let election = Election::new(session, &format!("{}/e1", job.key))?;
        let mut leadership = election.campaign("v").await?;
        leadership.resign().await?;
        Ok(())
    })
}

/// One increment of a shared counter in an STM transaction (every worker, one key).
fn stm_counter_contended<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let counter = format!("{}/ctr", job.key);
        let counter = counter.as_str();
        // Go's STM retries a conflicting transaction without limit; coord's stops after
        // 30 attempts by default. Raised here so that an unlucky operation under this
        // much contention does not end the run. Isolation and back-off are the defaults
        // (SerializableSnapshot, as Go's default).
        let options = stm::Options::new().max_attempts(10_000);
        stm::run(&session.client(), options, |tx| async move {
            let value: i64 = tx.get_as(counter).await?.unwrap_or(0);
            tx.put(counter, (value + 1).to_string());
            Ok::<_, coord::Error>(())
        })
        .await?;
        Ok(())
    })
}

/// Every worker on one name; operation `i` takes the write lock when `i % 10 == 0`,
/// else the read lock, then releases it.
fn rwmutex_read_heavy<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let lock = RwMutex::new(session, &format!("{}/rw", job.key))?;
        let guard = if index.is_multiple_of(10) {
            lock.write_lock().await?
        } else {
            lock.read_lock().await?
        };
        guard.unlock().await?;
        Ok(())
    })
}

/// Every worker on one queue: enqueue one item, then dequeue one.
fn queue_roundtrip<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let queue = Queue::new(session.client(), &format!("{}/q", job.key))?;
        queue.enqueue(format!("item-{index}")).await?;
        queue.dequeue().await?;
        Ok(())
    })
}

/// As `queue_roundtrip`, with priority `index % 4`.
fn priority_queue_roundtrip<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let queue = PriorityQueue::new(session.client(), &format!("{}/pq", job.key))?;
        queue
            .enqueue(format!("item-{index}"), (index % 4) as u32)
            .await?;
        queue.dequeue().await?;
        Ok(())
    })
}

/// Round `k` (`index % per_worker`) of all workers on a fresh barrier `db/<k>` of
/// `workers` members: enter, then leave. A fresh key per round, as the anchor does for
/// Go's sake (its DoubleBarrier hangs when the same members re-enter one key at once);
/// coord's would also do on one key, where every guard reports its `round()`.
fn double_barrier_round<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let name = format!("{}/db/{}", job.key, index % job.per_worker);
        let barrier = DoubleBarrier::new(session, &name, job.workers)?;
        barrier.enter().await?.leave().await?;
        Ok(())
    })
}

/// coord only. Every worker on one work queue: enqueue one item, claim one, ack it.
fn work_queue_roundtrip<'a>(session: &'a Session, job: &'a Job, index: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let queue = WorkQueue::new(session.client(), &format!("{}/wq", job.key))?;
        queue.enqueue(format!("item-{index}").as_bytes(), 0).await?;
        queue.claim(session).await?.ack().await?;
        Ok(())
    })
}

/// coord only. Every worker on one semaphore of 2 permits: acquire, release.
fn semaphore_contended<'a>(session: &'a Session, job: &'a Job, _: usize) -> BoxedOp<'a> {
    Box::pin(async move {
        let semaphore = Semaphore::new(session, &format!("{}/sem", job.key), 2)?;
        semaphore.acquire().await?.release().await?;
        Ok(())
    })
}
