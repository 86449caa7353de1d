//! The HTTP API (axum on hyper), on `[api] bind_address`.
//!
//! The node's state: `GET /status` (this node) and `GET /cluster` (every member, with
//! its status and lag, as this node sees it), plus `GET /health`; and the admin
//! endpoints of [`admin`] (promote, demote, remove), behind `[api] token`.
//! Errors are JSON `{"error": {"code", "message"}}`.

pub mod admin;
pub mod client;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::config::Secret;

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

pub fn router(cluster: Arc<Cluster>, token: Option<Secret>) -> Router {
    let guard = Arc::new(admin::Guard {
        token: token.clone(),
    });
    let state = admin::Admin {
        cluster: cluster.clone(),
        token,
    };
    let migration = Router::new()
        .route(
            "/cluster/migrate",
            post(admin::migrate).get(admin::migration),
        )
        .route("/snapshot", get(admin::snapshot))
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            admin::authorize,
        ))
        .with_state(state);
    let admin = Router::new()
        .route("/cluster/promote", post(admin::promote))
        .route("/cluster/demote", post(admin::demote))
        .route("/cluster/nodes/{node_id}", delete(admin::remove))
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            admin::authorize,
        ));
    Router::new()
        .route("/status", get(status::node))
        .route("/cluster", get(status::cluster))
        .route("/cluster/nodes", get(status::nodes))
        .route("/health", get(status::health))
        .route("/id", get(status::id))
        .merge(admin)
        .with_state(cluster)
        .merge(migration)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
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
pub fn serve(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    token: Option<Secret>,
) -> std::io::Result<ApiHandle> {
    let local_addr = listener.local_addr()?;
    let (tx, mut rx) = watch::channel(false);
    let app = router(cluster, token).into_make_service_with_connect_info::<SocketAddr>();
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
