//! `inventory`: the inventory gRPC service. Configuration comes from the environment
//! (see `inventory_service::Settings` and README.md).

use inventory_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let telemetry = shop_common::init_telemetry(&settings.common, inventory_service::VERSION);
    telemetry
        .flush_after(async {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shop_common::shutdown_signal()).await
        })
        .await
}
