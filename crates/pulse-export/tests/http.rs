//! The HTTP server end to end: a real listener on `127.0.0.1:0` and a raw HTTP/1.1 client.
//!
//! The client is a `TcpStream` and a few lines of parsing rather than reqwest or hyper-util:
//! the routes answer small bodies, and a hand-written request lets the tests send exactly
//! what they mean (an unknown method, an oversized `Content-Length`, a kept-alive
//! connection) with no extra dependency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pulse_core::KpiSnapshot;
use pulse_export::{BuildInfo, Exporter, IngestStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server; `stop` triggers graceful shutdown and waits for `serve` to return.
struct Server {
    addr: SocketAddr,
    exporter: Arc<Exporter>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let exporter = Arc::new(
            Exporter::new(BuildInfo {
                version: "0.1.0".into(),
                git_commit: "abc1234".into(),
            })
            .expect("exporter"),
        );
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(pulse_export::serve(
            listener,
            Arc::clone(&exporter),
            async move {
                // A dropped sender also stops the server, so a failing test cleans up.
                let _ = stop.await;
            },
        ));
        Server {
            addr,
            exporter,
            shutdown,
            task,
        }
    }

    async fn get(&self, path: &str) -> Response {
        self.request("GET", path, "").await
    }

    async fn request(&self, method: &str, path: &str, extra_headers: &str) -> Response {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra_headers}\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("response within 5 s")
            .expect("read");
        Response::parse(&raw)
    }

    async fn stop(self) {
        self.shutdown.send(()).expect("server still running");
        let served = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("graceful shutdown within 5 s")
            .expect("serve task did not panic");
        served.expect("serve returned Ok");
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status in {status_line}"));
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    fn content_type(&self) -> &str {
        self.headers.get("content-type").map_or("", String::as_str)
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.content_type(), "application/json", "{self:?}");
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn routes_answer_with_the_right_status_and_content_type() {
    let server = Server::start().await;

    let health = server.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    // Before the first publish: no snapshot, not ready, but metrics are served.
    let snapshot = server.get("/v1/metrics").await;
    assert_eq!(snapshot.status, 503);
    assert!(snapshot.json()["error"].is_string());
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["ready"], false);

    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        metrics
            .body
            .contains("# TYPE pulse_ready gauge\npulse_ready 0\n")
    );
    assert!(!metrics.body.contains("pulse_active_users"));

    let mut published = KpiSnapshot {
        as_of: Some("2026-03-10T12:00:00.000Z".into()),
        timezone: "UTC".into(),
        ..KpiSnapshot::default()
    };
    published.kpis.activity.active_users.d7 = 4;
    server.exporter.publish(published);
    let snapshot = server.get("/v1/metrics").await;
    assert_eq!(snapshot.status, 200);
    let json = snapshot.json();
    assert_eq!(json["active_users"]["7d"], 4);
    assert_eq!(json["as_of"], "2026-03-10T12:00:00.000Z");
    assert_eq!(Some(json), server.exporter.snapshot_json());
    let metrics = server.get("/metrics").await;
    assert!(
        metrics
            .body
            .contains("pulse_active_users{window=\"7d\"} 4\n")
    );

    server.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_status() {
    let server = Server::start().await;

    server.exporter.set_status(IngestStatus {
        broker_up: false,
        ready: false,
        not_ready_reason: Some("broker down".into()),
        ..IngestStatus::default()
    });
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json(),
        serde_json::json!({ "ready": false, "reason": "broker down" })
    );

    server.exporter.set_status(IngestStatus {
        broker_up: true,
        ready: true,
        ..IngestStatus::default()
    });
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), serde_json::json!({ "ready": true }));
    assert!(
        server
            .get("/metrics")
            .await
            .body
            .contains("\npulse_ready 1\n")
    );

    server.stop().await;
}

#[tokio::test]
async fn other_methods_paths_and_large_bodies_are_refused() {
    let server = Server::start().await;

    for method in ["POST", "PUT", "DELETE"] {
        for path in ["/metrics", "/v1/metrics", "/healthz", "/readyz"] {
            let response = server.request(method, path, "Content-Length: 0\r\n").await;
            assert_eq!(response.status, 405, "{method} {path}");
        }
    }
    for path in ["/", "/metrics/", "/v1", "/v2/metrics", "/debug/pprof"] {
        assert_eq!(server.get(path).await.status, 404, "GET {path}");
    }
    // Refused from the header alone, before any of the body is read.
    let oversized = server
        .request("GET", "/metrics", "Content-Length: 1000000\r\n")
        .await;
    assert_eq!(oversized.status, 413);

    server.stop().await;
}

#[tokio::test]
async fn shutdown_returns_even_with_an_idle_keep_alive_connection() {
    let server = Server::start().await;

    // A scraper's connection stays open between scrapes; shutdown must not wait for it.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    idle.write_all(request.as_bytes()).await.expect("send");
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    server.stop().await;
    // The server closed the idle connection on its way out.
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
}
