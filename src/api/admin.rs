//! The admin endpoints (`wolfctl promote`, `demote`, `remove`):
//!
//! | request | on | does |
//! |---|---|---|
//! | `POST /cluster/promote` | any voter | makes this node the leader |
//! | `POST /cluster/demote` | the leader | hands leadership to another voter |
//! | `DELETE /cluster/nodes/{node_id}` | the leader | removes a node from the cluster |
//! | `POST /cluster/migrate?from=HOST:PORT` | the node to re-provision | starts replacing its databases with a snapshot from the donor's API; `GET /cluster/migrate` follows it |
//! | `GET /snapshot?min_index=N` | a donor | streams a snapshot at or past entry N (the meta in `x-wolfscale-snapshot`) |
//!
//! With `[api] token` set, each needs `Authorization: Bearer <token>`. Without one,
//! only clients on this host (loopback) may call them: an unauthenticated change of
//! leadership or membership from the network is not a default we ship. The read-only
//! endpoints need neither.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error;
use crate::cluster::{AdminError, Cluster};
use crate::config::Secret;

/// Who may call the admin endpoints.
#[derive(Clone)]
pub struct Guard {
    pub token: Option<Secret>,
}

/// The admin endpoints' state: the cluster, and the token a migration presents to the
/// donor (the cluster's API token, the same on every node).
#[derive(Clone)]
pub struct Admin {
    pub cluster: Arc<Cluster>,
    pub token: Option<Secret>,
}

/// Refuse an admin request that lacks the token (or, with none set, that is not local).
pub async fn authorize(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match admit(guard.token.as_ref(), presented, peer) {
        Ok(()) => next.run(req).await,
        Err(Refusal::Unauthorized) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs the [api] token: send Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Err(Refusal::Forbidden) => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "with no [api] token set, admin endpoints accept only clients on this host; set [api] token to allow others",
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A token is set and was not presented.
    Unauthorized,
    /// No token is set and the client is not on this host.
    Forbidden,
}

/// The rule of [`authorize`]: with a token, `Authorization: Bearer <token>`; without
/// one, a loopback peer.
fn admit(
    token: Option<&Secret>,
    authorization: Option<&str>,
    peer: Option<SocketAddr>,
) -> Result<(), Refusal> {
    match token {
        Some(token) => {
            let presented = authorization.and_then(|v| v.strip_prefix("Bearer "));
            if presented.is_some_and(|p| token.matches(p.trim().as_bytes())) {
                Ok(())
            } else {
                Err(Refusal::Unauthorized)
            }
        }
        None if peer.is_some_and(|p| p.ip().is_loopback()) => Ok(()),
        None => Err(Refusal::Forbidden),
    }
}

fn admin_error(e: AdminError) -> Response {
    let message = e.to_string();
    match e {
        AdminError::NotLeader { leader } => {
            let body = serde_json::json!({"error": {
                "code": "not_leader",
                "message": message,
                "leader": leader.map(|l| serde_json::json!({"node_id": l.id, "api_addr": l.api_addr})),
            }});
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        AdminError::UnknownNode(_) => error(StatusCode::NOT_FOUND, "unknown_node", message),
        AdminError::Refused(_) => error(StatusCode::CONFLICT, "refused", message),
        AdminError::Timeout(_) => error(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
        AdminError::Failed(_) => error(StatusCode::BAD_GATEWAY, "failed", message),
    }
}

pub async fn promote(State(c): State<Arc<Cluster>>) -> Response {
    match c.promote().await {
        Ok(term) => {
            Json(serde_json::json!({"leader_id": c.member.id, "term": term})).into_response()
        }
        Err(e) => admin_error(e),
    }
}

pub async fn demote(State(c): State<Arc<Cluster>>) -> Response {
    match c.demote().await {
        Ok(leader) => Json(serde_json::json!({
            "demoted": c.member.id,
            "leader_id": leader.id,
            "leader_api_addr": leader.api_addr,
        }))
        .into_response(),
        Err(e) => admin_error(e),
    }
}

pub async fn remove(State(c): State<Arc<Cluster>>, Path(node_id): Path<String>) -> Response {
    match c.remove(&node_id).await {
        Ok(()) => Json(serde_json::json!({"removed": node_id})).into_response(),
        Err(e) => admin_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_needed_when_set_and_locality_otherwise() {
        let token = Secret::from("s3cret");
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let t = Some(&token);
        assert_eq!(admit(t, Some("Bearer s3cret"), Some(remote)), Ok(()));
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                admit(t, bad, Some(local)),
                Err(Refusal::Unauthorized),
                "{bad:?}"
            );
        }
        assert_eq!(admit(None, None, Some(local)), Ok(()));
        assert_eq!(admit(None, None, Some(v6)), Ok(()));
        assert_eq!(admit(None, None, Some(remote)), Err(Refusal::Forbidden));
        assert_eq!(admit(None, Some("Bearer x"), None), Err(Refusal::Forbidden));
    }
}

#[derive(serde::Deserialize)]
pub struct MigrateQuery {
    from: String,
}

/// Start a migration in the background; 409 while one runs.
pub async fn migrate(
    State(a): State<Admin>,
    axum::extract::Query(q): axum::extract::Query<MigrateQuery>,
) -> Response {
    {
        let mut m = a
            .cluster
            .migration
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if matches!(m.phase, "waiting" | "downloading" | "loading") {
            return error(
                StatusCode::CONFLICT,
                "migrating",
                format!(
                    "a migration from {} is running",
                    m.from.as_deref().unwrap_or("?")
                ),
            );
        }
        m.phase = "waiting";
        m.from = Some(q.from.clone());
        m.error = None;
    }
    let cluster = a.cluster.clone();
    let token = a.token.clone();
    tokio::spawn(async move {
        let token = token.as_ref().map(|t| t.expose().to_string());
        if let Err(e) = cluster.migrate_from(&q.from, token.as_deref()).await {
            tracing::error!(error = %e, from = q.from, "migration failed");
        }
    });
    (StatusCode::ACCEPTED, Json(a.cluster.migration_status())).into_response()
}

pub async fn migration(State(a): State<Admin>) -> Response {
    Json(a.cluster.migration_status()).into_response()
}

#[derive(serde::Deserialize)]
pub struct SnapshotQuery {
    #[serde(default)]
    min_index: u64,
}

/// Stream a snapshot at or past `min_index` (built now if the current one is older).
pub async fn snapshot(
    State(a): State<Admin>,
    axum::extract::Query(q): axum::extract::Query<SnapshotQuery>,
) -> Response {
    let (meta, path) = match a.cluster.snapshot_at_least(q.min_index).await {
        Ok(found) => found,
        Err(e) => return admin_error(e),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "snapshot_unreadable",
                format!("{}: {e}", path.display()),
            )
        }
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let meta = serde_json::to_string(&meta).unwrap_or_default();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/sql"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&meta) {
        h.insert(crate::cluster::snapshot::META_HEADER, v);
    }
    r
}
