//! `loadtest`: see `loadtest --help` and the crate docs.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs only when asked for: the progress bar and the tables own the terminal.
    let telemetry =
        shop_common::config::env_var("RUST_LOG").map(|_| shop_common::telemetry::init_logs());
    let status = loadtest::cli::main().await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    status
}
