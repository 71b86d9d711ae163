//! Settings and `Application`: build everything from settings, then run until a
//! shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shop_common::config::{env_var, parse_or, CommonSettings, ConfigError, ServiceName};
use shop_common::propagation::traced_channel;
use shop_common::ServiceShell;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_server::OrderServiceServer;
use sqlx::migrate::Migrator;

use crate::expiry::{self, ExpirySettings};
use crate::grpc::OrderApi;
use crate::payment::{PaymentRequester, QueuePaymentRequester};
use crate::repository::OrdersDb;
use crate::saga::Saga;

/// The order database's migrations (`migrations/order/`), embedded.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/order");

/// Order settings: the common ones plus
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `INVENTORY_TIMEOUT_MS` | deadline of each call to inventory; more than inventory's `SALE_WAIT_MS` + `LOCK_TIMEOUT_MS` | `25000` |
/// | `SALE_WAIT_MS`, `LOCK_TIMEOUT_MS` | inventory's settings (same defaults), read here only to check `INVENTORY_TIMEOUT_MS` against them | `10000`, `10000` |
/// | `RESERVATION_TTL_SECS` | how long an order may stay RESERVED (or PENDING) before the expiry job cancels it; more than `INVENTORY_TIMEOUT_MS` | `300` |
/// | `PAYMENT_REDRIVE_SECS` | how long an order may stay RESERVED before the expiry job hands it to the payment queue again; less than `RESERVATION_TTL_SECS` | `60` |
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// Longer than inventory's longest Reserve (sale wait + lock timeout), so inventory
    /// answers first and a caller never gives up on a Reserve that can still succeed.
    pub inventory_timeout: Duration,
    /// Inventory's `SALE_WAIT_MS` + `LOCK_TIMEOUT_MS`: the longest a Reserve can take.
    pub inventory_longest_reserve: Duration,
    /// How long an order may stay RESERVED (or PENDING) before the expiry job cancels it.
    pub reservation_ttl: Duration,
    /// How long an order may stay RESERVED before the expiry job requests its payment
    /// again (idempotent), in case the hand-off to the payment queue was lost.
    pub payment_redrive: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        let lookup = env_var;
        let settings = Settings {
            common: CommonSettings::from_env(ServiceName::Order)?,
            inventory_timeout: Duration::from_millis(parse_or(
                "INVENTORY_TIMEOUT_MS",
                lookup("INVENTORY_TIMEOUT_MS"),
                25_000,
            )?),
            inventory_longest_reserve: Duration::from_millis(
                parse_or("SALE_WAIT_MS", lookup("SALE_WAIT_MS"), 10_000u64)?
                    + parse_or("LOCK_TIMEOUT_MS", lookup("LOCK_TIMEOUT_MS"), 10_000u64)?,
            ),
            reservation_ttl: Duration::from_secs(parse_or(
                "RESERVATION_TTL_SECS",
                lookup("RESERVATION_TTL_SECS"),
                300,
            )?),
            payment_redrive: Duration::from_secs(parse_or(
                "PAYMENT_REDRIVE_SECS",
                lookup("PAYMENT_REDRIVE_SECS"),
                60,
            )?),
        };
        settings.check()?;
        Ok(settings)
    }

    /// The relations the expiry job relies on: a PENDING order older than the TTL is
    /// abandoned only if no CreateOrder can still be waiting for inventory, and a
    /// payment is requested again before the order's deadline.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.inventory_timeout <= self.inventory_longest_reserve {
            return Err(ConfigError(format!(
                "INVENTORY_TIMEOUT_MS ({} ms) must be more than inventory's SALE_WAIT_MS + \
                 LOCK_TIMEOUT_MS ({} ms): a Reserve the order service gave up on could \
                 still succeed",
                self.inventory_timeout.as_millis(),
                self.inventory_longest_reserve.as_millis()
            )));
        }
        if self.reservation_ttl <= self.inventory_timeout {
            return Err(ConfigError(format!(
                "RESERVATION_TTL_SECS ({}s) must be more than INVENTORY_TIMEOUT_MS ({} ms): \
                 PENDING orders older than the TTL are cancelled as abandoned",
                self.reservation_ttl.as_secs(),
                self.inventory_timeout.as_millis()
            )));
        }
        if self.payment_redrive >= self.reservation_ttl {
            return Err(ConfigError(format!(
                "PAYMENT_REDRIVE_SECS ({}s) must be less than RESERVATION_TTL_SECS ({}s): \
                 a lost payment request is requested again before the order's deadline",
                self.payment_redrive.as_secs(),
                self.reservation_ttl.as_secs()
            )));
        }
        Ok(())
    }

    /// Defaults for the given common settings (tests adjust fields afterwards).
    pub fn with_common(common: CommonSettings) -> Settings {
        Settings {
            common,
            inventory_timeout: Duration::from_secs(25),
            inventory_longest_reserve: Duration::from_secs(20),
            reservation_ttl: Duration::from_secs(300),
            payment_redrive: Duration::from_secs(60),
        }
    }
}

