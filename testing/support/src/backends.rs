//! Postgres and etcd for one test: a fresh database, a key prefix nobody else uses,
//! and service settings pointing at both.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use shop_common::config::{CommonSettings, DatabaseSettings, ServiceName};
use shop_common::db::quote_ident;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The Postgres server tests use: `DATABASE_URL`, or a testcontainers Postgres.
pub fn server_options() -> PgConnectOptions {
    let url = testkit::database_url();
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL={url:?} is not a Postgres URL: {e}"))
}

/// A database that exists for one test.
pub struct TestDatabase {
    name: String,
    options: PgConnectOptions,
}

impl TestDatabase {
    /// Creates `test_<label>_<random>` (empty; the service under test migrates it).
    #[track_caller]
    pub fn create(label: &str) -> impl Future<Output = TestDatabase> {
        let caller = std::panic::Location::caller();
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        async move {
            let name = format!("test_{label}_{:016x}", rand::random::<u64>());
            let server = server_options();
            let mut admin = server.clone().connect().await.unwrap_or_else(|e| {
                panic!(
                    "{caller}: cannot reach Postgres at {}:{} (start one with scripts/postgres.sh start, or set DATABASE_URL): {e}",
                    server.get_host(),
                    server.get_port()
                )
            });
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{caller}: CREATE DATABASE {name}: {e}"));
            let _ = admin.close().await;
            TestDatabase {
                options: server.database(&name),
                name,
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database as a `DATABASE_URL`, for a service started as its own process.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// Settings for a service pool on this database.
    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings {
            options: self.options.clone(),
            max_connections: 10,
            acquire_timeout: std::time::Duration::from_secs(10),
        }
    }

    /// A direct connection pool, for a test to read the truth behind the API.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.options.clone())
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    /// Drops the database (terminating whatever still uses it). Done on a helper thread
    /// with its own runtime, since `Drop` cannot await; best effort.
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), server_options());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = server.connect().await.ok()?;
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&name)
                ))
                .execute(&mut admin)
                .await
                .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was not dropped", self.name);
        }
    }
}

/// The etcd endpoints tests use: `ETCD_ENDPOINTS`, or a testcontainers etcd.
pub fn etcd_endpoints() -> String {
    testkit::etcd_endpoints()
}

/// An etcd key prefix no other test uses: `/shop-test/<label>/<random>`.
pub fn unique_etcd_prefix(label: &str) -> String {
    format!("/shop-test/{label}/{:016x}", rand::random::<u64>())
}

/// Settings for `service` listening on `127.0.0.1:0`, using `db` and the etcd at
/// `ETCD_ENDPOINTS` (else a testcontainers etcd) under `etcd_prefix`.
pub fn test_settings(service: ServiceName, db: &TestDatabase, etcd_prefix: &str) -> CommonSettings {
    let mut settings = CommonSettings::from_lookup(service, |name| match name {
        "ETCD_ENDPOINTS" => Some(etcd_endpoints()),
        // Auth and TLS of the etcd under test, when it has them.
        "ETCD_USERNAME"
        | "ETCD_PASSWORD"
        | "ETCD_PASSWORD_FILE"
        | "ETCD_CA_FILE"
        | "ETCD_CERT_FILE"
        | "ETCD_KEY_FILE"
        | "ETCD_TLS_SERVER_NAME" => std::env::var(name).ok(),
        _ => None,
    })
    .expect("test settings");
    settings.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    // Off, so parallel tests do not fight over the default port; a test that wants it
    // sets `127.0.0.1:0`.
    settings.metrics_addr = None;
    settings.database = db.settings();
    settings.etcd.prefix = etcd_prefix.to_owned();
    settings
}

/// A client of the test's etcd (no session), for a test to look at or break keys.
pub async fn etcd_client() -> coord::etcd_client::Client {
    coord::EtcdConfig::new(&etcd_endpoints())
        .expect("ETCD_ENDPOINTS")
        .connect()
        .await
        .expect("connect to etcd")
}
