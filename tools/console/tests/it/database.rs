//! The console's database connections can only read.

use shop_test_support::TestDatabase;

#[tokio::test]
async fn the_console_pool_refuses_writes() {
    let db = TestDatabase::create("console").await;
    let pool = console::sources::read_only_pool(&db.url()).unwrap();
    let read: (i32,) = sqlx::query_as("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(read.0, 1);
    let write = sqlx::query("CREATE TABLE scribble (a INT)")
        .execute(&pool)
        .await;
    let error = write
        .expect_err("a write through the console's pool")
        .to_string();
    assert!(error.contains("read-only transaction"), "{error}");
}
