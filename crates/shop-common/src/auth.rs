//! Who may call what: the customer API is open, the internal API needs the shop's
//! internal token.
//!
//! Every shop server runs [`InternalAuthLayer`] around its routes. It lets a request
//! through without credentials only when its method is in [`PUBLIC_METHODS`] (what a
//! customer needs: CreateOrder, GetOrder and the read-only queries) or belongs to
//! health and reflection; **every other method** — PaymentResult, Reserve, Commit,
//! Release, SetStock, CreateSale, OpenSale, SetPrices, and any method added later —
//! needs `authorization: Bearer <token>` with the token from `INTERNAL_TOKEN_FILE`.
//! A request without the header is refused UNAUTHENTICATED, one with another token
//! PERMISSION_DENIED; either way the handler never runs, so nothing changes.
//!
//! The token is shared by the services (order → inventory, payment → order) and the
//! operator's tools (shopctl, the load tester). It is read from a file (a Docker
//! secret), never from code, and never appears in `Debug` output. A service without
//! `INTERNAL_TOKEN_FILE` refuses to start: the internal API is never open by default.
//!
//! Clients: [`InternalToken::interceptor`] adds the header to every call of a generated
//! client (`InventoryServiceClient::with_interceptor(channel, token.interceptor())`);
//! the services' own [`crate::propagation::TracedChannel`] carries it the same way.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::MetadataValue;
use tonic::Status;
use tower::Service;

use crate::env::ConfigError;

/// The methods anybody may call: a customer's orders and read-only queries. The rest
/// of `shop.v1` is internal (fail closed: a new method is internal until listed here).
pub const PUBLIC_METHODS: &[&str] = &[
    "/shop.v1.OrderService/CreateOrder",
    "/shop.v1.OrderService/GetOrder",
    "/shop.v1.OrderService/ListLeaders",
    "/shop.v1.InventoryService/GetStock",
    "/shop.v1.InventoryService/GetSale",
    "/shop.v1.InventoryService/Quote",
    "/shop.v1.InventoryService/ListLeaders",
    "/shop.v1.PaymentService/GetPayment",
    "/shop.v1.PaymentService/QueueDepth",
    "/shop.v1.PaymentService/ListLeaders",
];

/// Shortest token accepted: a guessable token is no authentication.
const MIN_TOKEN_LEN: usize = 16;

/// Whether `path` (`/package.Service/Method`) may be called without the token.
pub fn is_public(path: &str) -> bool {
    PUBLIC_METHODS.contains(&path)
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
}

/// The internal token. Cheap to clone; `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct InternalToken(Arc<str>);

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(<redacted>)")
    }
}

impl InternalToken {
    /// A token from its text; at least 16 characters, printable ASCII (it travels in
    /// an HTTP/2 header).
    pub fn new(token: &str) -> Result<InternalToken, ConfigError> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(ConfigError(format!(
                "the internal token must be at least {MIN_TOKEN_LEN} characters"
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(
                "the internal token must be printable ASCII without spaces".into(),
            ));
        }
        Ok(InternalToken(token.into()))
    }

    /// The token in the file `path` (variable `var` named it), e.g. a Docker secret.
    pub fn from_file(var: &str, path: &str) -> Result<InternalToken, ConfigError> {
        let text =
            coord::config::read_secret_file(var, path).map_err(|e| ConfigError(e.to_string()))?;
        InternalToken::new(&text).map_err(|e| ConfigError(format!("{var}: {path}: {}", e.0)))
    }

