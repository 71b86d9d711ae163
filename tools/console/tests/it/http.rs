//! The console's own bad input, over plain HTTP: every refusal is a 4xx with a reason.

use crate::support::{http, start_console, Sources};
use shop_test_support::unique_etcd_prefix;

#[tokio::test]
async fn pages_and_api_answer_and_bad_requests_get_a_clear_4xx() {
    let console = start_console(&unique_etcd_prefix("console-http"), Sources::default()).await;
    let addr = console.addr();

    let (status, content_type, body) = http(addr, "GET", "/").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(body.contains("<script src=\"/app.js\">"));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/api/state", "application/json"),
    ] {
        let (status, content_type, _) = http(addr, "GET", path).await;
        assert_eq!(
            (status, content_type.starts_with(kind)),
            (200, true),
            "{path}: {content_type}"
        );
    }
    let (status, _, body) = http(addr, "GET", "/api/events/recent?primitive=lock&limit=5").await;
    assert_eq!((status, body.as_str()), (200, "[]"));

    let refusals = [
        ("GET", "/nope", 404, "no such page: /nope"),
        ("GET", "/api/stat", 404, "no such page"),
        ("POST", "/api/state", 405, "the console only reads"),
        ("DELETE", "/", 405, "use GET"),
        (
            "GET",
            "/api/state?x=1",
            400,
            "unknown query parameter \"x\": this route takes none",
        ),
        (
            "GET",
            "/api/events?primitive=locks",
            400,
            "primitive \"locks\" is not one of all, lock,",
        ),
        (
            "GET",
            "/api/events?primitive=lock&primitive=queue",
            400,
            "given twice",
        ),
        (
            "GET",
            "/api/events?limit=3",
            400,
            "this route takes primitive",
        ),
        (
            "GET",
            "/api/events/recent?limit=0",
            400,
            "limit \"0\" is not a whole number from 1 to 1000",
        ),
        ("GET", "/api/events/recent?limit=ten", 400, "limit \"ten\""),
        (
            "GET",
            "/api/events/recent?limit=1001",
            400,
            "from 1 to 1000",
        ),
        ("GET", "/api/events/recent?primitive=%FF", 400, "not UTF-8"),
    ];
    for (method, target, want, says) in refusals {
        let (status, content_type, body) = http(addr, method, target).await;
        assert_eq!(status, want, "{method} {target}: {body}");
        assert!(
            content_type.starts_with("text/plain"),
            "{method} {target}: {content_type}"
        );
        assert!(
            body.contains(says),
            "{method} {target}: {body:?} should say {says:?}"
        );
    }
    console.stop().await.unwrap();
}
