//! The gRPC server every service runs: its own services plus standard health
//! (`grpc.health.v1`) and reflection (`grpc.reflection.v1`), stopped gracefully by a
//! shutdown future. Every request runs inside a `grpc.server` span that continues the
//! caller's trace and records the call's gRPC status
//! ([`crate::propagation::ServerTracingLayer`]); with
//! [`GrpcServer::serve_metrics`], the same server also answers Prometheus scrapes on a
//! second port ([`crate::metrics`]) until it stops.
//!
//! With [`GrpcServer::require_internal_token`] every internal method needs the
//! shop's internal token ([`crate::auth`]). With [`GrpcServer::probe_dependencies`]
//! health follows the service's dependencies: every `interval` the probe runs (bounded
//! by [`PROBE_TIMEOUT`]); while it fails the server and its services report
//! NOT_SERVING, and SERVING again once it passes. The probe runs inside the shutdown
//! future, so it can never turn a stopping server back to SERVING.
//!
//! ```no_run
//! # async fn example(my_service: shop_proto::v1::inventory_service_server::InventoryServiceServer<impl shop_proto::v1::inventory_service_server::InventoryService>) -> anyhow::Result<()> {
//! let mut server = shop_common::server::GrpcServer::bind("127.0.0.1:0".parse()?)?;
//! server.add_service(my_service).await; // routed, and reported SERVING by health
//! println!("listening on {}", server.local_addr());
//! server.run_until_stopped(shop_common::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use tonic::body::Body;
use tonic::codegen::{http, Service};
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use futures::future::BoxFuture;

use crate::auth::{InternalAuthLayer, InternalToken};
use crate::limits::ServerLimits;

/// Longest a dependency probe may take before it counts as failed.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks the service's dependencies: `Err` says which one cannot be reached.
pub type DependencyProbe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A bound listener plus the services it will serve. Binding happens in
/// [`GrpcServer::bind`], so `local_addr` is known (port 0 resolved) before serving.
pub struct GrpcServer {
    incoming: TcpIncoming,
    local_addr: SocketAddr,
    routes: RoutesBuilder,
    health: HealthReporter,
    services: Vec<&'static str>,
    /// The bound `/metrics` listener, if any.
    metrics: Option<std::net::TcpListener>,
    /// Request size, concurrency and time limits ([`crate::limits`]).
    limits: ServerLimits,
    /// The token internal methods need; `None`: no check (settings built in code).
    token: Option<InternalToken>,
    /// What health follows, and how often it looks.
    probe: Option<(DependencyProbe, std::time::Duration)>,
}

impl GrpcServer {
    /// Binds `addr` (use port 0 for any free port) and prepares health and reflection.
    pub fn bind(addr: SocketAddr) -> anyhow::Result<GrpcServer> {
        let incoming = TcpIncoming::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?
            .with_nodelay(Some(true));
        let local_addr = incoming.local_addr()?;
        Ok(GrpcServer {
            incoming,
            local_addr,
            routes: RoutesBuilder::default(),
            health: HealthReporter::new(),
            services: Vec::new(),
            metrics: None,
            limits: ServerLimits::default(),
            token: None,
            probe: None,
        })
    }

