//! `payment`: the payment gRPC service and its queue workers. Configuration comes from
//! the environment (see `payment_service::Settings` and README.md).

use payment_service::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let telemetry = shop_common::init_telemetry(&settings.common, payment_service::VERSION);
    telemetry
        .flush_after(async {
            let app = Application::build(settings).await?;
            app.run_until_stopped(shop_common::shutdown_signal()).await
        })
        .await
}
