//! The service's Postgres: a pool, the database created if missing, migrations applied.
//!
//! Each service owns one database and one folder of migrations
//! (`migrations/<service>/` at the repository root, embedded with `sqlx::migrate!`).
//! Queries use sqlx's runtime API (`sqlx::query` with binds), so building needs no
//! database.

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::DatabaseSettings;

/// Connects (creating the database when it does not exist yet) and applies every
/// pending migration. Several replicas may start at once: sqlx takes an advisory lock
/// around migrations, so they are applied exactly once.
pub async fn connect_and_migrate(
    settings: &DatabaseSettings,
    migrator: &Migrator,
) -> anyhow::Result<PgPool> {
    use anyhow::Context as _;
    create_database_if_missing(&settings.options)
        .await
        .context("preparing the database")?;
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(settings.options.clone())
        .await
        .with_context(|| {
            format!(
                "connecting to Postgres at {}:{}",
                settings.options.get_host(),
                settings.options.get_port()
            )
        })?;
    migrator
        .run(&pool)
        .await
        .context("applying database migrations")?;
    Ok(pool)
}

/// `CREATE DATABASE` for the database named in `options`, if it is missing, through a
/// connection to the server's `postgres` database.
pub async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(()); // no database named: the server's default for the user
    };
    let mut admin = options
        .clone()
        .database("postgres")
        .log_statements(tracing::log::LevelFilter::Debug)
        .connect()
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        match sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another replica created it between our check and our create.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Quotes an SQL identifier (database names cannot be bound as parameters).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// True when a database error means "Postgres could not be reached or is going away"
/// (retry later: UNAVAILABLE) rather than a bug or a constraint (INTERNAL).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
        // serialization/deadlock are transient too.
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
        ),
        _ => false,
    }
}

/// A database failure as a gRPC status: UNAVAILABLE when Postgres is unreachable
/// (nothing was written; retry), INTERNAL otherwise. Logs the whole cause chain; the
/// caller gets `what` and no internals.
pub fn status_for(e: &sqlx::Error, what: &str) -> tonic::Status {
    tracing::error!(error = %crate::telemetry::error_chain(e), "{what}: database error");
    if is_unavailable(e) {
        tonic::Status::unavailable(format!("{what}: the database is unavailable; retry"))
    } else {
        tonic::Status::internal(format!("{what}: internal database error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_postgres_is_unavailable_and_bugs_are_not() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(is_unavailable(&sqlx::Error::Io(refused)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
        let status = status_for(&sqlx::Error::PoolTimedOut, "reserve");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "reserve: the database is unavailable; retry"
        );
        let status = status_for(&sqlx::Error::RowNotFound, "reserve");
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("test_db"), "\"test_db\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
