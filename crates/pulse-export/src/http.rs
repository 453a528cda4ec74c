//! The HTTP server: `/metrics`, `/v1/metrics`, `/healthz` and `/readyz`, GET only.
//!
//! [`serve`] takes a bound listener (the caller picks the address, tests use
//! `127.0.0.1:0`) and a shutdown future; when that future completes the server stops
//! accepting, lets in-flight requests finish, and returns.
//!
//! # Why handlers render synchronously on the runtime
//! Rendering reads the last published snapshot and encodes it: about a millisecond at the
//! feature cap, once per scrape interval, so `spawn_blocking` would buy nothing. Handlers
//! never wait on the engine: they only read what [`Exporter::publish`] left behind.
//!
//! Every route is behind a 10 s request timeout (so a stuck client cannot hold a task
//! forever) and a 64 KiB body limit (no route reads a body; anything larger is refused
//! before it is buffered).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::Exporter;
use crate::exporter::PROMETHEUS_CONTENT_TYPE;

/// Longest time a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Serves the routes on `listener` until `shutdown` completes, then drains in-flight
/// requests and returns. Errors are the listener's I/O errors.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(exporter))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, with their layers. A path not listed is 404; another method on a listed
/// path is 405 (axum answers HEAD like GET without a body, as HTTP requires).
pub(crate) fn router(exporter: Arc<Exporter>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/metrics", get(snapshot))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(exporter)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        exporter.render_prometheus(),
    )
        .into_response()
}

async fn snapshot(State(exporter): State<Arc<Exporter>>) -> Response {
    match exporter.latest_snapshot() {
        // Serialised straight from the shared snapshot, without an intermediate `Value`.
        Some(snapshot) => Json(&*snapshot).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no snapshot published yet" })),
        )
            .into_response(),
    }
}

/// Liveness: answering at all is the signal.
async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(exporter): State<Arc<Exporter>>) -> Response {
    let status = exporter.status();
    if status.ready {
        Json(json!({ "ready": true })).into_response()
    } else {
        let reason = status.not_ready_reason.as_deref().unwrap_or("not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response()
    }
}