/// A built order service: database migrated, port bound, not yet serving.
pub struct Application {
    shell: ServiceShell,
    db: OrdersDb,
    saga: Arc<Saga>,
    expiry: ExpirySettings,
}

impl Application {
    /// The service as deployed: payments go onto the payment work queue in etcd.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, None).await
    }

    /// [`Application::build`] with another payment step (tests that pay by hand pass
    /// `PaymentQueueNotWired`); `None` is the payment work queue.
    pub async fn build_with(
        settings: Settings,
        payments: Option<Arc<dyn PaymentRequester>>,
    ) -> anyhow::Result<Application> {
        let mut shell = ServiceShell::build(&settings.common, &MIGRATOR).await?;
        let payments = payments.unwrap_or_else(|| {
            Arc::new(QueuePaymentRequester::new(
                shell.session().clone(),
                settings.common.internal_token.clone(),
            ))
        });
        // Connects on first use, and again after a failure: inventory may start later.
        let inventory = InventoryServiceClient::new(
            traced_channel(
                &settings.common.peers.inventory,
                Duration::from_secs(2),
                settings.inventory_timeout,
            )?
            .authorized(settings.common.internal_token.clone()),
        );
        let db = OrdersDb::new(shell.pool().clone());
        let saga = Arc::new(Saga::new(db.clone(), inventory, payments));
        let api = OrderApi::new(saga.clone(), shell.leaders(vec![expiry::JOB]));
        let max_message = shell.max_message_bytes();
        shell
            .server()
            .add_service(OrderServiceServer::new(api).max_decoding_message_size(max_message))
            .await;
        tracing::info!(addr = %shell.local_addr(), inventory = %settings.common.peers.inventory, "order service ready");
        Ok(Application {
            shell,
            db,
            saga,
            expiry: ExpirySettings {
                reservation_ttl: settings.reservation_ttl,
                payment_redrive: settings.payment_redrive,
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

    /// Serves, and runs the `expire-reservations` job whenever this replica leads it,
    /// until `shutdown` resolves; then stops as every service does (see
    /// `ServiceShell`).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            shell,
            db,
            saga,
            expiry,
        } = self;
        let replica = shell.jobs().replica_id.clone();
        shell
            .run_until_stopped(shutdown, Duration::from_secs(5), |tasks| {
                vec![tasks.leader_job(expiry::JOB, move |context| {
                    expiry::expire_reservations(
                        context,
                        db.clone(),
                        saga.clone(),
                        expiry.clone(),
                        replica.clone(),
                    )
                })]
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttl_secs: u64, redrive_secs: u64, inventory_timeout_ms: u64) -> Settings {
        let common = CommonSettings::from_lookup(ServiceName::Order, |_| None).unwrap();
        let mut settings = Settings::with_common(common);
        settings.reservation_ttl = Duration::from_secs(ttl_secs);
        settings.payment_redrive = Duration::from_secs(redrive_secs);
        settings.inventory_timeout = Duration::from_millis(inventory_timeout_ms);
        settings
    }

    #[test]
    fn the_expiry_thresholds_must_fit_together() {
        assert!(
            settings(300, 60, 25_000).check().is_ok(),
            "the defaults fit"
        );
        let err = settings(300, 60, 20_000).check().unwrap_err();
        assert!(err.0.contains("INVENTORY_TIMEOUT_MS (20000 ms)"), "{err}");
        assert!(
            err.0.contains("SALE_WAIT_MS + LOCK_TIMEOUT_MS (20000 ms)"),
            "{err}"
        );
        let err = settings(10, 5, 25_000).check().unwrap_err();
        assert!(err.0.contains("RESERVATION_TTL_SECS"), "{err}");
        assert!(err.0.contains("INVENTORY_TIMEOUT_MS"), "{err}");
        let err = settings(300, 300, 25_000).check().unwrap_err();
        assert!(err.0.contains("PAYMENT_REDRIVE_SECS"), "{err}");
    }
}
