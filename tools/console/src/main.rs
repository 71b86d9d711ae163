//! `console`: the shop's live console (see the library's docs and docs/console.md).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The shop's one logging setup (RUST_LOG; colours only on a terminal).
    let _logs = shop_common::telemetry::init_logs();
    let settings = console::Settings::from_env()?;
    let console = console::Console::build(settings).await?;
    console
        .run_until_stopped(shop_common::shutdown_signal())
        .await
}
