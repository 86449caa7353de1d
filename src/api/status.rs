//! `GET /status`, `GET /cluster`, `GET /cluster/nodes`, `GET /health`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::cluster::status::Status;
use crate::cluster::Cluster;

/// Heartbeat interval the member statuses are judged against.
const HEARTBEAT: Duration = Duration::from_millis(500);

pub async fn node(State(c): State<Arc<Cluster>>) -> Response {
    Json(c.node_status()).into_response()
}

pub async fn cluster(State(c): State<Arc<Cluster>>) -> Response {
    let node = c.node_status();
    let view = c.cluster_view(HEARTBEAT);
    Json(serde_json::json!({
        "node_id": node.node_id,
        "role": node.role,
        "term": view.term,
        "leader_id": view.leader_id,
        "last_log_index": node.last_log_index,
        "applied_index": node.applied_index,
        "members": view.members,
    }))
    .into_response()
}

pub async fn nodes(State(c): State<Arc<Cluster>>) -> Response {
    Json(c.cluster_view(HEARTBEAT).members).into_response()
}

/// `GET /id`: a Snowflake id of this node, as a string (JSON numbers lose precision
/// past 2^53 in JavaScript) and split into its parts.
pub async fn id(State(c): State<Arc<Cluster>>) -> Response {
    match next_id(c).await {
        Ok(id) => {
            let p = crate::id::parts(id);
            Json(serde_json::json!({
                "id": id.to_string(),
                "unix_ms": p.unix_ms,
                "node": p.node,
                "seq": p.seq,
            }))
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The node's next Snowflake id. It may wait (a spent millisecond, a clock that stepped
/// back), so it is taken off the runtime; a clock stepped back too far is 503 `clock`.
pub(super) async fn next_id(c: Arc<Cluster>) -> Result<u64, super::data::ApiError> {
    use super::data::ApiError;
    tokio::task::spawn_blocking(move || c.ids.next())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "clock", e.to_string()))
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(c): State<Arc<Cluster>>) -> Response {
    let Some(handle) = crate::telemetry::handle() else {
        return super::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "another metrics recorder was installed in this process",
        );
    };
    crate::telemetry::record_gauges(&c);
    handle.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// 200 when this node can serve (a leader is known and it is not diverged).
pub async fn health(State(c): State<Arc<Cluster>>) -> Response {
    let s = c.node_status();
    let ok = matches!(s.status, Status::Active | Status::Syncing) && s.leader_id.is_some();
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"status": s.status, "role": s.role})),
    )
        .into_response()
}
