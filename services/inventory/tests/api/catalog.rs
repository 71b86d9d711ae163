//! The catalog: SetPrices under the RwMutex's write side, Quote under its read side.

use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{lines, TestInventory};

const SKUS: [&str; 5] = ["cup", "jar", "mug", "pot", "urn"];

async fn set_all(app: &TestInventory, price: i64) -> Result<i64, tonic::Status> {
    app.set_prices(&SKUS, price).await
}

async fn quote_all(app: &TestInventory) -> pb::QuoteResponse {
    let items: Vec<(&str, i32)> = SKUS.iter().map(|s| (*s, 2)).collect();
    app.client()
        .quote(pb::QuoteRequest {
            items: lines(&items),
        })
        .await
        .expect("quote")
        .into_inner()
}

#[tokio::test]
async fn a_quote_prices_every_line_at_the_current_version() {
    let app = TestInventory::spawn().await;
    for sku in SKUS {
        app.set_stock(sku, 1).await;
    }
    let v1 = set_all(&app, 250).await.unwrap();
    let quote = quote_all(&app).await;
    assert_eq!(quote.catalog_version, v1);
    assert_eq!(quote.total_minor, 5 * 2 * 250);
    assert!(quote
        .lines
        .iter()
        .all(|l| l.unit_price_minor == 250 && l.line_total_minor == 500));
    let v2 = set_all(&app, 300).await.unwrap();
    assert_eq!(v2, v1 + 1);
    assert_eq!(quote_all(&app).await.total_minor, 5 * 2 * 300);

    // Unpriced and unknown SKUs are told apart.
    app.set_stock("new", 1).await;
    let err = app
        .client()
        .quote(pb::QuoteRequest {
            items: lines(&[("new", 1)]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("no price set for SKU(s): new"),
        "{err:?}"
    );
    let err = app
        .client()
        .set_prices(pb::SetPricesRequest {
            prices: vec![pb::Price {
                sku: "ghost".into(),
                unit_price_minor: 1,
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("unknown SKU(s): ghost"), "{err:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quote_sees_a_repricing_half_done() {
    let app = TestInventory::spawn().await;
    for sku in SKUS {
        app.set_stock(sku, 1).await;
    }
    set_all(&app, 100).await.unwrap();
    let repricing = async {
        for round in 0..10 {
            set_all(&app, if round % 2 == 0 { 200 } else { 100 })
                .await
                .unwrap();
        }
    };
    let quoting = futures::future::join_all((0..30).map(|_| quote_all(&app)));
    let ((), quotes) = futures::join!(repricing, quoting);
    let mut versions = std::collections::BTreeSet::new();
    for quote in quotes {
        let first = quote.lines[0].unit_price_minor;
        assert!(
            quote.lines.iter().all(|l| l.unit_price_minor == first),
            "a quote mixed prices of two versions: {quote:?}"
        );
        versions.insert(quote.catalog_version);
    }
    eprintln!(
        "30 quotes during 10 repricings saw {} versions",
        versions.len()
    );
    app.stop().await;
}
