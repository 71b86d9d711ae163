//! The docs cannot rot: every key dump, Rust snippet, link and command printed in the
//! repository's Markdown is checked here against the real thing.
//!
//! - `<!-- tour: NAME -->` + a console block: the output of the tour scene `NAME`
//!   (`coord/examples/tour/scenes.rs`) shown with a real `etcdctl` against a real etcd.
//!   Lease ids, timestamps and the lease's remaining seconds differ between runs and
//!   are compared as placeholders; everything else must match.
//! - `<!-- snippet: PATH NAME -->` + a rust block: the lines of `PATH` between
//!   `// snippet-start: NAME` and `// snippet-end: NAME` (PATH is an example, so
//!   `cargo test` compiles it and `scripts/run-examples.sh` runs it). A rust block
//!   without a marker is an error: it would be compiled by nobody.
//! - Relative links (and their `#anchors`) resolve; `cargo run -p P --example E`,
//!   `--bin B` and `scripts/S` name things that exist.
//!
//! `COORD_UPDATE_DOCS=1 cargo test -p coord --test it docs::` rewrites the tour and
//! snippet blocks from the real output instead of failing (then review the diff).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

#[path = "../../examples/tour/scenes.rs"]
mod scenes;

pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("coord/ is inside the repository")
        .to_path_buf()
}

pub(super) fn updating() -> bool {
    std::env::var("COORD_UPDATE_DOCS").is_ok_and(|v| v == "1")
}

/// Every Markdown file of the repository outside build output.
pub(super) fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root(), &mut out);
    out
}

pub(super) fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A fenced block that follows a marker line `<!-- KIND: ARG -->`.
pub(super) struct MarkedBlock {
    pub(super) arg: String,
    /// Line index of the opening fence.
    open: usize,
    /// Line index of the closing fence.
    close: usize,
}

pub(super) fn marked_blocks(text: &str, kind: &str) -> Result<Vec<MarkedBlock>, String> {
    let tag = format!("<!-- {kind}:");
    let fences = fences(text);
    let mut blocks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix(&tag) else {
            continue;
        };
        let fence = fences
            .iter()
            .find(|f| f.open == i + 1)
            .ok_or_else(|| format!("line {}: marker not followed by a closed code block", i + 1))?;
        blocks.push(MarkedBlock {
            arg: rest.trim_end_matches("-->").trim().to_owned(),
            open: fence.open,
            close: fence.close,
        });
    }
    Ok(blocks)
}

/// Every page of `files` with its `kind` blocks, read once; a page whose markers are
/// broken is reported in `problems` instead.
pub(super) fn pages_with_blocks(
    kind: &str,
    files: &[PathBuf],
    problems: &mut Vec<String>,
) -> Vec<(PathBuf, String, Vec<MarkedBlock>)> {
    let mut pages = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).expect("read markdown");
        match marked_blocks(&text, kind) {
            Ok(blocks) => pages.push((path.clone(), text, blocks)),
            Err(e) => problems.push(format!("{}: {e}", relative(path))),
        }
    }
    pages
}

pub(super) fn block_body(text: &str, block: &MarkedBlock) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[block.open + 1..block.close].join("\n")
}

fn with_body(text: &str, block: &MarkedBlock, body: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = lines[..=block.open].to_vec();
    out.extend(body.lines());
    out.extend(&lines[block.close..]);
    let mut joined = out.join("\n");
    joined.push('\n');
    joined
}

