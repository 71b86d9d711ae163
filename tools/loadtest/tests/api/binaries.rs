//! The `loadtest` and `shopctl` binaries, run as a user runs them.

use std::time::Duration;

use crate::helpers::Shop;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(binary: &str, args: &[String]) -> Output {
    let out = tokio::process::Command::new(binary)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_json_has_one_object_per_strategy_with_the_required_fields() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    let mut args = shop.loadtest_args();
    args.extend(strings(&[
        "--json",
        "--strategy",
        "pg,stm",
        "--buyers",
        "20",
        "--stock",
        "8",
        "--run-id",
        "jsontest",
    ]));
    let out = run(env!("CARGO_BIN_EXE_loadtest"), &args).await;
    assert_eq!(
        out.code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(objects.len(), 2, "{}", out.stdout);
    for (object, strategy) in objects.iter().zip(["pg", "stm"]) {
        assert_eq!(object["strategy"], strategy);
        for field in [
            "buyers",
            "stock",
            "orders_accepted",
            "units_sold",
            "oversold",
            "lost_orders",
            "duplicate_payments",
            "conservation_violations",
            "status_mismatches",
            "limit_violations",
            "provider_charges",
            "provider_refunds",
            "duplicate_charges",
        ] {
            assert!(object[field].is_i64(), "{field} in {object}");
        }
        for field in ["throughput_rps", "p50_ms", "p95_ms", "p99_ms"] {
            assert!(object[field].is_f64(), "{field} in {object}");
        }
        assert_eq!(
            (object["buyers"].as_i64(), object["stock"].as_i64()),
            (Some(20), Some(8))
        );
        assert_eq!(object["orders_accepted"], 8);
        assert_eq!(object["oversold"], 0);
        for field in [
            "conservation_violations",
            "status_mismatches",
            "limit_violations",
            "duplicate_charges",
        ] {
            assert_eq!(object[field], 0, "{field} in {object}");
        }
        let base = format!("lt-jsontest-{strategy}-");
        assert_eq!(object["units_sold"].as_i64(), Some(shop.sold(&base).await));
    }

    // The same run id again: refused before anything is ordered.
    let out = run(env!("CARGO_BIN_EXE_loadtest"), &args).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("was used before"), "{}", out.stderr);
    // Bad options: exit status 2 and the reason.
    let out = run(
        env!("CARGO_BIN_EXE_loadtest"),
        &strings(&["--processes", "3"]),
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--run-id"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopctl_sets_and_shows_stock_follows_an_order_and_lists_leaders() {
    let shop = Shop::spawn(Duration::from_millis(2)).await;
    let shopctl = |extra: &[&str]| {
        let mut args = shop.binary_args();
        args.extend(strings(extra));
        async move { run(env!("CARGO_BIN_EXE_shopctl"), &args).await }
    };

    let out = shopctl(&["stock", "set", "tea", "5", "--strategy", "pg"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        "tea: available 5, reserved 0, sold 0 (strategy pg, fence token 0)"
    );

    let out = shopctl(&[
        "order",
        "create",
        "--item",
        "tea:2",
        "--strategy",
        "pg",
        "--tier",
        "gold",
        "--watch",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains("RESERVED") && first.contains("2×tea"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().last().unwrap().contains("PAID"),
        "{}",
        out.stdout
    );
    // The order is PAID before inventory commits its stock; the commit follows.
    let committed = "tea: available 3, reserved 0, sold 2 (strategy pg, fence token 0)";
    let mut shown = String::new();
    for _ in 0..100 {
        shown = shopctl(&["stock", "get", "tea"])
            .await
            .stdout
            .trim()
            .to_owned();
        if shown == committed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shown, committed);

    let out = shopctl(&["leaders"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("inventory") && out.stdout.contains("reconcile-stock"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("expire-reservations"), "{}", out.stdout);
    let out = shopctl(&["queue"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("payment queue: "), "{}", out.stdout);

    // Bad input never reaches a service: exit status 2 and what is wrong.
    for (args, text) in [
        (&["stock", "set", "tea", "-3"][..], "available"),
        (&["stock", "get", "bad sku"][..], "sku"),
        (&["order", "create", "--item", "tea:0"][..], "item[0]"),
        (&["order", "watch", "not-a-uuid"][..], "order_id"),
        (&["sale", "create", "s1", "--limit", "-1"][..], "limit"),
    ] {
        let out = shopctl(args).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(text), "{args:?}: {}", out.stderr);
    }
    // A service's refusal: exit status 1 with its code and message.
    let out = shopctl(&["stock", "get", "coffee"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("inventory answered NotFound"),
        "{}",
        out.stderr
    );
    let out = run(
        env!("CARGO_BIN_EXE_shopctl"),
        &strings(&["--inventory-addr", "127.0.0.1:1", "stock", "get", "tea"]),
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot reach the inventory service"),
        "{}",
        out.stderr
    );
}
