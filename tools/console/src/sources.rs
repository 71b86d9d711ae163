//! The console's other two sources, polled: the inventory database (stock, sales;
//! read in read-only transactions) and the services' Prometheus endpoints. A source
//! that fails keeps its last numbers on the page under a banner and is asked again
//! on the next round.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{parse, Counters};
use crate::state::Hub;
use crate::stock::{CustomerUnits, SaleRow, StockRow};

/// A pool that connects when first used and again after an outage, and can only read:
/// every transaction is read-only (`default_transaction_read_only`).
pub fn read_only_pool(url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("default_transaction_read_only", "on")]);
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options))
}

const STOCK: &str = "SELECT s.sku, s.available, s.reserved, s.sold,
        COALESCE(s.total, s.available + s.reserved + s.sold) AS stocked, s.fence_token,
        COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'RESERVED'), 0)::bigint,
        COALESCE(SUM(l.quantity) FILTER (WHERE r.state = 'COMMITTED'), 0)::bigint,
        COALESCE(array_agg(DISTINCT r.strategy) FILTER (WHERE r.strategy IS NOT NULL), '{}')
    FROM stock s
    LEFT JOIN reservation_lines l ON l.sku = s.sku
    LEFT JOIN reservations r ON r.order_id = l.order_id
    GROUP BY s.sku ORDER BY s.sku LIMIT 200";

const SALES: &str = "SELECT s.sale_id, s.per_customer_limit::bigint, s.opened_at IS NOT NULL,
        p.customer_id, p.units
    FROM (SELECT * FROM sales ORDER BY created_at DESC LIMIT 20) s
    LEFT JOIN sale_purchases p ON p.sale_id = s.sale_id
    ORDER BY s.created_at DESC, s.sale_id, p.units DESC, p.customer_id";

type StockTuple = (String, i64, i64, i64, i64, i64, i64, i64, Vec<String>);
/// A sale with one of its customers (none when nobody bought yet).
type SaleTuple = (String, i64, bool, Option<String>, Option<i64>);

async fn read_database(pool: &PgPool) -> Result<(Vec<StockRow>, Vec<SaleRow>), sqlx::Error> {
    let stock = sqlx::query_as::<_, StockTuple>(STOCK)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(
            |(sku, available, reserved, sold, stocked, fence_token, lr, lc, strategies)| StockRow {
                sku,
                available,
                reserved,
                sold,
                stocked,
                fence_token,
                lines_reserved: lr,
                lines_committed: lc,
                strategies,
            },
        )
        .collect();
    let rows: Vec<SaleTuple> = sqlx::query_as(SALES).fetch_all(pool).await?;
    let mut sales: Vec<SaleRow> = Vec::new();
    for (sale, limit, open, customer, units) in rows {
        if sales.last().is_none_or(|s| s.sale != sale) {
            sales.push(SaleRow {
                sale,
                per_customer_limit: limit,
                open,
                customers: Vec::new(),
            });
        }
        if let (Some(customer), Some(units), Some(last)) = (customer, units, sales.last_mut()) {
            last.customers.push(CustomerUnits {
                customer,
                units,
                over_limit: false,
            });
        }
    }
    Ok((stock, sales.into_iter().map(SaleRow::judged).collect()))
}

/// Reads stock and sales every `interval`.
pub async fn poll_database(pool: PgPool, hub: Arc<Hub>, interval: Duration) {
    loop {
        let read = read_database(&pool)
            .await
            .map_err(|e| format!("inventory database: {e}"));
        hub.set_database(read);
        tokio::time::sleep(interval).await;
    }
}

/// `GET /metrics` of `target` (`host:port`, an optional `http://` in front).
async fn scrape(target: &str) -> Result<Counters, String> {
    let address = target.trim_start_matches("http://").trim_end_matches('/');
    let address = address.strip_suffix("/metrics").unwrap_or(address);
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .map_err(|_| format!("{target}: no answer within 2 s"))?
        .map_err(|e| format!("{target}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{target}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or(head);
        return Err(format!("{target}: {status}"));
    }
    Ok(parse(body))
}

/// Scrapes every target every `interval`.
pub async fn poll_metrics(targets: Vec<String>, hub: Arc<Hub>, interval: Duration) {
    loop {
        let scrapes = futures::future::join_all(targets.iter().map(|t| scrape(t))).await;
        hub.record_metrics(scrapes);
        tokio::time::sleep(interval).await;
    }
}
