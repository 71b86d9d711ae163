//! Settings and `Application`: build everything from settings, then run until a
//! shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shop_common::config::{
    env_var, parse_or, parse_positive_or, CommonSettings, ConfigError, ServiceName,
};
use shop_common::domain::Strategy;
use shop_common::ServiceShell;
use shop_proto::v1::inventory_service_server::InventoryServiceServer;
use sqlx::migrate::Migrator;

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
/// | `DEFAULT_STRATEGY` | strategy of a SKU first stocked without one (a Reserve always runs under its SKUs' strategy) | `mutex` |
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
    shell: ServiceShell,
    db: InventoryDb,
    reserver: Arc<Reserver>,
}

impl Application {
    /// Connects to Postgres (creating and migrating the database), binds the port and
    /// wires the handlers. etcd is not contacted yet (see `SharedSession`).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let mut shell = ServiceShell::build(&settings.common, &MIGRATOR).await?;
        let session = shell.session().clone();
        #[cfg(feature = "test-hooks")]
        crate::hooks::arm_remote(session.clone(), &settings.common.jobs.replica_id);
        let db = InventoryDb::new(shell.pool().clone());
        let sales = Arc::new(Sales::new(
            shell.pool().clone(),
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
        let catalog = Arc::new(Catalog::new(db.clone(), session, settings.lock_timeout));
        let api = InventoryApi {
            db: db.clone(),
            reserver: reserver.clone(),
            sales,
            catalog,
            default_strategy: settings.default_strategy,
            leaders: shell.leaders(vec![reconcile::JOB]),
        };
        let max_message = shell.max_message_bytes();
        shell
            .server()
            .add_service(InventoryServiceServer::new(api).max_decoding_message_size(max_message))
            .await;
        tracing::info!(addr = %shell.local_addr(), default_strategy = %settings.default_strategy, "inventory service ready");
        Ok(Application {
            shell,
            db,
            reserver,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shell.local_addr()
    }

    /// Where `/metrics` is served (`METRICS_ADDR`), if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.shell.metrics_addr()
    }

    /// Serves, and runs `reconcile-stock` whenever this replica leads it, until
    /// `shutdown` resolves; then stops as every service does (see `ServiceShell`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            shell,
            db,
            reserver,
        } = self;
        let (interval, replica) = (shell.jobs().interval, shell.jobs().replica_id.clone());
        shell
            .run_until_stopped(shutdown, Duration::from_secs(5), |tasks| {
                vec![tasks.leader_job(reconcile::JOB, move |context| {
                    reconcile::reconcile_stock(
                        context,
                        db.clone(),
                        reserver.clone(),
                        interval,
                        replica.clone(),
                    )
                })]
            })
            .await
    }
}
