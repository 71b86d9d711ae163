//! The output an example prints, shown on its page, is what it prints today — as Go's
//! `// Output:` comments are checked by `go test`.
//!
//! `<!-- output: EXAMPLE [unordered] [digits] -->` + a text block: the output of
//! `cargo run -p coord --example EXAMPLE` against the test etcd. What differs between
//! runs is replaced before comparing, and the page shows it replaced: the example's
//! process id is `<pid>`, a lease id or other long id `<id>` (as in the key dumps), the
//! number after `token`, `revision` or `(round` (a revision of the shared etcd) `<rev>`.
//! `unordered`: the lines may come in any order (concurrent workers), as Go's
//! `// Unordered output:`. `digits`: every other number is `<n>` as well (counts that
//! depend on timing, such as the STM example's retries).
//!
//! `COORD_UPDATE_DOCS=1 cargo test -p coord --test it docs` rewrites the blocks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use super::docs::{check_blocks, markdown_files, normalize, pages_with_blocks, repo_root};

/// The directory cargo puts this workspace's examples in (beside the test binary's).
pub(super) fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test binary>")
        .join("examples")
}

/// Builds coord's examples (cheap when `cargo test` already did) so the binaries run
/// are those of the code under test.
pub(super) fn build_examples() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "coord", "--examples"])
        .current_dir(repo_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p coord --examples failed");
}

/// `word N` → `word <rev>` for the words that precede a revision of the shared etcd.
fn revisions_replaced(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    'scan: while !rest.is_empty() {
        for word in ["token ", "revision ", "(round "] {
            if let Some(after) = rest.strip_prefix(word) {
                let digits = after.chars().take_while(char::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(word);
                    out.push_str("<rev>");
                    rest = &after[digits..];
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Every run of digits that is not inside a word or a placeholder → `<n>`.
fn digits_replaced(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() && !previous.is_ascii_alphabetic() && previous != '-' {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push_str("<n>");
            previous = 'n';
        } else {
            out.push(c);
            previous = c;
        }
    }
    out
}

/// What the page should show for one run's output.
fn normalized(output: &str, pid: u32, digits: bool) -> String {
    let with_pid = output.replace(&format!("/{pid}"), "/<pid>");
    normalize(&with_pid)
        .lines()
        .map(revisions_replaced)
        .map(|line| if digits { digits_replaced(&line) } else { line })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.sort_unstable();
    lines
}

/// Runs `example` against the test etcd and returns its normalized output.
fn run_example(example: &str, digits: bool) -> String {
    let binary = examples_dir().join(example);
    let child = Command::new(&binary)
        .env("ETCD_ENDPOINTS", super::common::endpoints().join(","))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let pid = child.id();
    let out = child.wait_with_output().expect("example output");
    assert!(
        out.status.success(),
        "example {example} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    normalized(&String::from_utf8_lossy(&out.stdout), pid, digits)
}

#[test]
fn example_outputs_on_the_pages_are_what_the_examples_print() {
    build_examples();
    let files = markdown_files();
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut problems = Vec::new();
    for (path, text, blocks) in pages_with_blocks("output", &files, &mut problems) {
        let path = &path;
        for block in blocks {
            let mut words = block.arg.split_whitespace();
            let example = words.next().unwrap_or_default().to_owned();
            let flags: Vec<&str> = words.collect();
            if let Some(flag) = flags
                .iter()
                .find(|f| !matches!(**f, "unordered" | "digits"))
            {
                problems.push(format!("{}: unknown output flag {flag:?}", path.display()));
                continue;
            }
            if expected.contains_key(&block.arg) {
                continue; // the same block on the other language's page
            }
            let real = run_example(&example, flags.contains(&"digits"));
            let shown = super::docs::block_body(&text, &block);
            // Unordered: lines in another order than the page's still match it.
            let want =
                if flags.contains(&"unordered") && sorted_lines(&real) == sorted_lines(&shown) {
                    shown
                } else {
                    real
                };
            // One run per block kind: the English and the Chinese page show the same block.
            expected.insert(block.arg.clone(), want);
        }
    }
    problems.extend(check_blocks("output", &files, &expected, |s| {
        s.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn normalizing_keeps_what_is_the_same_every_run() {
    let out = "worker 1 holds /examples/mutex/3411 with fencing token 3\n\
               lease 6a3a241a73b640a orphaned (TTL 5s)\n\
               teller 3: 16 transfers (round 87), account-2";
    assert_eq!(
        normalized(out, 3411, false),
        "worker 1 holds /examples/mutex/<pid> with fencing token <rev>\n\
         lease <id> orphaned (TTL 5s)\n\
         teller 3: 16 transfers (round <rev>), account-2"
    );
    assert_eq!(
        digits_replaced("teller 3: 16 transfers (TTL 5s) <id> account-2"),
        "teller <n>: <n> transfers (TTL <n>s) <id> account-2"
    );
}
