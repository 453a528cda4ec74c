//! Shared by the harness binaries: where the tools are, free loopback ports, child
//! processes that always stop, a minimal HTTP GET, and CPU time per thread from `/proc`.
//!
//! Every process the harness starts runs under coreutils `timeout -s KILL SECS`, so it
//! stops by itself even if the harness is killed with `SIGKILL` (no Drop runs then); the
//! [`Guard`] kills it earlier on the normal path.

#![allow(dead_code)] // each binary uses a subset

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (benches/ is one of its members).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches has a parent")
        .to_path_buf()
}

/// The release pulse binary; the Makefile target builds it first.
pub fn pulse_bin() -> PathBuf {
    let path = repo_root().join("target/release/pulse");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p pulse`",
        path.display()
    );
    path
}

/// A port nobody listens on right now (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Blocks until something accepts TCP connections on `port`, or panics after `limit`.
pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listens on {port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed (SIGKILL) when dropped, unless it has already exited.
#[derive(Debug)]
pub struct Guard {
    pub name: &'static str,
    pub child: Child,
}

impl Guard {
    /// Starts `program args` under `timeout -s KILL {limit}`; output goes to `log`.
    pub fn spawn(
        name: &'static str,
        limit: Duration,
        program: &std::path::Path,
        args: &[&str],
        log: &std::path::Path,
    ) -> Guard {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = Command::new("timeout")
            .args(["-s", "KILL", &format!("{}s", limit.as_secs())])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard { name, child }
    }

    /// SIGTERM through `timeout` (it forwards the signal), then wait up to `grace`; SIGKILL
    /// after that. Returns whether the process exited within the grace period.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // `timeout` runs the program as its child; TERM to `timeout` is forwarded.
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// `GET path` on 127.0.0.1:port with HTTP/1.0 semantics; the body, or `None` on any error.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(dechunk(body));
    }
    Some(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A human figure: 1234567.0 → "1.23 M".
pub fn per_second(count: u64, seconds: f64) -> String {
    let rate = count as f64 / seconds;
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else {
        format!("{:.0} k", rate / 1e3)
    }
}

/// A simple `--name value` argument reader with defaults.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
        })
        .unwrap_or(default)
}

/// A thread's name and CPU time (user + system, seconds) from its `stat` file: fields 14
/// and 15, in ticks of 1/100 s (`USER_HZ`, fixed at 100 by Linux's ABI).
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    // The name (field 2) may hold spaces and parentheses; it ends at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<f64>().ok();
    Some((name, (ticks(14)? + ticks(15)?) / 100.0))
}

/// CPU time this process has used so far, all threads together.
pub fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat))
        .map_or(0.0, |(_, seconds)| seconds)
}

/// CPU time so far of every thread of `pid` and of the processes under it (a [`Guard`]'s
/// child is `timeout`, the program runs under it), by thread id, with the thread's name.
/// Threads that have ended are not listed.
pub fn thread_cpu_seconds(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let mut pending = vec![pid];
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let path = task.path();
            if let Some(cpu) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|stat| stat_cpu(&stat))
            {
                threads.insert(tid, cpu);
            }
            if let Ok(children) = std::fs::read_to_string(path.join("children")) {
                pending.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    threads
}

/// CPU used by each thread between two [`thread_cpu_seconds`] readings, busiest first.
pub fn thread_cpu_between(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> Vec<(String, f64)> {
    let mut used: Vec<(String, f64)> = after
        .iter()
        .map(|(tid, (name, seconds))| {
            let earlier = before.get(tid).map_or(0.0, |(_, s)| *s);
            (name.clone(), seconds - earlier)
        })
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used
}
