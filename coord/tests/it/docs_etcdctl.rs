//! The `etcdctl` sessions printed in docs/etcd-basics.md (and its Chinese twin) are
//! what etcd answers: every `<!-- etcdctl: GROUP STEP [background [until TEXT]] -->`
//! block is run, in page order, against a **fresh** etcd per GROUP (so revisions start
//! at 1 and the printed numbers are the reader's numbers), and its output compared.
//! STEP names the block (unique in its group); the Chinese twin shows the same blocks
//! and is compared with the same run.
//!
//! - A block is a console session: `$ command`, `> ` continuation lines (a heredoc), then
//!   the output. A plain block runs in one `bash`, so variables set by one command are
//!   seen by the next, as in a reader's terminal.
//! - A `background` block is "terminal 1": each command keeps running while the next
//!   blocks run (a watch, a lock holder, an example with `--hold`). The runner goes on
//!   once etcd sees the command — a new watcher or a new revision, read from etcd's
//!   metrics — or, with `until TEXT`, once the command has printed TEXT. Its output is
//!   what it printed by the end of the group (the runner waits for the lines the page
//!   shows, then stops the commands, last started first).
//! - A `background until TEXT` block holds one command; all that follows it is output.
//! - `cargo run -q -p coord --example NAME -- ARGS` runs the example built for the docs
//!   tests (see `docs_outputs`), against the fresh etcd.
//!
//! Lease ids, cluster and member ids and a lease's remaining seconds differ between runs
//! and are compared as placeholders (`docs::normalize`, plus the zero-padded 16-digit
//! lease ids etcdctl prints). `COORD_UPDATE_DOCS=1` rewrites the blocks.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::docs::{
    block_body, check_blocks, ids_replaced, markdown_files, normalize, pages_with_blocks, updating,
};
use super::docs_outputs::{build_examples, examples_dir};

/// A single-member etcd of its own, in a temporary directory, on free ports.
struct FreshEtcd {
    child: Child,
    client_port: u16,
    _dir: tempdir_lite::Dir,
}

