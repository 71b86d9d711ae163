//! The page in a real browser: headless Chromium driven through chromedriver
//! (WebDriver), against a console following a real etcd, with the three services
//! running in-process. Skipped, saying so, only when chromedriver is not installed
//! (`scripts/install-deps.sh` installs it).
//!
//! Set `CONSOLE_SCREENSHOT=docs/images/console.png` (a path relative to the
//! workspace) to refresh the README's screenshot; without it the picture goes to the
//! target directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coord::{Election, Mutex, Session};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use shop_common::jobs::election_name;
use shop_common::ServiceName;
use shop_harness::Services;
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::{
    CreateOrderRequest, CreateSaleRequest, CustomerTier, LineItem, OpenSaleRequest,
    SetStockRequest, Strategy,
};
use shop_test_support::crash_leader;

use crate::support::{session, start_console, Sources};

fn chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return Some(path.into());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
}

struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start(driver: PathBuf) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        let mut chrome = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1900", "--force-device-scale-factor=1"]
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            chrome["binary"] = json!("/usr/bin/chromium");
        }
        caps.insert("goog:chromeOptions".into(), chrome);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        Browser {
            client,
            _driver: child,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("the script runs")
    }

    /// Polls `script` (whose value is the thing to look at) until `check` accepts it.
    async fn until(&self, what: &str, script: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let value = self.js(script).await;
            if check(&value) {
                return value;
            }
            if Instant::now() > deadline {
                let errors = self
                    .js("return document.getElementById('errors').textContent")
                    .await;
                panic!("the page never showed {what}; last: {value}; page errors: {errors}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn order(
    key: &str,
    customer: &str,
    tier: CustomerTier,
    sku: &str,
    quantity: i32,
    strategy: Strategy,
    sale: Option<&str>,
) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        customer_tier: tier as i32,
        items: vec![LineItem {
            sku: sku.into(),
            quantity,
        }],
        strategy: strategy as i32,
        sale_id: sale.map(String::from),
    }
}

const LOCK: &str = "const l = document.querySelector('.lock[data-name=\"sku/tea\"]'); \
    return l ? { waiters: Number(l.dataset.waiters), holder: l.querySelector('.holder')?.dataset.lease ?? null } : null;";

