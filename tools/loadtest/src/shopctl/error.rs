//! Why a `shopctl` command failed, and its exit status.

use std::time::Duration;

use shop_common::domain::ValidationError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ShopctlError {
    /// The command line names something invalid; nothing was sent.
    #[error("{0}")]
    Input(String),
    #[error("cannot reach the {service} service at {addr}: {reason}")]
    Unreachable {
        service: &'static str,
        addr: String,
        reason: String,
    },
    /// The service refused or failed the call.
    #[error("{service} answered {code:?}: {message}")]
    Rpc {
        service: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("order {order_id} is still {status} after {timeout:?}")]
    WatchTimeout {
        order_id: String,
        status: String,
        timeout: Duration,
    },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

impl ShopctlError {
    /// 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ShopctlError::Input(_) => 2,
            _ => 1,
        }
    }
}

impl From<ValidationError> for ShopctlError {
    fn from(e: ValidationError) -> ShopctlError {
        ShopctlError::Input(e.to_string())
    }
}

/// Turns a service's refusal into [`ShopctlError::Rpc`].
pub(super) fn rpc(service: &'static str) -> impl Fn(tonic::Status) -> ShopctlError {
    move |status| ShopctlError::Rpc {
        service,
        code: status.code(),
        message: status.message().to_owned(),
    }
}
