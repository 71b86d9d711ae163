//! `console`: the shop's live console (see the library's docs and docs/console.md).

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let settings = console::Settings::from_env()?;
    let console = console::Console::build(settings).await?;
    console
        .run_until_stopped(shop_common::shutdown_signal())
        .await
}