#[tokio::test]
async fn the_page_shows_locks_leaders_the_queue_and_a_conservation_break_as_they_happen() {
    let Some(driver) = chromedriver() else {
        eprintln!("SKIPPED: chromedriver is not installed (apt-get install chromium chromium-driver, or scripts/install-deps.sh)");
        return;
    };
    let services = Services::spawn(
        "console-browser",
        |shop| {
            shop.inventory.common.jobs.replica_id = "inventory-1".into();
            let payment = &mut shop.payment;
            payment.common.jobs.replica_id = "payment-1".into();
            payment.common.metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            // A slow provider with one permit: the queue fills, then drains.
            payment.provider.latency = Duration::from_millis(400);
            payment.provider.concurrency = 1;
        },
        true,
    )
    .await;
    let prefix = services.etcd_prefix.clone();
    let mut stock = InventoryServiceClient::connect(services.inventory().uri())
        .await
        .unwrap();
    let mut orders = OrderServiceClient::connect(services.order.uri())
        .await
        .unwrap();
    for (sku, units) in [("tea", 120), ("milk", 60), ("rice", 40), ("soap", 25)] {
        stock
            .set_stock(SetStockRequest {
                sku: sku.into(),
                available: units,
                // The strategy is the SKU's: the orders below buy rice with pg.
                strategy: if sku == "rice" {
                    Strategy::Pg
                } else {
                    Strategy::Mutex
                } as i32,
            })
            .await
            .unwrap();
    }
    // A sale that opened, with what its customers bought, and one still closed.
    stock
        .create_sale(CreateSaleRequest {
            sale_id: "early-bird".into(),
            per_customer_limit: 2,
        })
        .await
        .unwrap();
    stock
        .open_sale(OpenSaleRequest {
            sale_id: "early-bird".into(),
        })
        .await
        .unwrap();
    stock
        .create_sale(CreateSaleRequest {
            sale_id: "flash-1".into(),
            per_customer_limit: 1,
        })
        .await
        .unwrap();

    let console = start_console(
        &prefix,
        Sources {
            inventory_database_url: Some(services.inventory_db.url()),
            metrics_targets: vec![services
                .payment_metrics
                .expect("payment /metrics")
                .to_string()],
            ..Sources::default()
        },
    )
    .await;
    let browser = Browser::start(driver).await;
    browser
        .client
        .goto(&format!("http://{}/", console.addr()))
        .await
        .unwrap();
    browser
        .until(
            "the live pill",
            "return document.getElementById('live').textContent",
            |v| v == "live",
        )
        .await;
    browser
        .until(
            "the stock table",
            "return document.querySelectorAll('tr.sku').length",
            |v| v == 4,
        )
        .await;

    // Buyers: sale orders (per-customer counts) and plain ones (the payment queue).
    for (i, (customer, units)) in [("alice", 2), ("bob", 1), ("carol", 2)]
        .into_iter()
        .enumerate()
    {
        let request = order(
            &format!("sale-{i}"),
            customer,
            CustomerTier::Standard,
            "rice",
            units,
            Strategy::Pg,
            Some("early-bird"),
        );
        orders.create_order(request).await.unwrap();
    }
    let tiers = [
        CustomerTier::Standard,
        CustomerTier::Gold,
        CustomerTier::Platinum,
    ];
    for i in 0..9 {
        let request = order(
            &format!("milk-{i}"),
            &format!("buyer-{i}"),
            tiers[i % 3],
            "milk",
            1,
            Strategy::Mutex,
            None,
        );
        orders.create_order(request).await.unwrap();
    }
    // A trickle of buyers while the scene is set, so the charts move.
    let trickle = tokio::spawn({
        let mut orders = orders.clone();
        async move {
            for i in 0.. {
                let (sku, strategy) = if i % 2 == 0 {
                    ("milk", Strategy::Mutex)
                } else {
                    ("rice", Strategy::Pg)
                };
                let request = order(
                    &format!("trickle-{i}"),
                    &format!("walk-in-{i}"),
                    tiers[i % 3],
                    sku,
                    1,
                    strategy,
                    None,
                );
                let _ = orders.create_order(request).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    });
    browser
        .until("the queue rising", "return Number(document.querySelector('.queue[data-name=\"payments\"]')?.dataset.total ?? 0)", |v| v.as_u64() >= Some(4))
        .await;

    // A lock on tea held by A, with B and C waiting in line behind it.
    let (a, b, c) = (session().await, session().await, session().await);
    let lock_name = format!("{prefix}/locks/sku/tea");
    let held = Mutex::new(&a, &lock_name).unwrap().lock().await.unwrap();
    let (mutex_b, mutex_c) = (
        Mutex::new(&b, &lock_name).unwrap(),
        Mutex::new(&c, &lock_name).unwrap(),
    );
    let wait_b = tokio::spawn(async move { mutex_b.lock().await });
    browser
        .until("B waiting", LOCK, |v| v["waiters"] == 1)
        .await;
    let wait_c = tokio::spawn(async move { mutex_c.lock().await });
    let lease = |s: &Session| format!("{:x}", s.lease());
    browser
        .until("the waiter line", LOCK, |v| {
            v["waiters"] == 2 && v["holder"] == lease(&a)
        })
        .await;
    let line = browser
        .js("return [...document.querySelectorAll('.lock[data-name=\"sku/tea\"] .waiter')].map(w => w.dataset.lease)")
        .await;
    assert_eq!(
        line,
        json!([lease(&b), lease(&c)]),
        "waiters in create-revision order"
    );

    // What a `none` oversell leaves: two buyers read available 25, each wrote back 24,
    // and each added its unit to reserved.
    let pool = services.inventory_db.pool().await;
    sqlx::query("UPDATE stock SET available = 24, reserved = reserved + 2 WHERE sku = 'soap'")
        .execute(&pool)
        .await
        .unwrap();
    browser
        .until(
            "soap flagged",
            "return document.querySelector('tr.sku[data-sku=\"soap\"]')?.dataset.ok",
            |v| v == "false",
        )
        .await;
    let verdict = browser
        .js("return document.querySelector('tr.sku[data-sku=\"soap\"] .verdict').textContent")
        .await;
    assert_eq!(verdict, "BROKEN");
    let color = browser
        .js("return getComputedStyle(document.querySelector('tr.sku[data-sku=\"soap\"] td')).backgroundColor")
        .await;
    assert_eq!(color, "rgb(254, 226, 226)", "the broken row is red");
    assert_eq!(
        browser
            .js("return document.querySelector('tr.sku[data-sku=\"tea\"]').dataset.ok")
            .await,
        "true"
    );
    browser
        .until(
            "the closed sale",
            "return document.querySelector('.sale[data-sale=\"flash-1\"]')?.dataset.closed",
            |v| v == "true",
        )
        .await;

    browser
        .until(
            "a few chart points",
            "return Number(document.querySelector('#charts svg')?.dataset.points ?? 0)",
            |v| v.as_u64() >= Some(8),
        )
        .await;
    // The picture: a held lock with waiters, a queue with items, a closed sale, a break.
    let png = browser.client.screenshot().await.unwrap();
    let target = match std::env::var("CONSOLE_SCREENSHOT") {
        Ok(path) => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console.png"),
    };
    std::fs::write(&target, png).unwrap();
    eprintln!("screenshot: {}", target.display());

    trickle.abort();

    // Unlock: B holds, C waits.
    held.unlock().await.unwrap();
    browser
        .until("B holding", LOCK, |v| {
            v["holder"] == lease(&b) && v["waiters"] == 1
        })
        .await;
    wait_b.await.unwrap().unwrap().unlock().await.unwrap();
    browser
        .until("C holding", LOCK, |v| {
            v["holder"] == lease(&c) && v["waiters"] == 0
        })
        .await;
    wait_c.await.unwrap().unwrap().unlock().await.unwrap();

    // The queue drains.
    browser
        .until(
            "the queue falling to 0",
            "return document.querySelector('.queue[data-name=\"payments\"]')?.dataset.total ?? '0'",
            |v| v == "0",
        )
        .await;

    // A leader change: order-2 campaigns behind the order service, which then crashes.
    let job = election_name(&prefix, ServiceName::Order, "expire-reservations");
    let standby = Election::new(&b, &job).unwrap();
    let campaign = tokio::spawn(async move { standby.campaign("order-2").await });
    let election = "const e = document.querySelector('.election[data-name=\"order/expire-reservations\"]'); \
        return e ? { leader: e.dataset.leader, line: e.querySelectorAll('.waiter').length } : null;";
    let before = browser
        .until("order-2 in line", election, |v| v["line"] == 1)
        .await;
    assert_ne!(before["leader"], "order-2");
    crash_leader(ServiceName::Order, &prefix, "expire-reservations").await;
    browser
        .until("order-2 leading", election, |v| v["leader"] == "order-2")
        .await;
    let _leadership = campaign.await.unwrap().unwrap();
    browser
        .until(
            "the change in the history",
            "return document.getElementById('history').textContent",
            |v| v.as_str().is_some_and(|t| t.contains("order-2 leads")),
        )
        .await;

    // The events timeline filters by primitive.
    browser.js("const f = document.getElementById('event-filter'); f.value = 'lock'; f.dispatchEvent(new Event('change'));").await;
    let shown = browser
        .js("return [...document.querySelectorAll('#events li')].filter(li => !li.hidden).map(li => li.dataset.primitive)")
        .await;
    let shown = shown.as_array().unwrap();
    assert!(
        !shown.is_empty() && shown.iter().all(|p| p == "lock"),
        "{shown:?}"
    );

    let errors = browser
        .js("const e = document.getElementById('errors'); return e.hidden ? '' : e.textContent")
        .await;
    assert_eq!(errors, "", "the page reported errors");
    // The detector works: a failed load on the page (a 404 from the console) shows up
    // in #errors. (An error thrown by a WebDriver script would read only "Script
    // error.": it comes from another origin.)
    browser
        .js("const i = document.createElement('img'); i.src = '/probe.png'; document.body.appendChild(i);")
        .await;
    browser
        .until(
            "the probe's failure",
            "return document.getElementById('errors').textContent",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.contains("failed to load") && t.contains("/probe.png"))
            },
        )
        .await;
    browser.client.close().await.unwrap();
    console.stop().await.unwrap();
}
