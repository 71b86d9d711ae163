//! Settings and `Application`: build everything from settings, then run until a
//! shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shop_common::config::JobSettings;
use shop_common::config::{
    env_var, parse_or, parse_positive_or, CommonSettings, ConfigError, ServiceName,
};
use shop_common::coordination::SharedSession;
use shop_common::db::connect_and_migrate;
use shop_common::domain::Strategy;
use shop_common::jobs::{spawn_leader_job, ElectionDirectory};
use shop_common::GrpcServer;
use shop_proto::v1::inventory_service_server::InventoryServiceServer;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use crate::catalog::Catalog;
use crate::grpc::InventoryApi;
use crate::reconcile;
use crate::repository::InventoryDb;
use crate::reservation::Reserver;
use crate::sales::Sales;

/// The inventory database's migrations (`migrations/inventory/`), embedded.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/inventory");

/// Inventory settings: the common ones plus
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `DEFAULT_STRATEGY` | strategy for requests that leave it UNSPECIFIED | `mutex` |
/// | `THINK_TIME_MS` | pause between read and write in `none`/`mutex` | `2` |
/// | `LOCK_TIMEOUT_MS` | longest wait for the SKU locks (or an stm decision, or the catalog lock) before UNAVAILABLE | `10000` |
/// | `SALE_WAIT_MS` | longest a sale order's Reserve waits for the sale to open | `10000` |
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub default_strategy: Strategy,
    pub think_time: Duration,
    pub lock_timeout: Duration,
    pub sale_wait: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        let lookup = env_var;
        Ok(Settings {
            common: CommonSettings::from_env(ServiceName::Inventory)?,
            default_strategy: parse_or(
                "DEFAULT_STRATEGY",
                lookup("DEFAULT_STRATEGY"),
                Strategy::Mutex,
            )?,
            think_time: Duration::from_millis(parse_or(
                "THINK_TIME_MS",
                lookup("THINK_TIME_MS"),
                2,
            )?),
            lock_timeout: Duration::from_millis(parse_positive_or(
                "LOCK_TIMEOUT_MS",
                lookup("LOCK_TIMEOUT_MS"),
                10_000,
            )?),
            sale_wait: Duration::from_millis(parse_or(
                "SALE_WAIT_MS",
                lookup("SALE_WAIT_MS"),
                10_000,
            )?),
        })
    }

    /// Defaults for the given common settings (tests adjust fields afterwards).
    pub fn with_common(common: CommonSettings) -> Settings {
        Settings {
            common,
            default_strategy: Strategy::Mutex,
            think_time: Duration::from_millis(2),
            lock_timeout: Duration::from_secs(10),
            sale_wait: Duration::from_secs(10),
        }
    }
}

/// A built inventory service: database migrated, port bound, not yet serving.
pub struct Application {
    server: GrpcServer,
    pool: PgPool,
    session: Arc<SharedSession>,
    db: InventoryDb,
    reserver: Arc<Reserver>,
    jobs: JobSettings,
}

impl Application {
    /// Connects to Postgres (creating and migrating the database), binds the port and
    /// wires the handlers. etcd is not contacted yet (see `SharedSession`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let pool = connect_and_migrate(&settings.common.database, &MIGRATOR).await?;
        let session = Arc::new(SharedSession::new(settings.common.etcd.clone()));
        let leaders = Arc::new(ElectionDirectory::new(
            session.clone(),
            ServiceName::Inventory,
            vec![reconcile::JOB],
        ));
        let db = InventoryDb::new(pool.clone());
        let sales = Arc::new(Sales::new(
            pool.clone(),
            session.clone(),
            settings.sale_wait,
        ));
        let reserver = Arc::new(Reserver::new(
            db.clone(),
            session.clone(),
            sales.clone(),
            settings.think_time,
            settings.lock_timeout,
        ));
        let catalog = Arc::new(Catalog::new(
            db.clone(),
            session.clone(),
            settings.lock_timeout,
        ));
        let api = InventoryApi {
            db: db.clone(),
            reserver: reserver.clone(),
            sales,
            catalog,
            default_strategy: settings.default_strategy,
            leaders,
        };
        let mut server =
            GrpcServer::bind(settings.common.grpc_addr)?.with_limits(settings.common.limits);
        server.serve_metrics(settings.common.metrics_addr)?;
        let max_message = server.limits().max_message_bytes;
        server
            .add_service(InventoryServiceServer::new(api).max_decoding_message_size(max_message))
            .await;
        tracing::info!(addr = %server.local_addr(), default_strategy = %settings.default_strategy, "inventory service ready");
        Ok(Application {
            server,
            pool,
            session,
            db,
            reserver,
            jobs: settings.common.jobs.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/metrics` is served (`METRICS_ADDR`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// Serves, and runs `reconcile-stock` whenever this replica leads it, until
    /// `shutdown` resolves; then resigns the job, drains, revokes the etcd session (so
    /// no lock outlives the process) and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let (db, reserver, interval, replica) = (
            self.db.clone(),
            self.reserver.clone(),
            self.jobs.interval,
            self.jobs.replica_id.clone(),
        );
        let session = self.session.clone();
        let served = self
            .server
            .run_with_tasks(
                shutdown,
                |stop| {
                    vec![spawn_leader_job(
                        session,
                        ServiceName::Inventory,
                        reconcile::JOB,
                        replica.clone(),
                        stop,
                        move |context| {
                            reconcile::reconcile_stock(
                                context,
                                db.clone(),
                                reserver.clone(),
                                interval,
                                replica.clone(),
                            )
                        },
                    )]
                },
                Duration::from_secs(5),
            )
            .await;
        self.session.close().await;
        self.pool.close().await;
        served
    }
}
