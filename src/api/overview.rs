//! The status page (`GET /`) and its data (`GET /cluster/overview`).
//!
//! Every [`SAMPLE_EVERY`] a sampler asks each member's `/status` (this node's own
//! without a request) and keeps the last [`HISTORY`] samples: each member's lag behind
//! the longest log, and its statement rate. The page is one HTML document with its
//! script and style inline (no external assets); it polls the overview and draws the
//! members table and the sparklines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::cluster::Cluster;

/// How often the sampler asks the members.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
pub const HISTORY: usize = 150;
/// How long one member may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Samples {
    /// The members' latest answers (`null` fields for a member that did not answer).
    members: Vec<Value>,
    /// `{"t": unix ms, "lag": {node: entries}, "rate": {node: statements/s}}`.
    history: VecDeque<Value>,
    /// Each member's statement count at the previous sample, for its rate.
    last_count: BTreeMap<String, (u64, Instant)>,
}

/// The sampler's state, shared with the handler.
#[derive(Clone, Default)]
pub struct Overview {
    samples: Arc<Mutex<Samples>>,
}

impl Overview {
    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sample every [`SAMPLE_EVERY`] until the task is aborted.
    pub fn spawn(&self, cluster: Arc<Cluster>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.sample(&cluster).await;
            }
        })
    }

    async fn sample(&self, cluster: &Cluster) {
        let view = cluster.cluster_view(Duration::from_millis(500));
        let own = serde_json::to_value(cluster.node_status()).unwrap_or(Value::Null);
        let asks = view.members.iter().map(|m| {
            let own = own.clone();
            let me = m.node_id == cluster.member.id;
            let addr = m.api_addr.clone();
            async move {
                if me {
                    return Some(own);
                }
                tokio::time::timeout(ASK_TIMEOUT, status_of(&addr))
                    .await
                    .ok()
                    .flatten()
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let longest = answers
            .iter()
            .flatten()
            .filter_map(|s| s["last_log_index"].as_u64())
            .max()
            .unwrap_or(0);
        let now = Instant::now();
        let mut s = self.lock();
        let mut lag = serde_json::Map::new();
        let mut rate = serde_json::Map::new();
        let mut members = Vec::new();
        for (m, answer) in view.members.iter().zip(&answers) {
            let field = |k: &str| answer.as_ref().map_or(Value::Null, |a| a[k].clone());
            let applied = field("applied_index").as_u64();
            let behind = applied.map(|a| longest.saturating_sub(a));
            if let Some(b) = behind {
                lag.insert(m.node_id.clone(), json!(b));
            }
            if let Some(count) = field("statements").as_u64() {
                if let Some((before, at)) = s.last_count.get(&m.node_id) {
                    let secs = now.duration_since(*at).as_secs_f64().max(0.001);
                    let r = count.saturating_sub(*before) as f64 / secs;
                    rate.insert(m.node_id.clone(), json!((r * 10.0).round() / 10.0));
                }
                s.last_count.insert(m.node_id.clone(), (count, now));
            }
            members.push(json!({
                "node_id": m.node_id,
                "role": m.role,
                "voter": m.voter,
                "status": answer.as_ref().map_or(json!(m.status), |a| a["status"].clone()),
                "reachable": answer.is_some(),
                "cluster_addr": m.cluster_addr,
                "api_addr": m.api_addr,
                "last_log_index": field("last_log_index"),
                "applied_index": field("applied_index"),
                "lag": behind,
            }));
        }
        s.members = members;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        s.history
            .push_back(json!({"t": t, "lag": lag, "rate": rate}));
        while s.history.len() > HISTORY {
            s.history.pop_front();
        }
    }
}

/// Another member's `/status`, or `None`.
async fn status_of(authority: &str) -> Option<Value> {
    let resp = super::client::request(authority, hyper::Method::GET, "/status", None)
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[derive(Clone)]
pub struct PageState {
    pub cluster: Arc<Cluster>,
    pub overview: Overview,
}

/// `GET /cluster/overview`.
pub async fn overview(State(st): State<PageState>) -> Response {
    let node = st.cluster.node_status();
    let s = st.overview.lock();
    Json(json!({
        "node_id": node.node_id,
        "leader_id": node.leader_id,
        "term": node.term,
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
        "members": s.members,
        "history": s.history,
    }))
    .into_response()
}

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WolfScale</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; background: #f6f7f9; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #5b6472; margin-bottom: 16px; }
  table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
  th, td { padding: 6px 12px; text-align: left; border-bottom: 1px solid #e6e8eb; white-space: nowrap; }
  th { font-weight: 600; color: #5b6472; font-size: 12px; text-transform: uppercase; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .leader { font-weight: 600; }
  .st { padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #e6e8eb; }
  .st-Active { background: #d3f2dc; color: #125c2b; }
  .st-Lagging, .st-Syncing, .st-Joining { background: #fff0c2; color: #6b4e00; }
  .st-Offline, .st-Dropped, .st-Diverged, .st-NeedsMigration, .st-unreachable { background: #fbd5d5; color: #7a1010; }
  svg { display: block; }
  #error { color: #7a1010; margin-top: 12px; }
</style>
</head>
<body>
<h1>WolfScale cluster</h1>
<div class="sub" id="summary">loading…</div>
<table>
  <thead><tr>
    <th>Node</th><th>Role</th><th>Status</th><th>Log</th><th>Applied</th><th>Lag</th>
    <th>Lag, last minutes</th><th>Statements/s, last minutes</th><th>Address</th>
  </tr></thead>
  <tbody id="members"></tbody>
</table>
<div id="error"></div>
<script>
"use strict";
function spark(values, color) {
  const w = 160, h = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  if (values.length < 2) return svg;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) =>
    (i * (w - 2) / (values.length - 1) + 1).toFixed(1) + "," + (h - 2 - (v / max) * (h - 4)).toFixed(1));
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
  svg.appendChild(line);
  const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
  title.textContent = "now " + values[values.length - 1] + ", max " + max;
  svg.appendChild(title);
  return svg;
}
function cell(row, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text == null ? "–" : String(text);
  row.appendChild(td);
  return td;
}
async function refresh() {
  try {
    const r = await fetch("cluster/overview", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const o = await r.json();
    document.getElementById("summary").textContent =
      "leader " + (o.leader_id || "none") + " · term " + o.term + " · seen from " + o.node_id +
      " · updated " + new Date().toLocaleTimeString();
    const body = document.getElementById("members");
    body.replaceChildren();
    for (const m of o.members) {
      const row = document.createElement("tr");
      row.dataset.node = m.node_id;
      cell(row, m.node_id, m.role === "leader" ? "leader" : "");
      cell(row, m.role + (m.voter ? "" : " (learner)"));
      const st = document.createElement("span");
      const status = m.reachable ? m.status : "unreachable";
      st.className = "st st-" + status; st.textContent = status;
      cell(row, st);
      cell(row, m.last_log_index, "num");
      cell(row, m.applied_index, "num");
      cell(row, m.lag, "num");
      cell(row, spark(o.history.map(h => h.lag[m.node_id] || 0), "#c2410c"));
      cell(row, spark(o.history.map(h => h.rate[m.node_id] || 0), "#1d4ed8"));
      cell(row, m.cluster_addr);
      body.appendChild(row);
    }
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot refresh: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;
