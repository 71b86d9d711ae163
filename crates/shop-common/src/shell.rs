//! The shell every service process runs in: its Postgres pool (database created and
//! migrated), its one etcd session, its gRPC server (health, reflection, limits,
//! `/metrics`), and the way it stops.
//!
//! A service's `Application` is a [`ServiceShell`] plus its own handlers and
//! background work:
//! - `Application::build(settings)`: [`ServiceShell::build`], wire the handlers on
//!   [`ServiceShell::pool`] and [`ServiceShell::session`], add the gRPC service to [`ServiceShell::server`];
//! - `local_addr()` / `metrics_addr()`: the shell's;
//! - `run_until_stopped(shutdown)`: [`ServiceShell::run_until_stopped`] with the
//!   service's background tasks (leader-elected jobs, queue workers), started through
//!   [`BackgroundTasks`].
//!
//! Stopping is the same for every service: when `shutdown` resolves the tasks are told
//! to stop (a leading replica resigns), requests in flight drain, the tasks get a grace
//! period, the etcd session is revoked (no lock outlives the process) and the pool is
//! closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coord::LeaderContext;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{CommonSettings, JobSettings, ServiceName};
use crate::coordination::SharedSession;
use crate::db::connect_and_migrate;
use crate::jobs::{spawn_leader_job, ElectionDirectory};
use crate::server::GrpcServer;

/// A built service process: database migrated, port bound, not yet serving. etcd is
/// not contacted yet (see [`SharedSession`]).
pub struct ServiceShell {
    service: ServiceName,
    server: GrpcServer,
    pool: PgPool,
    session: Arc<SharedSession>,
    jobs: JobSettings,
}

impl ServiceShell {
    /// Connects to Postgres (creating the database and applying `migrator`), prepares
    /// the etcd session, binds the gRPC port with the configured limits and, if
    /// configured, the `/metrics` port.
    pub async fn build(
        common: &CommonSettings,
        migrator: &'static Migrator,
    ) -> anyhow::Result<ServiceShell> {
        let pool = connect_and_migrate(&common.database, migrator).await?;
        let session = Arc::new(SharedSession::new(common.etcd.clone()));
        let mut server = GrpcServer::bind(common.grpc_addr)?.with_limits(common.limits);
        server.serve_metrics(common.metrics_addr)?;
        server.require_internal_token(common.internal_token.clone());
        server.probe_dependencies(
            dependency_probe(pool.clone(), session.clone()),
            common.health_probe_interval,
        );
        Ok(ServiceShell {
            service: common.service,
            server,
            pool,
            session,
            jobs: common.jobs.clone(),
        })
    }

    /// The service's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The process's one etcd session.
    pub fn session(&self) -> &Arc<SharedSession> {
        &self.session
    }

    /// This replica's name and the pace of its leader-elected jobs.
    pub fn jobs(&self) -> &JobSettings {
        &self.jobs
    }

    /// `ListLeaders` for the service's leader-elected `jobs`, read from the elections.
    pub fn leaders(&self, jobs: Vec<&'static str>) -> Arc<ElectionDirectory> {
        Arc::new(ElectionDirectory::new(
            self.session.clone(),
            self.service,
            jobs,
        ))
    }

    /// The largest request message the service's own gRPC service must accept: build
    /// it with `.max_decoding_message_size(shell.max_message_bytes())`.
    pub fn max_message_bytes(&self) -> usize {
        self.server.limits().max_message_bytes
    }

    /// The gRPC server, to add the service's own gRPC service to
    /// ([`GrpcServer::add_service`]).
    pub fn server(&mut self) -> &mut GrpcServer {
        &mut self.server
    }

    /// The gRPC address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/metrics` is served (`METRICS_ADDR`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// Serves, with the background tasks `tasks` starts, until `shutdown` resolves;
    /// then stops the tasks (waiting at most `grace` for them after the requests have
    /// drained), revokes the etcd session and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
        grace: Duration,
        tasks: impl FnOnce(BackgroundTasks) -> Vec<JoinHandle<()>>,
    ) -> anyhow::Result<()> {
        let ServiceShell {
            service,
            server,
            pool,
            session,
            jobs,
        } = self;
        let background = |stop| {
            tasks(BackgroundTasks {
                session: session.clone(),
                service,
                replica: jobs.replica_id.clone(),
                stop,
            })
        };
        let served = server.run_with_tasks(shutdown, background, grace).await;
        session.close().await;
        pool.close().await;
        served
    }
}

/// Health's probe of a service's two dependencies: a `SELECT 1` on its pool and a
/// linearizable read in etcd (which needs a quorum, as the service's locks do).
fn dependency_probe(pool: PgPool, session: Arc<SharedSession>) -> crate::server::DependencyProbe {
    Box::new(move || {
        let (pool, session) = (pool.clone(), session.clone());
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map_err(|e| format!("database: {e}"))?;
            let mut etcd = session.client().await.map_err(|e| format!("etcd: {e}"))?;
            let key = format!("{}/health", session.prefix());
            etcd.get(
                key,
                Some(coord::etcd_client::GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| format!("etcd: {e}"))?;
            Ok(())
        })
    })
}

/// What a service's background tasks start from: the session, and a stop signal that
/// turns true when the service shuts down.
pub struct BackgroundTasks {
    session: Arc<SharedSession>,
    service: ServiceName,
    replica: String,
    stop: watch::Receiver<bool>,
}

impl BackgroundTasks {
    /// The process's one etcd session.
    pub fn session(&self) -> &Arc<SharedSession> {
        &self.session
    }

    /// Turns true when the service shuts down.
    pub fn stop(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Runs `job` whenever this replica leads the service's election for `name` (see
    /// [`spawn_leader_job`]), until the service shuts down.
    pub fn leader_job<F, Fut>(&self, name: &'static str, job: F) -> JoinHandle<()>
    where
        F: FnMut(LeaderContext) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        spawn_leader_job(
            self.session.clone(),
            self.service,
            name,
            self.replica.clone(),
            self.stop.clone(),
            job,
        )
    }
}
