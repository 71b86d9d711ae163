//! etcd servers these tests start themselves (the `etcd` binary on `PATH`, as
//! `scripts/install-deps.sh --env` provides and CI has), each on free loopback ports
//! with its own data directory, so the shared etcd is never touched: one member (for
//! auth and TLS), or a three-member cluster whose peer traffic runs through proxies of
//! the test's own, so that one member can be cut off from the other two.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use coord::etcd_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The tests that start etcd run one at a time: each picks free ports and then starts
/// etcd on them, and two of them doing so at once could pick the same port.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coord-own-etcd-{label}-{:016x}",
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An etcd process of our own, killed (and its data removed) when dropped.
pub struct OwnEtcd {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// How a single server is to be started.
#[derive(Default)]
pub struct ServerTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Require client certificates signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// One member's part of a cluster: its name, where it listens for peers, the URL the
/// others reach it by, and the whole `--initial-cluster`.
struct Membership<'a> {
    name: &'a str,
    listen_peer: u16,
    advertise_peer: u16,
    initial_cluster: &'a str,
    extra: &'a [&'a str],
}

impl OwnEtcd {
    /// A one-member cluster, with TLS as `tls` says.
    pub async fn start(label: &str, tls: ServerTls) -> OwnEtcd {
        let peer = free_port();
        let initial_cluster = format!("own=http://127.0.0.1:{peer}");
        let member = Membership {
            name: "own",
            listen_peer: peer,
            advertise_peer: peer,
            initial_cluster: &initial_cluster,
            extra: &[],
        };
        let etcd = OwnEtcd::spawn(label, &member, &tls);
        etcd.wait_until_listening().await;
        etcd
    }

    fn spawn(label: &str, member: &Membership<'_>, tls: &ServerTls) -> OwnEtcd {
        let dir = scratch_dir(label);
        let port = free_port();
        let scheme = if tls.cert.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{port}");
        let mut command = Command::new("etcd");
        command
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                member.listen_peer
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                member.advertise_peer
            ))
            .arg(format!("--initial-cluster={}", member.initial_cluster))
            .args(member.extra)
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()));
        }
        if let Some(ca) = &tls.client_ca {
            command
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", ca.display()));
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start etcd (is it on PATH? eval \"$(scripts/install-deps.sh --env)\"): {e}"
            )
        });
        OwnEtcd { child, dir, port }
    }

    /// Waits until the client port accepts connections (etcd opens it once ready).
    async fn wait_until_listening(&self) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd on port {} did not start listening", self.port);
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The number of watchers this member serves (its `etcd_debugging_mvcc_watcher_total`).
    pub async fn watchers(&self) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("etcd reports etcd_debugging_mvcc_watcher_total") as u64
    }

    /// The gRPC calls of `method` (`Txn`, `Range`, …) this member has answered so far,
    /// whatever their outcome (its `grpc_server_handled_total`).
    pub async fn handled(&self, method: &str) -> u64 {
        let wanted = format!("grpc_method=\"{method}\"");
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&wanted))
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The member's Prometheus metrics, as text.
    async fn metrics(&self) -> String {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("metrics connection");
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).await.unwrap();
        body
    }

    /// The leader this member knows of (0: none), asked over a connection of its own
    /// that does not require a leader.
    pub async fn known_leader(&self) -> Option<u64> {
        let mut client = Client::connect([self.endpoint()], None).await.ok()?;
        let status = tokio::time::timeout(Duration::from_secs(2), client.status())
            .await
            .ok()?
            .ok()?;
        Some(status.leader())
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three members whose peer traffic passes through proxies of ours (one in front of
/// each member's peer port), so that [`OwnCluster::isolate`] can cut one member off
/// from the other two while every client port stays reachable.
pub struct OwnCluster {
    pub members: Vec<OwnEtcd>,
    /// Which member is cut off (its etcd member ID, as etcd's peer requests name it).
    cut: watch::Sender<Option<String>>,
    proxies: Vec<tokio::task::JoinHandle<()>>,
}

impl OwnCluster {
    /// Starts three members (short heartbeats, so leader loss shows within a second or
    /// two) and returns once they have a leader.
    pub async fn start(label: &str) -> OwnCluster {
        let names = ["m0", "m1", "m2"];
        let listen: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let advertise: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let initial_cluster = names
            .iter()
            .zip(&advertise)
            .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let (cut, _) = watch::channel(None);
        let mut proxies = Vec::new();
        let mut members = Vec::new();
        for i in 0..names.len() {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", advertise[i]))
                .await
                .expect("peer proxy port");
            proxies.push(tokio::spawn(proxy(listener, listen[i], i, cut.subscribe())));
            let member = Membership {
                name: names[i],
                listen_peer: listen[i],
                advertise_peer: advertise[i],
                initial_cluster: &initial_cluster,
                extra: &[
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                    "--initial-cluster-state=new",
                ],
            };
            members.push(OwnEtcd::spawn(label, &member, &ServerTls::default()));
        }
        for member in &members {
            member.wait_until_listening().await;
        }
        let cluster = OwnCluster {
            members,
            cut,
            proxies,
        };
        for member in &cluster.members {
            cluster.wait_for_leader(member, true).await;
        }
        cluster
    }

    /// Waits until `member` knows a leader (`true`) or knows none (`false`).
    pub async fn wait_for_leader(&self, member: &OwnEtcd, has_leader: bool) {
        for _ in 0..300 {
            if let Some(leader) = member.known_leader().await {
                if (leader != 0) == has_leader {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "member {} never reported has_leader={has_leader}",
            member.endpoint()
        );
    }

    /// Cuts member `index` off from the other two: its peer proxy drops everything, and
    /// the others' proxies drop what it sends. Connections already open are closed.
    pub async fn isolate(&self, index: usize) {
        let mut client = Client::connect([self.members[index].endpoint()], None)
            .await
            .unwrap();
        let id = client
            .status()
            .await
            .expect("member status")
            .header()
            .expect("a response header")
            .member_id();
        self.cut.send_replace(Some(format!("{id:x}|{index}")));
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.abort();
        }
    }
}

/// The peer proxy in front of member `index`: forwards each connection to its peer
/// port, unless the member is cut off or the connection comes from the member that
/// is (etcd names the sender of every peer request in its `X-Server-From` header).
async fn proxy(
    listener: tokio::net::TcpListener,
    target: u16,
    index: usize,
    cut: watch::Receiver<Option<String>>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(forward(inbound, target, index, cut.clone()));
    }
}

async fn forward(
    mut inbound: tokio::net::TcpStream,
    target: u16,
    index: usize,
    mut cut: watch::Receiver<Option<String>>,
) {
    // The request head names the sender.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match inbound.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let from = String::from_utf8_lossy(&head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-server-from")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let is_cut = move |state: &Option<String>| {
        state.as_deref().is_some_and(|state| {
            let (id, cut_index) = state.split_once('|').unwrap();
            cut_index == index.to_string() || id == from
        })
    };
    if is_cut(&cut.borrow()) {
        return;
    }
    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    if outbound.write_all(&head).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.wait_for(|state| is_cut(state)) => {}
    }
}
