//! An S3 endpoint for a test broker's storage, so that the broker's data survives its own
//! restart.
//!
//! The tansu build the tests use (see `scripts/ensure-tansu.sh`) has only the object-store
//! engines, `memory://` and `s3://`: its PostgreSQL and SQLite engines are not compiled in.
//! A broker that keeps its topics, records and committed offsets across a restart therefore
//! needs an S3 server. This is moto's (`moto_server`, installed under `<repo>/.tools/moto`
//! by `scripts/ensure-moto.sh`), which keeps objects in its own memory for as long as it
//! runs, and implements the conditional writes (`If-Match`, `If-None-Match`) tansu relies
//! on. Like the broker, it runs under a watchdog that stops it when the test process ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::{ensure_tool, free_port, spawn_watchdog};

/// `$0` moto_server, `$1` port. Prints moto's pid, then waits for stdin to close.
const WATCHDOG: &str = r#"
"$0" -H 127.0.0.1 -p "$1" </dev/null >/dev/null 2>&1 &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null; exit 0' INT TERM HUP
echo "$pid"
read _ || :
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"#;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running S3 server; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    _watchdog: Child,
}

impl S3Server {
    /// Starts moto on a free `127.0.0.1` port and waits until it creates a bucket.
    pub fn start(bucket: &str) -> S3Server {
        let moto = ensure_tool(Path::new("moto/bin/moto_server"), "ensure-moto.sh");
        let mut last_error = String::new();
        for _ in 0..3 {
            match free_port().and_then(|port| Self::try_start(&moto, port, bucket)) {
                Ok(server) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!(
            "could not start moto_server ({}): {last_error}",
            moto.display()
        )
    }

    fn try_start(moto: &Path, port: u16, bucket: &str) -> Result<S3Server, String> {
        let mut command = Command::new("sh");
        command
            .args(["-c", WATCHDOG])
            .arg(moto)
            .arg(port.to_string())
            .stderr(Stdio::null());
        let (pid, watchdog) = spawn_watchdog(&mut command)?;
        let endpoint = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if !crate::kafka::process_alive(pid) {
                return Err(format!("moto_server (pid {pid}) exited during startup"));
            }
            match put(&endpoint, &format!("/{bucket}")) {
                Ok(200) => break,
                Ok(status) => return Err(format!("creating bucket {bucket:?} answered {status}")),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(error) => return Err(format!("{endpoint} not answering: {error}")),
            }
        }
        Ok(S3Server {
            endpoint,
            _watchdog: watchdog,
        })
    }

    /// `127.0.0.1:PORT`, for a proxy to relay to.
    pub fn address(&self) -> &str {
        &self.endpoint
    }

    /// The environment that points an `s3://BUCKET/` client (tansu's storage, pulse's
    /// `state.url`) here (any credentials do).
    pub fn client_env(&self) -> Vec<(String, String)> {
        client_env_at(&self.endpoint)
    }
}

/// The environment of [`S3Server::client_env`] for a server reached at `address` (a proxy
/// in front of it).
pub fn client_env_at(address: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT", format!("http://{address}")),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "pulse-tests".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "pulse-tests".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// An unsigned `PUT path` with an empty body; returns the status code.
fn put(endpoint: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(endpoint)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.80}")))
}
