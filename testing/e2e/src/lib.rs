//! The compose stack as a test fixture, shared by the end-to-end suite
//! (`tests/compose.rs`) and the fault suite (`src/bin/faults.rs`).
//!
//! [`Stack::up`] brings compose.yaml up with testcontainers' docker compose support
//! (random host ports, a short session TTL), and the methods reach its services from
//! the host: gRPC clients by service name, an etcd client, `docker` on a service's
//! container. Needs Docker, the compose v2 plugin and the images compose.yaml names;
//! offline, `scripts/images.sh all` builds stand-ins first (`.ci/run` does).

pub mod faults;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coord::etcd_client::Client as EtcdClient;
use shop_common::auth::{BearerToken, InternalToken};
use shop_proto::v1::inventory_service_client::InventoryServiceClient;
use shop_proto::v1::order_service_client::OrderServiceClient;
use shop_proto::v1::payment_service_client::PaymentServiceClient;
use testcontainers::compose::DockerCompose;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel whose calls present the stack's internal token (an operator's client).
pub type Operator = InterceptedService<Channel, BearerToken>;

/// Session TTL of every service in the stack: short, so failover is quick to see.
pub const TTL: Duration = Duration::from_secs(2);

/// Host-port variables compose.yaml publishes; set to 0 so Docker picks free ports.
const HOST_PORTS: [&str; 9] = [
    "ETCD_HOST_PORT",
    "ORDER_HOST_PORT",
    "ORDER2_HOST_PORT",
    "INVENTORY_HOST_PORT",
    "INVENTORY2_HOST_PORT",
    "PAYMENT_HOST_PORT",
    "PAYMENT2_HOST_PORT",
    "JAEGER_HOST_PORT",
    "CONSOLE_HOST_PORT",
];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A progress line with the time since `started`.
pub fn step(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// Runs `docker <args>`; `Err` with its stderr if it fails.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("docker");
    command.args(args);
    output_of(command, &format!("docker {args:?}")).await
}

