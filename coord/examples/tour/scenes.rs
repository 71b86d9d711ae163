//! The scenes of the key tour: for each primitive, a typical moment (a holder and its
//! waiters, a leader and its candidates, a half-entered barrier…) built on a real etcd
//! under `/tour/<scene>`, and the `etcdctl` commands that show its keys.
//!
//! Shared by the `tour` example (which builds a scene and keeps it for you to look at)
//! and `coord/tests/it/docs.rs` (which builds every scene, runs the commands and checks
//! that the output printed in docs/primitives/*.md is still what etcd shows).

use std::any::Any;
use std::time::Duration;

use anyhow::Context as _;
use coord::etcd_client::{Client, DeleteOptions, GetOptions};
use coord::stm::{self, Options};
use coord::txn::{key_missing, mod_rev_is, Ops, Txn};
use coord::{
    Barrier, DoubleBarrier, Election, Mutex, PriorityQueue, Queue, RwMutex, Semaphore, Session,
    WorkQueue,
};
use tokio::task::JoinHandle;

/// Every scene, in the reading order of docs/primitives/README.md. The name is also the
/// page (`docs/primitives/<name>.md`) whose `<!-- tour: <name> -->` block shows it.
pub const SCENES: &[&str] = &[
    "session",
    "mutex",
    "election",
    "rwmutex",
    "semaphore",
    "barrier",
    "double-barrier",
    "queue",
    "work-queue",
    "txn",
    "stm",
];

/// A scene standing in etcd: what keeps its keys alive, and the commands that show them.
pub struct Scene {
    /// `/tour/<scene>`: every key of the scene is under it.
    pub prefix: String,
    /// The `etcdctl` commands to look at the scene, as a person would type them.
    pub commands: Vec<String>,
    sessions: Vec<Session>,
    /// Guards, leaderships, permits: held until the scene ends.
    held: Vec<Box<dyn Any + Send>>,
    /// Waiters blocked in `lock()`, `campaign()`, `acquire()`…
    waiters: Vec<JoinHandle<()>>,
    client: Client,
}

impl Scene {
    fn new(client: &Client, name: &str) -> Scene {
        Scene {
            prefix: format!("/tour/{name}"),
            commands: Vec::new(),
            sessions: Vec::new(),
            held: Vec::new(),
            waiters: Vec::new(),
            client: client.clone(),
        }
    }

    /// A new session (one per simulated process), kept until the scene ends.
    async fn session(&mut self) -> anyhow::Result<Session> {
        let session = Session::builder(self.client.clone())
            .ttl(10)
            .build()
            .await?;
        self.sessions.push(session.clone());
        Ok(session)
    }

    fn hold(&mut self, thing: impl Any + Send) {
        self.held.push(Box::new(thing));
    }

