//! etcd auth and TLS against real etcd servers that these tests start themselves
//! (the `etcd` binary on `PATH`, as `scripts/install-deps.sh --env` provides and CI
//! has), each on free loopback ports with its own data directory, so the shared etcd
//! is never touched. Certificates are made at test time with `openssl`: a throwaway
//! CA, a server certificate for 127.0.0.1, a client certificate, and a second CA
//! that signed nothing the server uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coord::etcd_client::{Client, ConnectOptions};
use coord::{Error, EtcdConfig, EtcdTls, Session};

use crate::own_etcd::{scratch_dir, OwnEtcd, ServerTls, ONE_AT_A_TIME};

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>-ca.pem`, `<name>-ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
}

/// A leaf certificate `<name>.pem` / `<name>.key` signed by CA `ca`, for 127.0.0.1
/// and localhost, usable by a server and a client.
fn make_leaf(dir: &Path, ca: &str, name: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// Throwaway PKI: CA `good` signed `server` and `client`; CA `other` signed nothing.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn create() -> Pki {
        let dir = scratch_dir("pki");
        make_ca(&dir, "good");
        make_ca(&dir, "other");
        make_leaf(&dir, "good", "server");
        make_leaf(&dir, "good", "client");
        Pki { dir }
    }
    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `config` with a short connect timeout, so the failures below come quickly.
fn quick(mut config: EtcdConfig) -> EtcdConfig {
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// Writes and reads back a key, and opens a session: the connection really works.
async fn works(client: Client) {
    let mut kv = client.clone();
    kv.put("/coord-test/security/probe", "yes", None)
        .await
        .expect("put");
    let got = kv.get("/coord-test/security/probe", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"yes");
    let session = Session::builder(client).ttl(5).build().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test]
async fn auth_accepts_the_right_password_and_names_a_wrong_one() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let etcd = OwnEtcd::start("auth", ServerTls::default()).await;
    // Turn auth on: a root user with the root role, as `etcdctl user add root` +
    // `etcdctl auth enable` would.
    let mut admin = Client::connect([etcd.endpoint()], None).await.unwrap();
    admin
        .user_add("root", "right-password", None)
        .await
        .unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    // Right password, given directly and through a secret file.
    let config = EtcdConfig::new(&etcd.endpoint())
        .unwrap()
        .with_credentials("root", "right-password");
    works(config.connect().await.expect("right password")).await;
    let secrets = scratch_dir("secret");
    let password_file = secrets.join("etcd-password");
    std::fs::write(&password_file, "right-password\n").unwrap();
    let endpoint = etcd.endpoint();
    let password_path = password_file.to_string_lossy().into_owned();
    let from_file = EtcdConfig::from_lookup(|name| match name {
        "ETCD_ENDPOINTS" => Some(endpoint.clone()),
        "ETCD_USERNAME" => Some("root".into()),
        "ETCD_PASSWORD_FILE" => Some(password_path.clone()),
        _ => None,
    })
    .unwrap();
    works(from_file.connect().await.expect("password from a file")).await;
    let _ = std::fs::remove_dir_all(&secrets);

    // Wrong password: a typed error naming the user, not a panic or a transport error.
    let wrong = EtcdConfig::new(&etcd.endpoint())
        .unwrap()
        .with_credentials("root", "wrong-password");
    match wrong.connect().await {
        Err(e @ Error::Authentication { .. }) => {
            eprintln!("wrong password: {e}");
            let Error::Authentication { user, reason } = e else {
                unreachable!()
            };
            assert_eq!(user, "root");
            assert!(reason.contains("authentication failed"), "{reason}");
        }
        other => panic!("expected Error::Authentication, got {:?}", other.err()),
    }
    // Unknown user: the same.
    let nobody = EtcdConfig::new(&etcd.endpoint())
        .unwrap()
        .with_credentials("nobody", "x");
    assert!(matches!(
        nobody.connect().await,
        Err(Error::Authentication { .. })
    ));
    // No credentials at all: connecting works, but etcd refuses every request.
    let anonymous = EtcdConfig::new(&etcd.endpoint()).unwrap().connect().await;
    let refused = match anonymous {
        Ok(mut client) => client.put("/coord-test/security/anon", "x", None).await,
        Err(e) => panic!("anonymous connect: {e}"),
    };
    assert!(refused.is_err(), "auth is on: an anonymous put is refused");
}