mod tempdir_lite {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl FreshEtcd {
    fn start() -> FreshEtcd {
        let (client_port, peer_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("coord-docs-etcd-{client_port}"));
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "docs", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("docs={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the `etcd` binary on PATH (eval \"$(scripts/install-deps.sh --env)\")");
        let etcd = FreshEtcd {
            child,
            client_port,
            _dir: tempdir_lite::Dir(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while etcd
            .metric("etcd_debugging_mvcc_current_revision")
            .is_none()
        {
            assert!(Instant::now() < deadline, "the fresh etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A gauge from etcd's `/metrics` (plain HTTP/1.0, no client library needed).
    fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.client_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut stream, &mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// What tells that a background command has reached etcd.
    fn activity(&self) -> (f64, f64) {
        (
            self.metric("etcd_debugging_mvcc_current_revision")
                .unwrap_or(0.0),
            self.metric("etcd_debugging_mvcc_watcher_total")
                .unwrap_or(0.0),
        )
    }
}

impl Drop for FreshEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The commands of a console block (`$ ` lines with their `> ` continuations) and,
/// after each, the output the page shows.
fn commands(body: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in body.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            out.push((command.to_owned(), Vec::new()));
        } else if let Some(last) = out.last_mut() {
            let continuation = line.strip_prefix("> ").or((line == ">").then_some(""));
            match continuation {
                Some(more) if last.1.is_empty() => {
                    last.0.push('\n');
                    last.0.push_str(more);
                }
                _ => last.1.push(line.to_owned()),
            }
        }
    }
    out
}

/// The first command of a block, with everything after it as its output.
fn one_command(commands: Vec<(String, Vec<String>)>) -> Vec<(String, Vec<String>)> {
    let mut rest = commands.into_iter();
    let Some((command, mut output)) = rest.next() else {
        return Vec::new();
    };
    for (more, more_output) in rest {
        output.extend(shown(&more).lines().map(str::to_owned));
        output.extend(more_output);
    }
    vec![(command, output)]
}

/// How a command is shown: `$ ` then its continuation lines with `> `.
fn shown(command: &str) -> String {
    let mut lines = command.lines();
    let mut out = format!("$ {}", lines.next().unwrap_or_default());
    for line in lines {
        out.push_str(if line.is_empty() { "\n>" } else { "\n> " });
        out.push_str(line);
    }
    out
}

/// The command as run: examples from the docs tests' build instead of `cargo run`.
fn runnable(command: &str) -> String {
    let dir = examples_dir();
    let mut out = command.to_owned();
    while let Some(at) = out.find("cargo run -q -p coord --example ") {
        let rest = &out[at + "cargo run -q -p coord --example ".len()..];
        let name: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        let after = rest[name.len()..].trim_start();
        let after = after.strip_prefix("--").unwrap_or(after);
        out = format!("{}{}{}", &out[..at], dir.join(&name).display(), after);
    }
    out
}

fn shell(etcd: &FreshEtcd) -> Command {
    let mut command = Command::new("bash");
    command
        .env("ETCDCTL_ENDPOINTS", etcd.endpoint())
        .env("ETCD_ENDPOINTS", etcd.endpoint())
        .env_remove("RUST_LOG");
    command
}

/// Runs a plain block's commands in one bash; returns each command's output.
fn run_foreground(etcd: &FreshEtcd, commands: &[(String, Vec<String>)]) -> Vec<String> {
    const SEPARATOR: &str = "\u{1e}--next-command--";
    let mut script = String::new();
    for (command, _) in commands {
        script.push_str(&format!(
            "echo '{SEPARATOR}'\n{{ {}\n}} 2>&1\n",
            runnable(command)
        ));
    }
    let out = shell(etcd)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(&format!("{SEPARATOR}\n"))
        .skip(1)
        .map(|s| s.trim_end().to_owned())
        .collect()
}

/// A terminal-1 command left running: its printed lines so far.
struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Background {
    fn start(etcd: &FreshEtcd, command: &str, until: Option<&str>) -> Background {
        let before = etcd.activity();
        let mut child = shell(etcd)
            .args(["-c", &format!("exec 2>&1\nexec {}", runnable(command))])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run bash");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let started = Background { child, lines };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match until {
                Some(text) => started.output().contains(text),
                None => etcd.activity() != before,
            };
            if ready {
                return started;
            }
            assert!(
                Instant::now() < deadline,
                "`{command}` never reached etcd; it printed:\n{}",
                started.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until it has printed `want` lines (at most a few seconds; not when
    /// updating, where the page's line counts may be stale).
    fn wait_for(&self, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !updating()
            && Instant::now() < deadline
            && self.lines.lock().expect("lines").len() < want
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until it has printed `want` lines (at most a few seconds), then stops it
    /// (Enter for an example holding a scene, then kill) and returns its output.
    fn stop(&mut self, want: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(if updating() { 2 } else { 10 });
        while Instant::now() < deadline
            && (updating() || self.lines.lock().expect("lines").len() < want)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let stopped = Instant::now() + Duration::from_secs(5);
        while Instant::now() < stopped && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.output()
    }
}

/// A test that fails half-way leaves no command running.
impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcdctl prints lease ids zero-padded to 16 hex digits (`lease revoke`).
fn normalized(text: &str) -> String {
    let out = ids_replaced(text, |run| {
        run.len() == 16
            && run.starts_with('0')
            && run.chars().all(|c| c.is_ascii_hexdigit())
            && run.chars().any(|c| c.is_ascii_alphabetic())
    });
    normalize(&out)
}

fn transcript(commands: &[(String, Vec<String>)], outputs: &[String]) -> String {
    let mut out = Vec::new();
    for ((command, _), output) in commands.iter().zip(outputs) {
        out.push(shown(command));
        if !output.is_empty() {
            out.push(output.clone());
        }
    }
    out.join("\n")
}

#[test]
fn etcdctl_sessions_in_the_docs_are_what_etcd_answers() {
    build_examples();
    let files = markdown_files();
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut problems = Vec::new();
    for (_, text, blocks) in pages_with_blocks("etcdctl", &files, &mut problems) {
        // `GROUP STEP [background [until TEXT]]`; the Chinese twin shows the same
        // blocks, so a block already run (on the English page) is not run again.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            if expected.contains_key(&block.arg) {
                continue;
            }
            let group = block.arg.split_whitespace().next().unwrap_or("").to_owned();
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, members)) => members.push(i),
                None => groups.push((group, vec![i])),
            }
        }
        for (_, members) in groups {
            let etcd = FreshEtcd::start();
            type Running = (usize, Vec<(String, usize)>, Vec<Background>);
            let mut running: Vec<Running> = Vec::new();
            for &i in &members {
                let block = &blocks[i];
                let commands = commands(&block_body(&text, block));
                let options: Vec<&str> = block.arg.splitn(3, ' ').collect();
                let options = options.get(2).copied().unwrap_or("");
                if let Some(rest) = options.trim().strip_prefix("background") {
                    let until = rest.trim().strip_prefix("until ").map(str::trim);
                    // With `until`, the block is one command (an example whose output
                    // may itself show `$ ` lines).
                    let commands = match until {
                        Some(_) => one_command(commands),
                        None => commands,
                    };
                    let started = commands
                        .iter()
                        .map(|(c, _)| Background::start(&etcd, c, until))
                        .collect();
                    let shapes = commands.iter().map(|(c, o)| (c.clone(), o.len())).collect();
                    running.push((i, shapes, started));
                } else {
                    let outputs = run_foreground(&etcd, &commands);
                    expected.insert(block.arg.clone(), transcript(&commands, &outputs));
                    // Terminal 1 shows what terminal 2 just did before the page goes on:
                    // a watch still replaying history when a later block compacts it
                    // would be cancelled.
                    for (_, shapes, started) in &running {
                        for (background, (_, want)) in started.iter().zip(shapes) {
                            background.wait_for(*want);
                        }
                    }
                }
            }
            // Terminal 1's commands stop last started first.
            for (i, shapes, started) in running.into_iter().rev() {
                let mut outputs: Vec<String> = started
                    .into_iter()
                    .zip(&shapes)
                    .rev()
                    .map(|(mut b, (_, want))| b.stop(*want))
                    .collect();
                outputs.reverse();
                let commands: Vec<(String, Vec<String>)> =
                    shapes.into_iter().map(|(c, _)| (c, Vec::new())).collect();
                expected.insert(blocks[i].arg.clone(), transcript(&commands, &outputs));
            }
        }
    }
    problems.extend(check_blocks("etcdctl", &files, &expected, normalized));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