    /// Starts a waiter (`lock()`, `campaign()`, …, kept by the scene once it returns)
    /// and returns once the waiter has written its key (the scene's key count reached
    /// `keys`), so waiters queue in the order they are started.
    async fn wait_in_line<F>(&mut self, keys: usize, waiter: F) -> anyhow::Result<()>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send,
    {
        self.waiters.push(tokio::spawn(async move {
            let _held = waiter.await;
            std::future::pending::<()>().await
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.key_count().await? < keys {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "a waiter under {} did not write its key",
                self.prefix
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn key_count(&self) -> anyhow::Result<usize> {
        let resp = self
            .client
            .clone()
            .get(
                self.prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(resp.count() as usize)
    }

    fn show(&mut self, command: String) {
        self.commands.push(command);
    }

    fn show_keys(&mut self) {
        let prefix = self.prefix.clone();
        self.show(format!("etcdctl get --prefix --sort-by=CREATE {prefix}"));
    }

    /// Ends the scene: waiters stop, sessions close (their keys go with their leases)
    /// and whatever is left under the prefix is deleted.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        for waiter in self.waiters.drain(..) {
            waiter.abort();
            let _ = waiter.await;
        }
        self.held.clear();
        for session in self.sessions.drain(..) {
            session.close().await?;
        }
        clear(&self.client, &self.prefix).await
    }
}

/// Deletes every key under `prefix` (a scene left over from an interrupted run).
pub async fn clear(client: &Client, prefix: &str) -> anyhow::Result<()> {
    client
        .clone()
        .delete(prefix, Some(DeleteOptions::new().with_prefix()))
        .await?;
    Ok(())
}

/// Builds scene `name` under `/tour/<name>` (clearing what a previous run left there).
pub async fn build(client: &Client, name: &str) -> anyhow::Result<Scene> {
    let mut scene = Scene::new(client, name);
    clear(client, &scene.prefix).await?;
    let p = scene.prefix.clone();
    // Boxed: each scene's future is large, and tests poll on a small stack.
    match name {
        "session" => Box::pin(session(&mut scene, &p)).await?,
        "mutex" => Box::pin(mutex(&mut scene, &p)).await?,
        "election" => Box::pin(election(&mut scene, &p)).await?,
        "rwmutex" => Box::pin(rwmutex(&mut scene, &p)).await?,
        "semaphore" => Box::pin(semaphore(&mut scene, &p)).await?,
        "barrier" => Box::pin(barrier(&mut scene, &p)).await?,
        "double-barrier" => Box::pin(double_barrier(&mut scene, &p)).await?,
        "queue" => Box::pin(queue(&mut scene, &p)).await?,
        "work-queue" => Box::pin(work_queue(&mut scene, &p)).await?,
        "txn" => Box::pin(txn(&mut scene, &p)).await?,
        "stm" => Box::pin(stm(&mut scene, &p)).await?,
        other => anyhow::bail!("no scene {other:?}; the scenes are {}", SCENES.join(", ")),
    }
    Ok(scene)
}

async fn session(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    // One process: its lock and its leadership both hang off its one lease.
    let s = scene.session().await?;
    let guard = Mutex::new(&s, &format!("{p}/locks/sku/melon"))?
        .lock()
        .await?;
    let leadership = Election::new(&s, &format!("{p}/elections/reconcile-stock"))?
        .campaign("replica-a")
        .await?;
    scene.hold((guard, leadership));
    scene.show_keys();
    scene.show(format!("etcdctl lease timetolive {:x} --keys", s.lease()));

    Ok(())
}

async fn mutex(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let name = format!("{p}/sku/melon");
    let holder = scene.session().await?;
    let guard = Mutex::new(&holder, &name)?.lock().await?;
    scene.hold(guard);
    for line in 2..=3 {
        let lock = Mutex::new(&scene.session().await?, &name)?;
        scene
            .wait_in_line(line, async move { lock.lock().await })
            .await?;
    }
    scene.show_keys();

    Ok(())
}

async fn election(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let name = format!("{p}/jobs/reconcile-stock");
    let leader = Election::new(&scene.session().await?, &name)?
        .campaign("replica-a")
        .await?;
    scene.hold(leader);
    for (line, replica) in [(2, "replica-b"), (3, "replica-c")] {
        let election = Election::new(&scene.session().await?, &name)?;
        scene
            .wait_in_line(line, async move { election.campaign(replica).await })
            .await?;
    }
    scene.show_keys();

    Ok(())
}

async fn rwmutex(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let name = format!("{p}/catalog");
    for _ in 0..2 {
        let reader = RwMutex::new(&scene.session().await?, &name)?
            .read_lock()
            .await?;
        scene.hold(reader);
    }
    let writer = RwMutex::new(&scene.session().await?, &name)?;
    scene
        .wait_in_line(3, async move { writer.write_lock().await })
        .await?;
    let late_reader = RwMutex::new(&scene.session().await?, &name)?;
    scene
        .wait_in_line(4, async move { late_reader.read_lock().await })
        .await?;
    scene.show_keys();

    Ok(())
}

async fn semaphore(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let name = format!("{p}/provider");
    for _ in 0..2 {
        let permit = Semaphore::new(&scene.session().await?, &name, 2)?
            .acquire()
            .await?;
        scene.hold(permit);
    }
    let third = Semaphore::new(&scene.session().await?, &name, 2)?;
    scene
        .wait_in_line(3, async move { third.acquire().await })
        .await?;
    scene.show_keys();

    Ok(())
}

async fn barrier(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let client = &scene.client.clone();
    let name = format!("{p}/sale/s-1");
    let coordinator = Barrier::new(client.clone(), &name)?;
    coordinator.hold().await?;
    for _ in 0..3 {
        let waiter = Barrier::new(client.clone(), &name)?;
        // Waiters write nothing: they watch the barrier key.
        scene.waiters.push(tokio::spawn(async move {
            let _ = waiter.wait().await;
        }));
    }
    scene.show_keys();

    Ok(())
}

async fn double_barrier(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let name = format!("{p}/phase");
    for entered in 1..=2 {
        let barrier = DoubleBarrier::new(&scene.session().await?, &name, 3)?;
        scene
            .wait_in_line(entered, async move { barrier.enter().await })
            .await?;
    }
    scene.show_keys();

    Ok(())
}

async fn queue(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let client = &scene.client.clone();
    let queue = Queue::new(client.clone(), &format!("{p}/jobs"))?;
    for item in ["pick order-1", "pick order-2", "pick order-3"] {
        queue.enqueue(item).await?;
    }
    let by_priority = PriorityQueue::new(client.clone(), &format!("{p}/by-priority"))?;
    for (item, priority) in [
        ("email order-1", 5),
        ("refund order-2", 0),
        ("email order-3", 5),
    ] {
        by_priority.enqueue(item, priority).await?;
    }
    scene.show(format!("etcdctl get --prefix --sort-by=CREATE {p}/jobs"));
    scene.show(format!("etcdctl get --prefix {p}/by-priority"));

    Ok(())
}

async fn work_queue(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let client = &scene.client.clone();
    let queue = WorkQueue::new(client.clone(), &format!("{p}/payments"))?;
    for (order, amount, tier) in [("order-1", 42, 0), ("order-2", 7, 1), ("order-3", 13, 0)] {
        let payload = format!(r#"{{"order":"{order}","amount":{amount}}}"#);
        queue
            .enqueue_with_id(order, payload.as_bytes(), tier)
            .await?;
    }
    let consumer = scene.session().await?;
    let claimed = queue.claim(&consumer).await?;
    scene.hold(claimed);
    // In key order: claims, ids, items by priority, the sequence counter.
    scene.show(format!("etcdctl get --prefix {p}"));

    Ok(())
}

async fn txn(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let client = &scene.client.clone();
    let stock = format!("{p}/stock/melon");
    // Create the counter unless it exists.
    Txn::new()
        .when(key_missing(stock.as_str()))
        .then(Ops::new().put(stock.as_str(), "10"))
        .commit(client)
        .await?;
    // Take 3 for order o-1 only if nobody changed the counter since we read it,
    // and record the order in the same transaction: both writes or neither.
    let read = Txn::new()
        .then(Ops::new().get(stock.as_str()))
        .commit(client)
        .await?;
    let kv = read.kv(&stock)?.context("the counter was just created")?;
    let available: i64 = kv.value_str()?.parse()?;
    let taken = Txn::new()
        .when(mod_rev_is(stock.as_str(), kv.mod_revision()))
        .then(
            Ops::new()
                .put(stock.as_str(), (available - 3).to_string())
                .put(format!("{p}/orders/o-1"), "melon x3"),
        )
        .commit(client)
        .await?;
    anyhow::ensure!(taken.succeeded(), "nobody else writes under {p}");
    scene.show_keys();

    Ok(())
}

async fn stm(scene: &mut Scene, p: &str) -> anyhow::Result<()> {
    let client = &scene.client.clone();
    for (account, balance) in [("alice", 100), ("bob", 50), ("carol", 0)] {
        client
            .clone()
            .put(format!("{p}/accounts/{account}"), balance.to_string(), None)
            .await?;
    }
    for (from, to, amount) in [("alice", "bob", 30), ("bob", "carol", 20)] {
        let (from, to) = (format!("{p}/accounts/{from}"), format!("{p}/accounts/{to}"));
        stm::run(client, Options::new(), |tx| {
            let (from, to) = (from.clone(), to.clone());
            async move {
                let payer: i64 = tx.get_as(&from).await?.unwrap_or(0);
                let payee: i64 = tx.get_as(&to).await?.unwrap_or(0);
                tx.put(&from, (payer - amount).to_string());
                tx.put(&to, (payee + amount).to_string());
                Ok::<_, coord::Error>(())
            }
        })
        .await?;
    }
    scene.show(format!("etcdctl get --prefix {p}/accounts"));

    Ok(())
}

/// Ways to run `etcdctl`, tried in order until one is found: a program and the
/// arguments that go before etcdctl's own (e.g. `docker run … etcdctl`).
pub type Etcdctl = Vec<(String, Vec<String>)>;

/// `$ETCDCTL`, else the `etcdctl` on `PATH` (`scripts/install-deps.sh --env` puts one
/// there). The docs test adds the etcd image, run with Docker, as a last resort.
pub fn local_etcdctl() -> Etcdctl {
    let mut candidates: Etcdctl = Vec::new();
    if let Ok(path) = std::env::var("ETCDCTL") {
        candidates.push((path, Vec::new()));
    }
    candidates.push(("etcdctl".into(), Vec::new()));
    candidates
}

/// Runs one of a scene's commands with the first of `candidates` that exists, against
/// `endpoints`, and returns what it printed.
pub async fn etcdctl(
    candidates: &Etcdctl,
    endpoints: &str,
    command: &str,
) -> anyhow::Result<String> {
    let args: Vec<&str> = command
        .strip_prefix("etcdctl ")
        .with_context(|| format!("not an etcdctl command: {command}"))?
        .split_whitespace()
        .collect();
    let endpoints = format!("--endpoints={endpoints}");
    for (program, prefix_args) in candidates {
        let output = tokio::process::Command::new(program)
            .args(prefix_args)
            .arg(&endpoints)
            .args(&args)
            // etcdctl refuses a flag that an environment variable also sets.
            .env_remove("ETCDCTL_ENDPOINTS")
            .output()
            .await;
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("running {program}")),
            Ok(out) if out.status.success() => {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => anyhow::bail!(
                "{program} {command}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    anyhow::bail!(
        "no etcdctl (tried {}): set ETCDCTL or put it on PATH (eval \"$(scripts/install-deps.sh --env)\")",
        candidates.iter().map(|(program, _)| program.as_str()).collect::<Vec<_>>().join(", ")
    )
}

/// What a person sees: each command after `$ `, then its output (`etcdctl_candidates`:
/// see [`etcdctl`]).
pub async fn transcript(
    etcdctl_candidates: &Etcdctl,
    endpoints: &str,
    scene: &Scene,
) -> anyhow::Result<String> {
    let mut out = String::new();
    for command in &scene.commands {
        out.push_str("$ ");
        out.push_str(command);
        out.push('\n');
        out.push_str(&etcdctl(etcdctl_candidates, endpoints, command).await?);
    }
    Ok(out)
}
