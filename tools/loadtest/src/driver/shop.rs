//! What a process of the run holds for all its strategies: its connections to the
//! shop (order, inventory, the databases, an etcd session) and its clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shop_common::auth::{Authorized, BearerToken};
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use crate::audit::Auditor;
use crate::config::RunConfig;
use crate::cost::CostProbe;

/// Buyers per gRPC connection to the order service (HTTP/2 streams share one).
const BUYERS_PER_CONNECTION: usize = 100;

/// Connections shared by the strategies of a run.
pub(super) struct Shop {
    pub(super) orders: Vec<OrderServiceClient<Channel>>,
    /// Presents the operator's internal token (`INTERNAL_TOKEN_FILE`): the setup
    /// stocks SKUs and creates and opens sales, and direct Reserves are internal.
    pub(super) inventory: InventoryServiceClient<Authorized>,
    pub(super) auditor: Auditor,
    pub(super) session: coord::Session,
    /// Reads what the orders cost (etcd, Postgres, CPU) before and after each strategy.
    pub(super) probe: CostProbe,
}

pub(super) async fn channel(uri: &str, service: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(uri.to_owned())
        .with_context(|| format!("{service} address {uri:?} is not a URI"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the {service} service at {uri}"))
}

impl Shop {
    pub(super) async fn connect(config: &RunConfig) -> anyhow::Result<Shop> {
        let connections = config.buyers.div_ceil(BUYERS_PER_CONNECTION).max(1);
        let mut orders = Vec::with_capacity(connections);
        for _ in 0..connections {
            orders.push(OrderServiceClient::new(
                channel(&config.endpoints.order, "order").await?,
            ));
        }
        let token = config.internal_token.clone();
        let inventory = InventoryServiceClient::with_interceptor(
            channel(&config.endpoints.inventory, "inventory").await?,
            BearerToken(token),
        );
        let auditor = Auditor::connect(&config.databases).await?;
        let etcd = config
            .cluster
            .etcd
            .connect()
            .await
            .context("cannot reach etcd (ETCD_ENDPOINTS)")?;
        let probe = CostProbe::connect(config, etcd.clone()).await?;
        let session = coord::Session::builder(etcd)
            .ttl(10)
            .build()
            .await
            .context("cannot create an etcd session")?;
        Ok(Shop {
            orders,
            inventory,
            auditor,
            session,
            probe,
        })
    }
}

/// The process's clock: `Instant`s become offsets from `origin`, and the sale's
/// wall-clock opening time can be placed on the same axis.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub(super) origin: Instant,
    pub(super) origin_unix: Duration,
}

impl Clock {
    pub(super) fn start() -> Clock {
        Clock {
            origin: Instant::now(),
            origin_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// A wall-clock time (ms since the epoch) on this clock; None if unset (0).
    pub(super) fn at_unix_ms(&self, unix_ms: i64) -> Option<Duration> {
        let at = Duration::from_millis(u64::try_from(unix_ms).ok().filter(|&ms| ms > 0)?);
        Some(at.saturating_sub(self.origin_unix))
    }
}
