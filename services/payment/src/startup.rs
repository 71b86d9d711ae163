//! Settings and `Application` for the payment service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shop_common::config::{
    env_var, parse_or, parse_positive_or, CommonSettings, ConfigError, ServiceName,
};
use shop_common::payments::spawn_queue_gauges;
use shop_common::propagation::traced_channel;
use shop_common::ServiceShell;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_server::PaymentServiceServer;
use sqlx::migrate::Migrator;

use crate::grpc::PaymentApi;
use crate::provider::{ProviderSettings, SimulatedProvider};
use crate::repository::PaymentsDb;
use crate::settle::{self, SettleSettings};
use crate::worker::{spawn_workers, WorkerContext};

/// The payment database's migrations (`migrations/payment/`), embedded.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/payment");

/// Payment settings: the common ones plus
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `PAYMENT_WORKERS` | queue workers in this process | `4` |
/// | `PROVIDER_LATENCY_MS` | simulated provider's time per charge | `20` |
/// | `PROVIDER_FAILURE_RATE` | fraction of orders the provider declines (0.0–1.0) | `0.0` |
/// | `PROVIDER_SEED` | which orders are declined | `0` |
/// | `PROVIDER_CONCURRENCY` | charges in flight at once, across all replicas (coord Semaphore) | `4` |
/// | `PROVIDER_PERMIT_IDLE_MS` | how long an unused provider permit is kept for the next charge; `0` gives it back after every request | `250` |
/// | `SETTLE_AFTER_SECS` | how long a payment may stay PROCESSING, or final and unconfirmed, before `settle-payments` re-drives or reports it | `60` |
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub workers: usize,
    pub provider: ProviderSettings,
    /// How long a payment may stay unchanged before the settle job steps in.
    pub settle_after: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        let lookup = env_var;
        let failure_rate: f64 = parse_or(
            "PROVIDER_FAILURE_RATE",
            lookup("PROVIDER_FAILURE_RATE"),
            0.0,
        )?;
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(ConfigError(format!(
                "PROVIDER_FAILURE_RATE={failure_rate} must be between 0.0 and 1.0"
            )));
        }
        let concurrency: u32 = parse_or("PROVIDER_CONCURRENCY", lookup("PROVIDER_CONCURRENCY"), 4)?;
        if concurrency == 0 {
            return Err(ConfigError(
                "PROVIDER_CONCURRENCY must be at least 1".into(),
            ));
        }
        Ok(Settings {
            common: CommonSettings::from_env(ServiceName::Payment)?,
            workers: parse_positive_or("PAYMENT_WORKERS", lookup("PAYMENT_WORKERS"), 4)?,
            provider: ProviderSettings {
                latency: Duration::from_millis(parse_or(
                    "PROVIDER_LATENCY_MS",
                    lookup("PROVIDER_LATENCY_MS"),
                    20,
                )?),
                failure_rate,
                seed: parse_or("PROVIDER_SEED", lookup("PROVIDER_SEED"), 0)?,
                concurrency,
                permit_idle: Duration::from_millis(parse_or(
                    "PROVIDER_PERMIT_IDLE_MS",
                    lookup("PROVIDER_PERMIT_IDLE_MS"),
                    250,
                )?),
            },
            settle_after: Duration::from_secs(parse_positive_or(
                "SETTLE_AFTER_SECS",
                lookup("SETTLE_AFTER_SECS"),
                60,
            )?),
        })
    }

    /// Defaults for the given common settings (tests adjust fields afterwards).
    pub fn with_common(common: CommonSettings) -> Settings {
        Settings {
            common,
            workers: 4,
            provider: ProviderSettings {
                latency: Duration::from_millis(20),
                failure_rate: 0.0,
                seed: 0,
                concurrency: 4,
                permit_idle: Duration::from_millis(250),
            },
            settle_after: Duration::from_secs(60),
        }
    }
}

/// A built payment service: database migrated, port bound, workers and the settle
/// job not started yet.
pub struct Application {
    shell: ServiceShell,
    context: Arc<WorkerContext>,
    workers: usize,
    settle: SettleSettings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let mut shell = ServiceShell::build(&settings.common, &MIGRATOR).await?;
        let session = shell.session().clone();
        let db = PaymentsDb::new(shell.pool().clone());
        let orders = OrderServiceClient::new(
            traced_channel(
                &settings.common.peers.order,
                Duration::from_secs(2),
                Duration::from_secs(15),
            )?
            .authorized(settings.common.internal_token.clone()),
        );
        let provider = Arc::new(SimulatedProvider::new(
            shell.pool().clone(),
            settings.provider.clone(),
            session.clone(),
        ));
        let context = Arc::new(WorkerContext {
            session: session.clone(),
            db: db.clone(),
            provider,
            orders,
            token: settings.common.internal_token.clone(),
        });
        let api = PaymentApi::new(db, session, shell.leaders(vec![settle::JOB]));
        let max_message = shell.max_message_bytes();
        shell
            .server()
            .add_service(PaymentServiceServer::new(api).max_decoding_message_size(max_message))
            .await;
        tracing::info!(addr = %shell.local_addr(), workers = settings.workers, "payment service ready");
        Ok(Application {
            shell,
            context,
            workers: settings.workers,
            settle: SettleSettings {
                settle_after: settings.settle_after,
                interval: settings.common.jobs.interval,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shell.local_addr()
    }

    /// Where `/metrics` is served (`METRICS_ADDR`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shell.metrics_addr()
    }

    /// The provider (tests read its counters).
    pub fn provider(&self) -> Arc<SimulatedProvider> {
        self.context.provider.clone()
    }

    /// Serves, runs the workers, and runs the `settle-payments` job whenever this
    /// replica leads it, until `shutdown` resolves; then stops taking items, lets each
    /// worker finish the one it holds, and stops as every service does (see
    /// `ServiceShell`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            shell,
            context,
            workers,
            settle: settle_settings,
        } = self;
        let replica = shell.jobs().replica_id.clone();
        shell
            .run_until_stopped(shutdown, Duration::from_secs(10), |tasks| {
                let job_context = context.clone();
                // The queue gauges are sampled at the jobs' pace (JOB_INTERVAL_MS).
                let gauges = spawn_queue_gauges(
                    tasks.session().clone(),
                    settle_settings.interval,
                    tasks.stop(),
                );
                let mut all = vec![tasks.leader_job(settle::JOB, move |leader| {
                    settle::settle_payments(
                        leader,
                        job_context.clone(),
                        settle_settings.clone(),
                        replica.clone(),
                    )
                })];
                all.push(gauges);
                all.extend(spawn_workers(workers, context, tasks.stop()));
                all
            })
            .await
    }
}
