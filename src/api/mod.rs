//! The HTTP API (axum on hyper), on `[api] bind_address`.
//!
//! This build serves the node's state: `GET /status` (this node) and `GET /cluster`
//! (every member, with its status and lag, as this node sees it), plus `GET /health`.
//! Errors are JSON `{"error": {"code", "message"}}`.

pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::Cluster;

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/status", get(status::node))
        .route("/cluster", get(status::cluster))
        .route("/cluster/nodes", get(status::nodes))
        .route("/health", get(status::health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(cluster)
}

/// A running API server.
pub struct ApiHandle {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiHandle {
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        self.task.await.ok();
    }
}

/// Serve the API on a bound listener, in a task.
pub fn serve(listener: TcpListener, cluster: Arc<Cluster>) -> std::io::Result<ApiHandle> {
    let local_addr = listener.local_addr()?;
    let (tx, mut rx) = watch::channel(false);
    let app = router(cluster);
    let task = tokio::spawn(async move {
        let stop = async move {
            rx.wait_for(|s| *s).await.ok();
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    tracing::info!(addr = %local_addr, "HTTP API listening");
    Ok(ApiHandle {
        local_addr,
        shutdown: tx,
        task,
    })
}