/// Runs `command`: its stdout, or `Err` naming it (`what`) with its stderr.
async fn output_of(mut command: tokio::process::Command, what: &str) -> Result<String, String> {
    let out = command.output().await.map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The running stack.
pub struct Stack {
    compose: DockerCompose,
    project: String,
    files: Vec<PathBuf>,
    /// The environment the stack was brought up with.
    base_env: HashMap<String, String>,
    /// The environment compose commands run with now (base + a recreate's extras).
    env: HashMap<String, String>,
    /// The stack's internal token (made by `scripts/secrets.sh` for this project).
    token: InternalToken,
}

impl Stack {
    /// `docker compose -p <project> -f compose.yaml [-f extra…] up --wait`, with random
    /// host ports, the short [`TTL`] and `extra_env`.
    pub async fn up(
        project: &str,
        extra_files: &[PathBuf],
        extra_env: &[(&str, &str)],
    ) -> Result<Stack, String> {
        let mut files = vec![
            repo_root().join("compose.yaml"),
            repo_root().join("docker/compose.etcd.yaml"),
        ];
        files.extend(extra_files.iter().cloned());
        // The project's own internal token, made once like a deployment's; compose's
        // `internal-token` service takes it from INTERNAL_TOKEN_DIR.
        let token_dir = repo_root().join(format!(".secrets/{project}"));
        let token_path = token_dir
            .join("internal-token")
            .to_string_lossy()
            .into_owned();
        let mut make = tokio::process::Command::new(repo_root().join("scripts/secrets.sh"));
        make.arg(&token_path);
        output_of(make, "scripts/secrets.sh").await?;
        let token = InternalToken::from_file("INTERNAL_TOKEN_FILE", &token_path)
            .map_err(|e| e.to_string())?;
        let mut env = Self::environment(extra_env);
        env.insert(
            "INTERNAL_TOKEN_DIR".to_owned(),
            token_dir.to_string_lossy().into_owned(),
        );
        let mut compose = DockerCompose::with_local_client(files.as_slice())
            .with_project_name(project)
            .with_env_vars(env.clone())
            .with_wait(true);
        compose.up().await.map_err(|e| format!("compose up: {e}"))?;
        Ok(Stack {
            compose,
            project: project.to_owned(),
            files,
            base_env: env.clone(),
            env,
            token,
        })
    }

    fn environment(extra: &[(&str, &str)]) -> HashMap<String, String> {
        Self::with(
            HOST_PORTS
                .into_iter()
                .map(|k| (k.to_owned(), "0".to_owned()))
                .chain([("ETCD_SESSION_TTL".to_owned(), TTL.as_secs().to_string())])
                .collect(),
            extra,
        )
    }

    fn with(mut env: HashMap<String, String>, extra: &[(&str, &str)]) -> HashMap<String, String> {
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// Runs `docker compose -p <project> -f … <args>` with the stack's environment.
    pub async fn compose(&self, args: &[&str]) -> Result<String, String> {
        let mut command = tokio::process::Command::new("docker");
        command.arg("compose").args(["-p", &self.project]);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(args).envs(&self.env);
        output_of(command, &format!("docker compose {args:?}")).await
    }

    /// The container of a compose service (one container per service here).
    pub fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// `docker <verb> [args…] <service's container>`.
    pub async fn docker_on(&self, verb: &[&str], service: &str) -> Result<String, String> {
        let container = self.container(service);
        let mut args = verb.to_vec();
        args.push(&container);
        docker(&args).await
    }

    /// The host port published for `service:port`. Asked of compose each time, since
    /// a re-created container gets a new one.
    pub async fn port(&self, service: &str, port: u16) -> Result<u16, String> {
        if self.compose.service(service).is_none() {
            return Err(format!("{service} is not in the stack"));
        }
        let published = self.compose(&["port", service, &port.to_string()]).await?;
        published
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| format!("published port of {service}:{port}: {published:?}"))
    }

    /// `http://127.0.0.1:<published port>` of `service:port`.
    pub async fn url(&self, service: &str, port: u16) -> Result<String, String> {
        Ok(format!(
            "http://127.0.0.1:{}",
            self.port(service, port).await?
        ))
    }

    pub async fn channel(&self, service: &str, port: u16) -> Result<Channel, String> {
        let url = self.url(service, port).await?;
        Channel::from_shared(url)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect to {service}: {e}"))
    }

    /// The stack's internal token, for an operator's own clients.
    pub fn token(&self) -> &InternalToken {
        &self.token
    }

    /// An operator's client of `service` (it presents the internal token).
    pub async fn order(&self, service: &str) -> OrderServiceClient<Operator> {
        let channel = self.channel(service, 50051).await.expect("order channel");
        OrderServiceClient::with_interceptor(channel, self.token.interceptor())
    }

    /// An operator's client of `service` (it presents the internal token).
    pub async fn inventory(&self, service: &str) -> InventoryServiceClient<Operator> {
        let channel = self
            .channel(service, 50052)
            .await
            .expect("inventory channel");
        InventoryServiceClient::with_interceptor(channel, self.token.interceptor())
    }

    /// An operator's client of `service` (it presents the internal token).
    pub async fn payment(&self, service: &str) -> PaymentServiceClient<Operator> {
        let channel = self.channel(service, 50053).await.expect("payment channel");
        PaymentServiceClient::with_interceptor(channel, self.token.interceptor())
    }

    /// An etcd client on the published member (etcd1).
    pub async fn etcd(&self) -> EtcdClient {
        let port = self.port("etcd1", 2379).await.expect("etcd port");
        EtcdClient::connect([format!("127.0.0.1:{port}")], None)
            .await
            .expect("etcd")
    }

    /// Re-creates one service's container with extra environment (compose notices the
    /// changed configuration) and waits until it is healthy again. The extras replace
    /// those of the previous recreate.
    pub async fn recreate(&mut self, service: &str, extra: &[(&str, &str)]) {
        self.env = Self::with(self.base_env.clone(), extra);
        self.start_again(service).await.expect("recreate");
    }

    /// Re-creates `services` with `extra` environment (replacing a previous call's
    /// extras; compose notices the changed configuration) and waits until they are
    /// healthy.
    pub async fn reconfigure(
        &mut self,
        services: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<(), String> {
        self.env = Self::with(self.base_env.clone(), extra);
        let mut args = vec!["up", "-d", "--no-deps", "--wait"];
        args.extend_from_slice(services);
        self.compose(&args).await.map(|_| ())
    }

    /// Brings a stopped, killed or changed service back (without its dependencies)
    /// and waits until it is healthy.
    pub async fn start_again(&self, service: &str) -> Result<(), String> {
        self.compose(&["up", "-d", "--no-deps", "--wait", service])
            .await
            .map(|_| ())
    }

    /// `docker compose down -v`: the stack and its volumes are gone.
    pub async fn down(self) -> Result<(), String> {
        self.compose(&["down", "-v", "-t", "2"]).await.map(|_| ())
    }
}
