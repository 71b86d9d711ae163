//! `order`: the order gRPC service. Configuration comes from the environment (see
//! `order_service::Settings` and README.md).

use order_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let telemetry = shop_common::init_telemetry(&settings.common, order_service::VERSION);
    telemetry
        .flush_after(async {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shop_common::shutdown_signal()).await
        })
        .await
}
