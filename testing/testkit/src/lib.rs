//! Real servers for integration tests.
//!
//! Tests never mock etcd or Postgres. They use, in this order:
//! 1. the servers named by `ETCD_ENDPOINTS` / `DATABASE_URL` (CI starts them on loopback
//!    with `scripts/etcd.sh` and `scripts/postgres.sh`);
//! 2. otherwise containers started with testcontainers from the images compose.yaml uses
//!    (`ETCD_IMAGE`, `POSTGRES_IMAGE` override them). On a machine without a registry,
//!    `scripts/images.sh` builds local stand-ins under the same names first.
//!
//! Containers are started once per machine and reused by later test runs (a fixed
//! name plus testcontainers' reuse), so `cargo test` stays fast after the first run;
//! `docker rm -f coord-shop-test-etcd coord-shop-test-postgres` removes them.

use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt, ReuseDirective};

/// Default etcd image (upstream name; `scripts/images.sh` makes a local stand-in).
pub const DEFAULT_ETCD_IMAGE: &str = "quay.io/coreos/etcd:v3.5.16";
/// Default Postgres image (upstream name; `scripts/images.sh` makes a local stand-in).
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15-bookworm";

/// Comma-separated etcd endpoints: `ETCD_ENDPOINTS`, else a reused etcd container.
pub fn etcd_endpoints() -> String {
    static ENDPOINTS: OnceLock<String> = OnceLock::new();
    ENDPOINTS
        .get_or_init(|| match std::env::var("ETCD_ENDPOINTS") {
            Ok(endpoints) if !endpoints.trim().is_empty() => endpoints,
            _ => start_container(Server::Etcd),
        })
        .clone()
}

/// A Postgres URL with superuser rights (tests create their own databases):
/// `DATABASE_URL`, else a reused Postgres container.
pub fn database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_container(Server::Postgres),
    })
    .clone()
}

#[derive(Clone, Copy)]
enum Server {
    Etcd,
    Postgres,
}

/// Starts (or finds) the container on a private runtime in its own thread, so it can
/// be called from any test, sync or async, once per process.
fn start_container(server: Server) -> String {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for testcontainers");
        runtime.block_on(start(server))
    })
    .join()
    .unwrap_or_else(|_| panic!("starting the test container panicked"))
}

fn image_of(var: &str, default: &str) -> (String, String) {
    let image = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image, "latest".to_owned()),
    }
}

async fn start(server: Server) -> String {
    let started = match server {
        Server::Etcd => {
            let (name, tag) = image_of("ETCD_IMAGE", DEFAULT_ETCD_IMAGE);
            GenericImage::new(name, tag)
                .with_exposed_port(2379.tcp())
                .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
                .with_cmd([
                    "etcd",
                    "--listen-client-urls",
                    "http://0.0.0.0:2379",
                    "--advertise-client-urls",
                    "http://127.0.0.1:2379",
                ])
                .with_container_name("coord-shop-test-etcd")
                .with_reuse(ReuseDirective::Always)
                .with_startup_timeout(Duration::from_secs(60))
                .start()
                .await
        }
        Server::Postgres => {
            let (name, tag) = image_of("POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE);
            GenericImage::new(name, tag)
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr(
                    "database system is ready to accept connections",
                ))
                .with_env_var("POSTGRES_PASSWORD", "postgres")
                .with_cmd(["postgres", "-c", "max_connections=500"])
                .with_container_name("coord-shop-test-postgres")
                .with_reuse(ReuseDirective::Always)
                .with_startup_timeout(Duration::from_secs(90))
                .start()
                .await
        }
    };
    let container = started.unwrap_or_else(|e| {
        panic!(
            "no {} to test against: set {} or make Docker and the image available \
             (scripts/images.sh builds it offline): {e}",
            match server {
                Server::Etcd => "etcd",
                Server::Postgres => "Postgres",
            },
            match server {
                Server::Etcd => "ETCD_ENDPOINTS",
                Server::Postgres => "DATABASE_URL",
            }
        )
    });
    let address = match server {
        Server::Etcd => {
            let port = container.get_host_port_ipv4(2379).await.expect("etcd port");
            format!("127.0.0.1:{port}")
        }
        Server::Postgres => {
            let port = container.get_host_port_ipv4(5432).await.expect("pg port");
            format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
        }
    };
    // Reused across runs on purpose: keep it running after this process exits.
    std::mem::forget(container);
    address
}
