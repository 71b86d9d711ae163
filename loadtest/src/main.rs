//! `loadtest`: see `loadtest --help` and the crate docs.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Logs only when asked for: the progress bar and the tables own the terminal.
    if shop_common::config::env_var("RUST_LOG").is_some() {
        shop_common::init_telemetry("loadtest", None);
    }
    loadtest::cli::main().await
}