    /// The token from the file `INTERNAL_TOKEN_FILE` names (looked up with `lookup`);
    /// `None` when the variable is unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<InternalToken>, ConfigError> {
        lookup("INTERNAL_TOKEN_FILE")
            .filter(|p| !p.trim().is_empty())
            .map(|path| InternalToken::from_file("INTERNAL_TOKEN_FILE", path.trim()))
            .transpose()
    }

    /// A fresh random token (tests; `scripts/secrets.sh` makes the deployed one).
    pub fn random() -> InternalToken {
        let bytes: [u8; 24] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        InternalToken(hex.into())
    }

    /// HMAC-SHA256 of `message` under this token: a seal only a holder of the token
    /// can make (see `crate::payments::PaymentItem::seal`).
    pub(crate) fn mac(&self, message: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(message);
        mac
    }

    /// `Bearer <token>`, the `authorization` header's value.
    fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&format!("Bearer {}", self.0)).expect("checked printable ASCII")
    }

    /// Adds the token to `headers` (a client's outgoing request).
    pub fn authorize(&self, headers: &mut http::HeaderMap) {
        headers.insert(http::header::AUTHORIZATION, self.header_value());
    }

    /// Whether `presented` is this token, in time that does not depend on where they
    /// differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// A tonic interceptor that adds the token to every call of a generated client.
    pub fn interceptor(&self) -> BearerToken {
        BearerToken(Some(self.clone()))
    }
}

/// A client channel that presents the internal token on every call (an operator's
/// tool: `InventoryServiceClient<Authorized>`).
pub type Authorized =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>;

/// A client interceptor that adds the internal token when there is one (an operator's
/// tool run without a token file makes customer calls only).
#[derive(Clone, Debug, Default)]
pub struct BearerToken(pub Option<InternalToken>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {}", token.0)
                .parse()
                .map_err(|_| Status::internal("the internal token is not a header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Why an internal call was refused, or `None` if `request` may go through.
pub fn check(token: &InternalToken, request: &http::Request<Body>) -> Option<Status> {
    let path = request.uri().path();
    if is_public(path) {
        return None;
    }
    let Some(presented) = request.headers().get(http::header::AUTHORIZATION) else {
        return Some(Status::unauthenticated(format!(
            "{path} is internal: it needs the shop's internal token (authorization: Bearer …)"
        )));
    };
    let presented = presented.as_bytes();
    let ok = presented
        .strip_prefix(b"Bearer ")
        .is_some_and(|t| token.matches(t));
    if ok {
        None
    } else {
        Some(Status::permission_denied(format!(
            "{path} is internal and the token presented is not the shop's"
        )))
    }
}

/// The tower layer every shop server runs: see the module docs.
#[derive(Debug, Clone)]
pub struct InternalAuthLayer {
    pub token: InternalToken,
}

impl<S> tower::Layer<S> for InternalAuthLayer {
    type Service = InternalAuth<S>;

    fn layer(&self, inner: S) -> InternalAuth<S> {
        InternalAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// A gRPC service whose internal methods need the token; see [`InternalAuthLayer`].
#[derive(Debug, Clone)]
pub struct InternalAuth<S> {
    inner: S,
    token: InternalToken,
}

impl<S> Service<http::Request<Body>> for InternalAuth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(refused) = check(&self.token, &request) {
            tracing::warn!(path = request.uri().path(), code = ?refused.code(), "internal call refused");
            return Box::pin(async move { Ok(refused.into_http()) });
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, authorization: Option<&str>) -> http::Request<Body> {
        let mut builder = http::Request::builder().uri(format!("http://shop{path}"));
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn customers_reach_the_public_methods_only() {
        let token = InternalToken::random();
        assert!(check(&token, &request("/shop.v1.OrderService/CreateOrder", None)).is_none());
        assert!(check(&token, &request("/grpc.health.v1.Health/Check", None)).is_none());
        for internal in [
            "/shop.v1.OrderService/PaymentResult",
            "/shop.v1.InventoryService/Commit",
            "/shop.v1.InventoryService/SetStock",
            "/shop.v1.InventoryService/SomethingNew",
        ] {
            let refused = check(&token, &request(internal, None)).expect(internal);
            assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{internal}");
            let refused = check(
                &token,
                &request(internal, Some("Bearer not-the-token-at-all")),
            )
            .expect(internal);
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{internal}");
            let mut headers = http::HeaderMap::new();
            token.authorize(&mut headers);
            let value = headers["authorization"].to_str().unwrap().to_owned();
            assert!(check(&token, &request(internal, Some(&value))).is_none());
        }
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused_and_never_printed() {
        assert!(InternalToken::new("short").is_err());
        assert!(InternalToken::new("has a space in the middle").is_err());
        let token = InternalToken::new("0123456789abcdef0123").unwrap();
        assert!(!format!("{token:?}").contains("0123456789"));
    }
}