    /// Also serves Prometheus `GET /metrics` on `addr` (port 0: any free port) while the
    /// server runs; `None` serves nothing. Binds now, so the port is known at once, and
    /// installs the recorder now, so what the service records from here on (leadership
    /// of its jobs included) is in the first scrape.
    pub fn serve_metrics(&mut self, addr: Option<SocketAddr>) -> anyhow::Result<()> {
        if let Some(addr) = addr {
            crate::metrics::prometheus();
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
            listener.set_nonblocking(true)?;
            self.metrics = Some(listener);
        }
        Ok(())
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves with `limits` instead of the defaults. A service added with
    /// [`GrpcServer::add_service`] must also be built with
    /// `.max_decoding_message_size(server.limits().max_message_bytes)`: tonic applies
    /// the message limit per service.
    pub fn with_limits(mut self, limits: ServerLimits) -> GrpcServer {
        self.limits = limits;
        self
    }

    /// Internal methods need `token` (see [`crate::auth`]); `None` leaves them open.
    pub fn require_internal_token(&mut self, token: Option<InternalToken>) {
        self.token = token;
    }

    /// Health follows `probe`, run every `interval` while the server serves.
    pub fn probe_dependencies(&mut self, probe: DependencyProbe, interval: std::time::Duration) {
        self.probe = Some((probe, interval));
    }

    /// The limits this server applies.
    pub fn limits(&self) -> ServerLimits {
        self.limits
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health reporter, for services that want to report NOT_SERVING themselves
    /// (for example while a dependency is down).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Routes `service` and reports it SERVING to health checks.
    pub async fn add_service<S>(&mut self, service: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.health.set_serving::<S>().await;
        self.services.push(S::NAME);
    }

    /// Serves while background tasks run (leader jobs, queue workers): `tasks` gets a
    /// stop signal that turns true when `shutdown` resolves, and the tasks it started
    /// are awaited (at most `grace` in all) after the server has drained. A task still
    /// running then is left to the runtime; leases and claims it held expire.
    pub async fn run_with_tasks(
        self,
        shutdown: impl Future<Output = ()> + Send,
        tasks: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>>,
        grace: std::time::Duration,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let handles = tasks(stop_rx);
        let served = self
            .run_until_stopped(async move {
                shutdown.await;
                let _ = stop_tx.send(true);
            })
            .await;
        let all = futures::future::join_all(handles);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "background tasks did not stop in time");
        }
        served
    }

    /// Serves until `shutdown` resolves; then reports every service NOT_SERVING, stops
    /// accepting connections and lets the requests in flight finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let GrpcServer {
            incoming,
            mut routes,
            health,
            services,
            local_addr,
            metrics,
            limits,
            token,
            probe,
        } = self;
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = match metrics {
            Some(listener) => {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
                Some(tokio::spawn(crate::metrics::serve(listener, async move {
                    let _ = metrics_stopped.await;
                })))
            }
            None => None,
        };
        // Reflection advertises exactly what this server serves (the descriptor set
        // holds every shop service).
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection");
        for name in &services {
            reflection = reflection.with_service_name(*name);
        }
        routes
            .add_service(tonic_health::pb::health_server::HealthServer::new(
                HealthService::from_health_reporter(health.clone()),
            ))
            .add_service(reflection.build_v1()?);
        let watched = services.clone();
        let watch_health = health.clone();
        let signal = async move {
            match probe {
                Some((probe, interval)) => {
                    tokio::select! {
                        _ = shutdown => {}
                        _ = follow_dependencies(probe, interval, watch_health, watched) => {}
                    }
                }
                None => shutdown.await,
            }
            tracing::info!(%local_addr, "shutting down: draining requests in flight");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in services {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        let served = limits
            .server_builder()
            .layer(crate::propagation::ServerTracingLayer)
            .layer(tower::util::option_layer(
                token.map(|token| InternalAuthLayer { token }),
            ))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal)
            .await;
        // Scrapes keep working while requests drain; they stop with the server.
        let _ = metrics_stop.send(());
        if let Some(task) = metrics {
            let _ = task.await;
        }
        served?;
        Ok(())
    }
}

/// Runs `probe` every `interval` for ever, reporting the server (`""`) and `services`
/// SERVING while it passes and NOT_SERVING while it fails; logs each change.
async fn follow_dependencies(
    probe: DependencyProbe,
    interval: std::time::Duration,
    health: HealthReporter,
    services: Vec<&'static str>,
) {
    let mut serving = true;
    loop {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let now_serving = outcome.is_ok();
        if now_serving != serving {
            match &outcome {
                Ok(()) => tracing::info!("dependencies reachable again: SERVING"),
                Err(why) => tracing::warn!(%why, "a dependency is unreachable: NOT_SERVING"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status("", status).await;
            for name in &services {
                health.set_service_status(*name, status).await;
            }
            serving = now_serving;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Resolves on SIGTERM (container stop) or ctrl-c: the shutdown future `main` passes
/// to `run_until_stopped`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
