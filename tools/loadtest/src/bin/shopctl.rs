//! `shopctl`: see `shopctl --help` and `loadtest::shopctl`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = loadtest::shopctl::Args::parse();
    match loadtest::shopctl::run(args, &mut std::io::stdout().lock()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
