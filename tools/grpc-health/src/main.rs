//! `grpc-health [ADDR] [SERVICE]` — a container healthcheck probe.
//!
//! Asks the gRPC health service (`grpc.health.v1`) at `ADDR` (default: the port of
//! `GRPC_ADDR` on 127.0.0.1, else 127.0.0.1:50051) whether `SERVICE` (default: the
//! whole server) is SERVING. Exits 0 if it is, 1 if not or unreachable, 2 on bad
//! arguments. It ships in the service image so compose needs no extra tools.

use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(default_addr);
    let service = args.next().unwrap_or_default();
    let uri = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(uri.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2)),
        Err(e) => {
            eprintln!("grpc-health: bad address {uri}: {e}");
            return ExitCode::from(2);
        }
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("grpc-health: cannot reach {uri}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
    {
        Ok(resp) if resp.get_ref().status == ServingStatus::Serving as i32 => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!(
                "grpc-health: {uri} reports status {}",
                resp.get_ref().status
            );
            ExitCode::FAILURE
        }
        Err(status) => {
            eprintln!("grpc-health: {uri}: {status}");
            ExitCode::FAILURE
        }
    }
}

/// 127.0.0.1 at the port of `GRPC_ADDR` (the server binds that address, often 0.0.0.0).
fn default_addr() -> String {
    let port = std::env::var("GRPC_ADDR")
        .ok()
        .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_owned()))
        .unwrap_or_else(|| "50051".to_owned());
    format!("127.0.0.1:{port}")
}