#[tokio::test]
async fn tls_works_with_the_ca_and_fails_clearly_without_it() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::create();
    let etcd = OwnEtcd::start(
        "tls",
        ServerTls {
            cert: Some(pki.path("server.pem")),
            key: Some(pki.path("server.key")),
            client_ca: None,
        },
    )
    .await;

    // The CA from the environment's variable: TLS on, host:port becomes https.
    let endpoint = etcd.endpoint();
    let ca_path = pki.path("good-ca.pem").to_string_lossy().into_owned();
    let config = EtcdConfig::from_lookup(|name| match name {
        "ETCD_ENDPOINTS" => Some(endpoint.clone()),
        "ETCD_CA_FILE" => Some(ca_path.clone()),
        _ => None,
    })
    .unwrap();
    works(config.connect().await.expect("TLS with the right CA")).await;

    // No CA: plain text to a TLS server.
    let plain = quick(EtcdConfig::new(&etcd.endpoint()).unwrap());
    match plain.connect().await {
        Err(e @ Error::Connect { tls: false, .. }) => {
            let text = e.to_string();
            eprintln!("without the CA: {text}");
            assert!(text.contains(&etcd.endpoint()), "{text}");
            assert!(text.contains("set ETCD_CA_FILE"), "{text}");
        }
        other => panic!("expected Error::Connect without TLS, got {:?}", other.err()),
    }

    // A CA that did not sign the server's certificate.
    let stranger = quick(
        EtcdConfig::new(&etcd.endpoint())
            .unwrap()
            .with_tls(EtcdTls::with_ca(pki.read("other-ca.pem"))),
    );
    match stranger.connect().await {
        Err(e @ Error::Connect { tls: true, .. }) => {
            let text = e.to_string();
            eprintln!("with another CA: {text}");
            assert!(text.contains("TLS on"), "{text}");
        }
        other => panic!("expected Error::Connect with TLS, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_server_that_checks_clients_accepts_our_certificate_only() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::create();
    let etcd = OwnEtcd::start(
        "mtls",
        ServerTls {
            cert: Some(pki.path("server.pem")),
            key: Some(pki.path("server.key")),
            client_ca: Some(pki.path("good-ca.pem")),
        },
    )
    .await;
    let endpoint = etcd.endpoint();
    let file = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("good-ca.pem"), file("client.pem"), file("client.key"));
    let config = EtcdConfig::from_lookup(|name| match name {
        "ETCD_ENDPOINTS" => Some(endpoint.clone()),
        "ETCD_CA_FILE" => Some(ca.clone()),
        "ETCD_CERT_FILE" => Some(cert.clone()),
        "ETCD_KEY_FILE" => Some(key.clone()),
        _ => None,
    })
    .unwrap();
    works(config.connect().await.expect("mutual TLS")).await;

    // The CA alone (no client certificate): the server refuses the handshake.
    let no_cert = quick(
        EtcdConfig::new(&etcd.endpoint())
            .unwrap()
            .with_tls(EtcdTls::with_ca(pki.read("good-ca.pem"))),
    );
    // Under TLS 1.3 the server's refusal can reach the client during the handshake
    // (a connect error) or with the first request after it (an etcd transport error):
    // either way it is an error, never a working client.
    match no_cert.connect().await {
        Ok(_) => panic!("a client without a certificate was accepted"),
        Err(e) => eprintln!("without a client certificate: {e}"),
    }
    // The raw client with no TLS at all cannot talk to it either.
    let raw = Client::connect(
        [etcd.endpoint()],
        Some(ConnectOptions::new().with_connect_timeout(Duration::from_secs(1))),
    )
    .await;
    if let Ok(mut raw) = raw {
        let answered = tokio::time::timeout(Duration::from_secs(3), raw.status()).await;
        assert!(!matches!(answered, Ok(Ok(_))), "plain text gets no answer");
    }
}
