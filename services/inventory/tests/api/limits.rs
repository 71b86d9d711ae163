//! Request size limits: a message over `GRPC_MAX_MESSAGE_BYTES` is refused before
//! the handler runs. tonic answers OUT_OF_RANGE ("decoded message length too large:
//! found N bytes, the limit is: M bytes"), where the gRPC spec suggests
//! RESOURCE_EXHAUSTED; both mean "too big", and the message says by how much.

use shop_proto::v1 as pb;
use tonic::Code;

use crate::helpers::TestInventory;

#[tokio::test]
async fn an_oversized_request_is_refused_with_the_limit_and_changes_nothing() {
    let app = TestInventory::spawn_with(|s| s.common.limits.max_message_bytes = 4096).await;
    app.set_stock("tea", 5).await;

    let huge = pb::SetStockRequest {
        sku: "x".repeat(10_000),
        available: 1,
        strategy: 0,
    };
    let err = app.client().set_stock(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().contains("too large") && err.message().contains("4096"),
        "the message gives the limit: {}",
        err.message()
    );
    // A cart of 2000 lines is far over the limit as well.
    let many = pb::ReserveRequest {
        order_id: uuid::Uuid::new_v4().to_string(),
        items: (0..2000)
            .map(|i| pb::LineItem {
                sku: format!("sku-{i}"),
                quantity: 1,
            })
            .collect(),
        ..Default::default()
    };
    let err = app.client().reserve(many).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Under the limit the handler answers as usual, on the same connection.
    let under = pb::SetStockRequest {
        sku: "x".repeat(3_000),
        available: 1,
        strategy: 0,
    };
    let err = app.client().set_stock(under).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the SKU set up above exists");
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reservations, 0);
    app.stop().await;
}
