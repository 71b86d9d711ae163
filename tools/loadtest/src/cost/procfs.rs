//! CPU time of local processes from `/proc`: who listens on a TCP port, and the
//! user + system time of a process (with its children, for Postgres's backends).

use std::collections::BTreeMap;
use std::path::Path;

/// Processes listening on each named port (a name found on several ports, or several
/// names on one process, are one entry; names of one process are joined by `+`).
pub(super) fn find_processes(ports: &[(String, u16)]) -> Vec<(String, Vec<u32>)> {
    let me = std::process::id();
    let mut by_pid: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (name, port) in ports {
        for pid in listeners(*port) {
            let names = by_pid.entry(pid).or_default();
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, mut names) in by_pid {
        if pid == me {
            // Services in this very process (tests): counted as `loadtest`.
            continue;
        }
        names.sort();
        by_name.entry(names.join("+")).or_default().push(pid);
    }
    by_name.into_iter().collect()
}

/// Pids with a socket listening on TCP `port` (IPv4 or IPv6), from `/proc`.
fn listeners(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, inode is field 9.
            let listening = f.get(3) == Some(&"0A");
            let on_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(|l| inodes.iter().any(|i| i == l)))
                .unwrap_or(false)
        });
        if owns {
            pids.push(pid);
        }
    }
    // A forked listener (Postgres's backends inherit nothing listening, but be safe):
    // keep only the parents, their children are added by `process_ticks`.
    let all = pids.clone();
    pids.retain(|pid| parent_of(*pid).is_none_or(|p| !all.contains(&p)));
    pids
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime (+ reaped children's) of `pid` and, with `children`, of its living
/// children (Postgres's backends), in clock ticks.
pub(super) fn process_ticks(pid: u32, children: bool) -> u64 {
    let Some(f) = stat_fields(pid) else {
        return 0;
    };
    // After the name: state is index 0, utime 11, stime 12, cutime 13, cstime 14.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let mut sum = field(11) + field(12) + field(13) + field(14);
    if children {
        let tasks = Path::new("/proc").join(pid.to_string()).join("task");
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in list.split_whitespace().filter_map(|c| c.parse().ok()) {
                sum += process_ticks(child, false);
            }
        }
    }
    sum
}

pub(super) fn clock_ticks_per_second() -> f64 {
    // USER_HZ: 100 on every Linux the load tester runs on (`getconf CLK_TCK`).
    100.0
}
