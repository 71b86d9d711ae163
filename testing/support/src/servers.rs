//! Servers inside a test: a service run in the test's runtime and stopped like SIGTERM
//! stops it, and a TCP forwarder a test cuts to simulate an outage.

use std::future::Future;
use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Logs to the test output when `RUST_LOG` is set (`RUST_LOG=debug cargo test ...`).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A server running inside the test, stopped by [`RunningServer::stop`] (or when
/// dropped).
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Spawns `run(shutdown)` where `shutdown` resolves when the test stops the
    /// server. `addr` is the address the server is bound to.
    pub fn spawn<F, Fut>(addr: SocketAddr, run: F) -> RunningServer
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(shutdown));
        RunningServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, for clients.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server gracefully and returns how its run ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP forwarder a test can cut, to simulate an outage of the server behind it
/// (Postgres, etcd, a peer service) without stopping that server for other tests.
/// While cut, every open connection is closed and new ones are accepted and closed at
/// once, which is what a client sees of a crashed or partitioned server.
///
/// It can also **hold replies** ([`TcpProxy::hold_replies`]): what the client sends
/// still reaches the server, what the server answers waits in the proxy until
/// [`TcpProxy::release_replies`] — a request that takes effect while its caller times
/// out, the case a deadline cannot tell from a failure.
pub struct TcpProxy {
    addr: SocketAddr,
    up: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    replies: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = std::sync::Arc::new(tokio::sync::watch::Sender::new(true));
        let replies = std::sync::Arc::new(tokio::sync::watch::Sender::new(true));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = tokio::spawn({
            let (up, replies, connections) = (up.clone(), replies.clone(), connections.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !*up.borrow() {
                        continue; // dropped: closed at once
                    }
                    let (mut cut, flowing) = (up.subscribe(), replies.subscribe());
                    tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let (client_read, client_write) = inbound.into_split();
                        let (server_read, server_write) = outbound.into_split();
                        tokio::select! {
                            // Requests always flow; replies only while not held.
                            _ = pump(client_read, server_write, None) => {}
                            _ = pump(server_read, client_write, Some(flowing)) => {}
                            _ = cut.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        TcpProxy {
            addr,
            up,
            replies,
            connections,
            task,
        }
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections clients opened to the proxy so far, refused ones (while cut)
    /// included: how often a client tried.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every forwarded connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// Keeps forwarding requests but holds every reply (bytes from the server) in the
    /// proxy until [`TcpProxy::release_replies`].
    pub fn hold_replies(&self) {
        self.replies.send_replace(false);
    }

    /// Lets the held replies, and every later one, through.
    pub fn release_replies(&self) {
        self.replies.send_replace(true);
    }
}

/// Copies `from` to `to`; with a `gate`, each chunk only while the gate is open.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: Option<tokio::sync::watch::Receiver<bool>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(gate) = &mut gate {
            if gate.wait_for(|open| *open).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