/// `text` with each run of ASCII letters and digits that `is_id` accepts replaced by
/// `<id>`.
pub(super) fn ids_replaced(text: &str, is_id: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        out.push_str(if is_id(run) { "<id>" } else { run.as_str() });
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Replaces what differs between runs: lease ids and wall-clock numbers (runs of 10 or
/// more hex digits that contain a digit and do not start with `0`, and a work queue's
/// clock-numbered slots: 20 digits, one leading zero; zero-padded counters stay exact),
/// the seconds a lease has left and the order in which etcd lists a lease's keys.
pub(super) fn normalize(output: &str) -> String {
    let out = ids_replaced(output, |run| {
        let clock_slot = run.len() == 20
            && run.chars().all(|c| c.is_ascii_digit())
            && run.starts_with('0')
            && !run[1..].starts_with('0');
        clock_slot
            || (run.len() >= 10
                && run.chars().all(|c| c.is_ascii_hexdigit())
                && run.chars().any(|c| c.is_ascii_digit())
                && !run.starts_with('0'))
    });
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = match line.find("remaining(") {
            Some(at) => {
                let tail = &line[at + "remaining(".len()..];
                let digits = tail.chars().take_while(char::is_ascii_digit).count();
                format!("{}remaining(<s>{}", &line[..at], &tail[digits..])
            }
            None => line.to_owned(),
        };
        // etcd lists a lease's keys in no particular order.
        let line = match line.split_once("attached keys([") {
            Some((head, tail)) => {
                let (keys, rest) = tail.split_once("])").unwrap_or((tail, ""));
                let mut keys: Vec<&str> = keys.split_whitespace().collect();
                keys.sort_unstable();
                format!("{head}attached keys([{}]){rest}", keys.join(" "))
            }
            None => line,
        };
        lines.push(line.trim_end().to_owned());
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// Checks (or, updating, rewrites) every `kind` block of every Markdown file against
/// `expected(arg)`; returns the mismatches.
pub(super) fn check_blocks(
    kind: &str,
    files: &[PathBuf],
    expected: &HashMap<String, String>,
    compare: fn(&str) -> String,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, mut text, blocks) in pages_with_blocks(kind, files, &mut problems) {
        let path = &path;
        // Bottom up, so rewriting one block does not move the next.
        for block in blocks.iter().rev() {
            let Some(want) = expected.get(&block.arg) else {
                problems.push(format!(
                    "{}: unknown {kind} {:?}",
                    relative(path),
                    block.arg
                ));
                continue;
            };
            let have = block_body(&text, block);
            if compare(&have) == compare(want) {
                continue;
            }
            if updating() {
                text = with_body(&text, block, want);
            } else {
                problems.push(format!(
                    "{}:{}: {kind} {} is stale (COORD_UPDATE_DOCS=1 rewrites it)\n--- printed\n{have}\n--- real\n{want}",
                    relative(path),
                    block.open + 1,
                    block.arg
                ));
            }
        }
        if updating() {
            std::fs::write(path, text).expect("write markdown");
        }
    }
    problems
}

#[tokio::test]
async fn the_key_dumps_in_the_docs_are_what_etcd_shows() {
    let endpoints = super::common::endpoints().join(",");
    let client = super::common::client().await;
    // etcdctl as the tour finds it, else the one in the etcd image (Docker, host network).
    let mut etcdctl = scenes::local_etcdctl();
    let docker_run = [
        "run",
        "--rm",
        "--network",
        "host",
        testkit::DEFAULT_ETCD_IMAGE,
        "etcdctl",
    ];
    etcdctl.push(("docker".into(), docker_run.map(String::from).to_vec()));
    let mut transcripts = HashMap::new();
    for name in scenes::SCENES {
        let scene = scenes::build(&client, name).await.expect("scene");
        let transcript = scenes::transcript(&etcdctl, &endpoints, &scene).await;
        scene.finish().await.expect("scene ends");
        transcripts.insert(name.to_string(), transcript.expect("etcdctl"));
    }
    // Each scene is shown on its page, in English and in Chinese.
    let root = repo_root();
    let mut missing = Vec::new();
    for name in scenes::SCENES {
        for page in primitive_pages(name) {
            let text = std::fs::read_to_string(root.join(&page)).unwrap_or_default();
            if !text.contains(&format!("<!-- tour: {name} -->")) {
                missing.push(page);
            }
        }
    }
    let mut problems = check_blocks("tour", &markdown_files(), &transcripts, normalize);
    problems.extend(
        missing
            .iter()
            .map(|p| format!("{p}: no `<!-- tour: .. -->` block")),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The region `// snippet-start: NAME` … `// snippet-end: NAME` of a file, dedented.
fn snippet(path: &Path, name: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == format!("// snippet-start: {name}"))
        .ok_or_else(|| format!("{}: no `// snippet-start: {name}`", relative(path)))?;
    let end = (start + 1..lines.len())
        .find(|&i| lines[i].trim() == format!("// snippet-end: {name}"))
        .ok_or_else(|| format!("{}: no `// snippet-end: {name}`", relative(path)))?;
    let body = &lines[start + 1..end];
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    Ok(body
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A fenced code block: the lines of its fences and its language.
struct Fence {
    open: usize,
    close: usize,
    lang: String,
}

fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        match open.take() {
            None => open = Some((i, info.trim().to_owned())),
            Some((at, lang)) => out.push(Fence {
                open: at,
                close: i,
                lang,
            }),
        }
    }
    out
}

/// `(index, line)` of the lines outside fenced code.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let code: BTreeSet<usize> = fences(text).iter().flat_map(|f| f.open..=f.close).collect();
    text.lines()
        .enumerate()
        .filter(|(i, _)| !code.contains(i))
        .collect()
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn code_in_the_docs_is_code_that_compiles_and_runs() {
    let files = markdown_files();
    let mut problems = Vec::new();
    let mut snippets = HashMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read markdown");
        let lines: Vec<&str> = text.lines().collect();
        for fence in fences(&text) {
            if !matches!(fence.lang.as_str(), "rust" | "sql") {
                continue;
            }
            let marker = fence.open.checked_sub(1).map_or("", |i| lines[i].trim());
            if !marker.starts_with("<!-- snippet:") && !marker.starts_with("<!-- excerpt:") {
                problems.push(format!(
                    "{}:{}: a {} block without `<!-- snippet: PATH NAME -->` or `<!-- excerpt: PATH -->` (nothing checks it)",
                    relative(path),
                    fence.open + 1,
                    fence.lang
                ));
            }
        }
        for block in marked_blocks(&text, "snippet").unwrap_or_default() {
            let (file, name) = block.arg.split_once(' ').unwrap_or((&block.arg, ""));
            match snippet(&repo_root().join(file), name.trim()) {
                Ok(code) => {
                    snippets.insert(block.arg.clone(), code);
                }
                Err(e) => problems.push(format!("{}: {e}", relative(path))),
            }
        }
        // An excerpt is quoted from a source file (SQL inside a Rust string, say):
        // it must appear there, up to whitespace.
        for block in marked_blocks(&text, "excerpt").unwrap_or_default() {
            let source = std::fs::read_to_string(repo_root().join(&block.arg)).unwrap_or_default();
            let quoted = collapse_whitespace(&block_body(&text, &block));
            if quoted.is_empty() || !collapse_whitespace(&source).contains(&quoted) {
                problems.push(format!(
                    "{}:{}: this excerpt is not in {}",
                    relative(path),
                    block.open + 1,
                    block.arg
                ));
            }
        }
    }
    problems.extend(check_blocks("snippet", &files, &snippets, |s| {
        s.trim_end().to_owned()
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// English pages whose Chinese twin is written on another branch of issue 19 and is
/// expected when it merges. The lead empties this list at the merge: a page named here
/// is not checked for a twin (nor its twin for code and sections) until then.
const TWIN_EXPECTED_AT_MERGE: &[&str] = &[];

/// Every user-facing page and its Chinese twin, as (English, Chinese) paths: README.md
/// and README.zh-CN.md, and each `docs/**/*.md` outside `docs/zh-CN/` with
/// `docs/zh-CN/<the same path>`. Found from the files, so a new English page without
/// a twin fails [`every_english_page_has_a_chinese_twin`].
fn translated_pages() -> Vec<(String, String)> {
    let mut pairs = vec![("README.md".to_owned(), "README.zh-CN.md".to_owned())];
    for path in markdown_files() {
        let english = relative(&path);
        let Some(page) = english.strip_prefix("docs/") else {
            continue;
        };
        if page.starts_with("zh-CN/") || TWIN_EXPECTED_AT_MERGE.contains(&english.as_str()) {
            continue;
        }
        pairs.push((english.clone(), format!("docs/zh-CN/{page}")));
    }
    pairs
}

/// Every English page has its Chinese twin (the pairs themselves are compared in
/// [`translations_carry_the_same_code_and_diagrams_as_the_original`]), and every
/// Chinese page has its English original.
#[test]
fn every_english_page_has_a_chinese_twin() {
    let root = repo_root();
    let pairs = translated_pages();
    let mut problems: Vec<String> = pairs
        .iter()
        .filter(|(_, chinese)| !root.join(chinese).exists())
        .map(|(english, chinese)| {
            format!("{english} has no Chinese twin: write {chinese} (same code blocks, same `## ` sections)")
        })
        .collect();
    for path in markdown_files() {
        let chinese = relative(&path);
        let Some(page) = chinese.strip_prefix("docs/zh-CN/") else {
            continue;
        };
        let english = format!("docs/{page}");
        if !root.join(&english).exists() {
            problems.push(format!(
                "{chinese} translates nothing: there is no {english}"
            ));
        }
    }
    // The list only bridges a merge: once a twin has arrived, its pair must be checked.
    for english in TWIN_EXPECTED_AT_MERGE {
        let chinese = english.replacen("docs/", "docs/zh-CN/", 1);
        if !root.join(english).exists() {
            problems.push(format!(
                "TWIN_EXPECTED_AT_MERGE names {english}, which does not exist: remove it"
            ));
        } else if root.join(&chinese).exists() {
            problems.push(format!(
                "{chinese} exists now: remove {english} from TWIN_EXPECTED_AT_MERGE so the pair is compared"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A primitive's page (named like its tour scene), in English and in Chinese.
fn primitive_pages(name: &str) -> [String; 2] {
    [
        format!("docs/primitives/{name}.md"),
        format!("docs/zh-CN/primitives/{name}.md"),
    ]
}

/// A translation keeps the original's code: the same blocks in the same order, each
/// with the same content (diagrams excepted: their labels are translated), and the same
/// number of sections. So a page changed in English and not in Chinese fails here.
#[test]
fn translations_carry_the_same_code_and_diagrams_as_the_original() {
    let root = repo_root();
    let mut problems = Vec::new();
    for (english, chinese) in translated_pages() {
        let (Ok(en), Ok(zh)) = (
            std::fs::read_to_string(root.join(&english)),
            std::fs::read_to_string(root.join(&chinese)),
        ) else {
            // A missing twin is reported by `every_english_page_has_a_chinese_twin`.
            continue;
        };
        let blocks = |text: &str| -> Vec<String> {
            let lines: Vec<&str> = text.lines().collect();
            fences(text)
                .iter()
                .map(|f| match f.lang.as_str() {
                    "mermaid" => "mermaid diagram".to_owned(),
                    // Tour dumps may hold different lease ids in the two languages.
                    _ => normalize(&lines[f.open..=f.close].join("\n")),
                })
                .collect()
        };
        let (en_blocks, zh_blocks) = (blocks(&en), blocks(&zh));
        if en_blocks.len() != zh_blocks.len() {
            problems.push(format!(
                "{chinese}: {} code blocks, {english} has {}",
                zh_blocks.len(),
                en_blocks.len()
            ));
        }
        for (n, (e, z)) in en_blocks.iter().zip(&zh_blocks).enumerate() {
            if e != z {
                problems.push(format!(
                    "{chinese}: code block {} differs from {english}'s:\n{z}\n--- English\n{e}",
                    n + 1
                ));
                break;
            }
        }
        let sections = |text: &str| {
            prose_lines(text)
                .iter()
                .filter(|(_, l)| l.starts_with("## "))
                .count()
        };
        if sections(&en) != sections(&zh) {
            problems.push(format!(
                "{chinese}: {} sections, {english} has {}",
                sections(&zh),
                sections(&en)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped (letters of every
/// script, digits, `-` and `_` kept), spaces to `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](url)` reads as `text`.
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(mid), Some(end)) if mid < end => {
                text.push_str(&after[..mid]);
                rest = &after[end + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a Markdown file offers (duplicates get `-1`, `-2`, … as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line
            .strip_prefix('#')
            .map(|h| h.trim_start_matches('#'))
            .filter(|h| h.starts_with(' '))
        else {
            continue;
        };
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `(line, target)` of every inline link outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in prose_lines(text) {
        // Drop inline code spans, then find `](target)`.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((i + 1, target.to_owned()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn links_in_the_docs_resolve() {
    let mut problems = Vec::new();
    let files = markdown_files();
    let mut anchor_cache: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("read markdown");
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                path.parent().expect("a file has a directory").join(file)
            };
            if !resolved.exists() {
                problems.push(format!("{}:{line}: {target}: no such file", relative(path)));
                continue;
            }
            if anchor.is_empty() || resolved.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let anchors = anchor_cache.entry(resolved.clone()).or_insert_with(|| {
                anchors(&std::fs::read_to_string(&resolved).expect("read markdown"))
            });
            if !anchors.contains(anchor) {
                problems.push(format!(
                    "{}:{line}: {target}: no heading with anchor #{anchor}",
                    relative(path)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What the workspace's members declare: packages, binaries, examples.
#[derive(Default)]
struct CargoNames {
    packages: BTreeSet<String>,
    bins: BTreeSet<String>,
    examples: BTreeSet<String>,
}

fn stems(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some(entry.path().file_stem()?.to_str()?.to_owned()))
}

fn cargo_names() -> CargoNames {
    let mut names = CargoNames::default();
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    // `members = ["coord", "proto", …]`, on one line or several.
    let list = manifest
        .split_once("members")
        .and_then(|(_, rest)| rest.split_once('[')?.1.split_once(']'))
        .map(|(list, _)| list.to_owned())
        .expect("a workspace members list");
    let members = list.split('"').skip(1).step_by(2);
    for member in members {
        let dir = root.join(member);
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("member manifest");
        let mut section = "";
        for line in toml.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = if line == "[package]" {
                    "package"
                } else if line == "[[bin]]" {
                    "bin"
                } else {
                    ""
                };
            } else if let Some(value) = line.strip_prefix("name = ") {
                let value = value.trim_matches('"').to_owned();
                match section {
                    "package" => {
                        if dir.join("src/main.rs").exists() {
                            names.bins.insert(value.clone());
                        }
                        names.packages.insert(value);
                    }
                    "bin" => {
                        names.bins.insert(value);
                    }
                    _ => {}
                }
            }
        }
        names.bins.extend(stems(&dir.join("src/bin")));
        names.examples.extend(stems(&dir.join("examples")));
    }
    names
}

/// `(index, command)` of the shell commands a page shows: the lines of its shell and
/// console blocks, and inline code spans that start with `cargo ` or `scripts/`.
fn commands(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for fence in fences(text) {
        if matches!(
            fence.lang.as_str(),
            "sh" | "bash" | "console" | "shell" | "text" | ""
        ) {
            out.extend((fence.open + 1..fence.close).map(|i| (i, lines[i].to_owned())));
        }
    }
    for (i, line) in prose_lines(text) {
        let spans = line.split('`').skip(1).step_by(2);
        out.extend(
            spans
                .filter(|span| span.starts_with("cargo ") || span.starts_with("scripts/"))
                .map(|span| (i, span.to_owned())),
        );
    }
    out
}

#[test]
fn commands_in_the_docs_name_things_that_exist() {
    let root = repo_root();
    let names = cargo_names();
    assert!(
        names.packages.contains("coord") && names.bins.contains("shopctl"),
        "the workspace's manifests were not read"
    );
    let mut problems = Vec::new();
    for path in markdown_files() {
        let text = std::fs::read_to_string(&path).expect("read markdown");
        for (i, line) in commands(&text) {
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';'))
                .filter(|w| !w.is_empty())
                .collect();
            let mut problem = |what: String| {
                problems.push(format!("{}:{}: {what}", relative(&path), i + 1));
            };
            for pair in words.windows(2) {
                let name = pair[1].trim_end_matches([',', '.', ':']);
                match pair[0] {
                    "-p" if !names.packages.contains(name) => problem(format!("no package {name}")),
                    "--bin" if !names.bins.contains(name) => problem(format!("no binary {name}")),
                    "--example" if !names.examples.contains(name) => {
                        problem(format!("no example {name}"))
                    }
                    _ => {}
                }
            }
            for word in &words {
                let word = word.trim_end_matches([',', '.', ':']);
                if let Some(at) = word.find("scripts/") {
                    let script = &word[at..];
                    let is_repo_script =
                        at == 0 && script.ends_with(".sh") && !script.contains('*');
                    if is_repo_script && !root.join(script).exists() {
                        problem(format!("no script {script}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
