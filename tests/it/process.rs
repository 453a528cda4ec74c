//! A running `pulse` service for tests: started on a free port, found through its log, asked
//! over HTTP, stopped with SIGTERM (or killed on drop, so a failing test leaves nothing
//! behind).
//!
//! A reader thread copies pulse's stderr into the log as it comes. The complete log (what a
//! test asserts on after the stop) is read only after that thread has been joined: it ends
//! at end-of-file, which follows the exit, however long a busy machine takes to schedule it
//! (a fixed pause after the exit once lost the last lines under load).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::pulse_bin;

pub struct Pulse {
    child: Child,
    pub address: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Copies stderr into `log`; finishes at end-of-file, i.e. once pulse has exited.
    reader: Option<JoinHandle<()>>,
}

impl Pulse {
    /// Starts `pulse ARGS --listen 127.0.0.1:0` and waits until it serves HTTP.
    pub fn start(args: &[&str]) -> Pulse {
        Pulse::start_with_env(args, &[])
    }

    /// The same, with `env` added to its environment (an S3 endpoint, say).
    pub fn start_with_env(args: &[&str], env: &[(String, String)]) -> Pulse {
        let mut child = Command::new(pulse_bin())
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("PULSE_CONFIG")
            .env_remove("KAFKA_BROKERS")
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pulse");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = std::sync::mpsc::channel();
        let reader = spawn_reader(stderr, log.clone(), move |line| {
            if let Some(rest) = line.split("Serving http://").nth(1) {
                let _ = found.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "pulse did not start serving:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        Pulse {
            child,
            address,
            log,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// GET `path`: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address, path).unwrap_or((0, String::new()))
    }

    pub fn snapshot(&self) -> Option<Value> {
        let (status, body) = self.get("/v1/metrics");
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Polls the snapshot until `done` holds; panics with the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(snapshot) = self.snapshot() {
                if done(&snapshot) {
                    return snapshot;
                }
                last = Some(snapshot);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}; last snapshot: {last:?}\nlog:\n{}",
            self.log()
        )
    }

    /// Polls an endpoint until it answers `status`.
    pub fn wait_for_status(&self, path: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.get(path).0 == status {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{path} did not answer {status} within {timeout:?}; log:\n{}",
            self.log()
        )
    }

    /// Sends SIGTERM, waits for the exit, and returns everything pulse logged.
    pub fn stop_and_log(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.terminate(timeout);
        (status, self.complete_log())
    }

    /// The whole log of an exited pulse: joins the reader, which has then seen end-of-file.
    fn complete_log(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader thread");
        }
        self.log()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self, timeout: Duration) -> ExitStatus {
        self.terminate(timeout)
    }

    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit(timeout)
    }

    /// Waits for a pulse expected to exit by itself (a refusal after start, say) and
    /// returns everything it logged.
    pub fn exited(mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.wait_exit(timeout);
        (status, self.complete_log())
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pulse did not stop within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Pulse {
    /// SIGKILL: a crash, no chance to clean up.
    pub fn kill(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// Runs `pulse ARGS` to completion (a command expected to fail fast, say).
    pub fn run_to_end(args: &[&str]) -> std::process::Output {
        Pulse::run_to_end_with_env(args, &[])
    }

    /// The same, with `env` added to its environment.
    pub fn run_to_end_with_env(args: &[&str], env: &[(String, String)]) -> std::process::Output {
        Command::new(pulse_bin())
            .args(args)
            .env_remove("PULSE_CONFIG")
            .env_remove("KAFKA_BROKERS")
            .envs(env.iter().cloned())
            .output()
            .expect("running pulse")
    }
}

/// A thread that appends each line of `stderr` to `log` (after showing it to `seen`) until
/// end-of-file; joining it is what makes the log complete.
fn spawn_reader(
    stderr: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    seen: impl Fn(&str) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen(&line);
            log.lock().unwrap().push(line);
        }
    })
}

impl Drop for Pulse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with the `kill` command (no unsafe code needed).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A minimal HTTP/1.0 GET: the server closes the connection after the body.
pub fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of one Prometheus sample line, e.g. `pulse_active_users{window="30d"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line[series.len()..].trim().parse().ok())
}

/// After the exit and the join, the log holds every line the child wrote, the last included:
/// what a fixed pause after the exit could not promise on a busy machine.
#[test]
fn the_joined_log_holds_every_line_up_to_the_exit() {
    const LINES: usize = 20_000;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {LINES} ]; do echo \"line $i\" >&2; i=$((i + 1)); done; \
             echo last >&2"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = spawn_reader(child.stderr.take().unwrap(), log.clone(), |_| {});
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), LINES + 1);
    assert_eq!(log.last().map(String::as_str), Some("last"));
}
