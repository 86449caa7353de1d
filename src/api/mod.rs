//! The HTTP API (axum on hyper), on `[api] bind_address`.
//!
//! * State, open to all: `GET /health`, `/status` (this node), `/cluster` (every member
//!   as this node sees it), `/cluster/nodes`, `/cluster/overview` and `/` (the status
//!   page, see [`overview`]), `/id` (a Snowflake), `/metrics` (Prometheus),
//!   `/openapi.json` ([`openapi`]).
//! * Data, behind `[api] token` ([`data`]): `POST /write/{insert,update,delete,upsert,
//!   ddl,batch}` and `POST /query`, through this node's own proxy.
//! * Admin, behind `[api] token` ([`admin`]): promote, demote, remove, migrate, snapshot.
//!
//! With no token set, the guarded endpoints accept only clients on this host. Errors
//! are JSON `{"error": {"code", "message"}}`; bodies past `[api] max_body_bytes` get 413.

pub mod admin;
pub mod client;
pub mod data;
pub mod openapi;
pub mod overview;
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

/// What the API serves with, besides the cluster.
#[derive(Clone)]
pub struct ApiSettings {
    /// `[api] token`.
    pub token: Option<Secret>,
    /// `[api] max_body_bytes`.
    pub max_body_bytes: usize,
    /// The data endpoints' connections, schema and defaults.
    pub pool: Option<mysql_async::Pool>,
    pub database: Option<String>,
    pub id_column: Option<String>,
    pub consistency: crate::config::ReadConsistency,
}

pub fn router(
    cluster: Arc<Cluster>,
    settings: ApiSettings,
    overview: overview::Overview,
) -> Router {
    let page = Router::new()
        .route("/", get(overview::page))
        .route("/cluster/overview", get(overview::overview))
        .with_state(overview::PageState {
            cluster: cluster.clone(),
            overview,
        });
    let token = settings.token.clone();
    let guard = Arc::new(admin::Guard {
        token: token.clone(),
    });
    let data = data::Data {
        cluster: cluster.clone(),
        pool: settings.pool.clone(),
        database: settings.database.clone(),
        id_column: settings.id_column.clone(),
        consistency: settings.consistency,
    };
    let writes = Router::new()
        .route("/write/insert", post(data::insert))
        .route("/write/update", post(data::update))
        .route("/write/delete", post(data::delete))
        .route("/write/upsert", post(data::upsert))
        .route("/write/ddl", post(data::ddl))
        .route("/write/batch", post(data::batch))
        .route("/query", post(data::query))
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            admin::authorize,
        ))
        .with_state(data);
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
        .route("/metrics", get(status::metrics))
        .merge(admin)
        .with_state(cluster)
        .merge(migration)
        .merge(writes)
        .merge(page)
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            settings.max_body_bytes,
        ))
}

/// A running API server.
pub struct ApiHandle {
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ApiHandle {
    pub async fn shutdown(self) {
        self.sampler.abort();
        self.sampler.await.ok();
        self.shutdown.send_replace(true);
        self.task.await.ok();
    }
}

/// Serve the API on a bound listener, in a task.
pub fn serve(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    settings: ApiSettings,
) -> std::io::Result<ApiHandle> {
    let local_addr = listener.local_addr()?;
    let (tx, mut rx) = watch::channel(false);
    let overview = overview::Overview::default();
    let sampler = overview.spawn(cluster.clone());
    let app =
        router(cluster, settings, overview).into_make_service_with_connect_info::<SocketAddr>();
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
        sampler,
    })
}
