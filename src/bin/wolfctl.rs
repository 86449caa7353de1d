//! `wolfctl`: operator CLI.
//!
//! `list servers`, `status`, `promote`, `demote` and `remove` talk to a node's HTTP API:
//! `-e/--endpoint URL` if given, else the `[api] bind_address` of the config file (with
//! its `[api] token`), else `http://127.0.0.1:8080`. `check-config` and `wal` work on
//! local files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;
use wolfscale::config::{self, Config, Severity};
use wolfscale::wal::inspect;

#[derive(Parser)]
#[command(name = "wolfctl", version, about = "Operate a WolfScale cluster")]
struct Cli {
    /// The node's config file (default: $WOLFSCALE_CONFIG, then ./wolfscale.toml): where
    /// its API listens and its [api] token.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// The API to talk to, e.g. http://10.0.0.2:8080 (overrides the config).
    #[arg(
        short = 'e',
        long = "endpoint",
        env = "WOLFCTL_ENDPOINT",
        global = true
    )]
    endpoint: Option<String>,
    /// The API's bearer token (overrides the config's [api] token).
    #[arg(
        long,
        env = "WOLFSCALE_API_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List things: `list servers` shows every node of the cluster.
    List {
        #[command(subcommand)]
        what: ListCommand,
    },
    /// This node's status.
    Status,
    /// Make the node behind the endpoint the leader (a leadership transfer).
    Promote,
    /// Have the leader behind the endpoint hand leadership to another voter.
    Demote,
    /// Replace the node's databases with a fresh snapshot of another node's (a diverged
    /// node, or one provisioned by hand), with a progress bar.
    Migrate {
        /// The donor's API address, HOST:PORT (a caught-up node).
        #[arg(long)]
        from: String,
    },
    /// A Snowflake id from the node.
    Id,
    /// Remove a node from the cluster (asked of the leader).
    Remove {
        /// The node's `[node] id`.
        node_id: String,
    },
    /// Inspect a node's write-ahead log (read-only; safe on a stopped node's files).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Check a config file; exits non-zero when it has errors.
    CheckConfig {
        /// The file (default: -c, then $WOLFSCALE_CONFIG, then ./wolfscale.toml).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// Every node: id, role, status, lag, addresses.
    Servers,
}

#[derive(Subcommand)]
enum WalCommand {
    /// Print entries: index, term, size.
    Dump {
        /// The node's data_dir (or its wal/ directory).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to: u64,
    },
    /// Verify every checksum; exit 1 on corruption, naming the file and offset.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn wal(cmd: WalCommand, json: bool) -> ExitCode {
    let result = match cmd {
        WalCommand::Dump { data_dir, from, to } => {
            if json {
                // One JSON object per line: a log can be larger than memory.
                inspect::dump(&inspect::wal_dir(&data_dir), from, to, |e| {
                    println!(
                        "{}",
                        serde_json::json!({"index": e.index, "term": e.term, "bytes": e.payload.len()})
                    )
                })
            } else {
                println!("{:>20} {:>10} {:>10}", "index", "term", "bytes");
                inspect::dump(&inspect::wal_dir(&data_dir), from, to, |e| {
                    println!("{:>20} {:>10} {:>10}", e.index, e.term, e.payload.len())
                })
            }
        }
        WalCommand::Check { data_dir } => {
            inspect::check(&inspect::wal_dir(&data_dir)).map(|reports| {
                if json {
                    let segments: Vec<Value> = reports
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "path": r.path.display().to_string(),
                                "first_index": r.first_index,
                                "last_index": r.last_index,
                                "entries": r.entries,
                                "batches": r.batches,
                                "bytes": r.bytes,
                                "torn_tail": r.torn_tail.as_ref().map(|t| serde_json::json!({
                                    "offset": t.offset, "error": t.error.to_string(),
                                })),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::json!({"ok": true, "segments": segments}));
                    return;
                }
                for r in &reports {
                    let last = r.last_index.map_or("-".into(), |l| l.to_string());
                    println!(
                        "{}: entries {}..={} ({} entries, {} batches, {} bytes) ok",
                        r.path.display(),
                        r.first_index,
                        last,
                        r.entries,
                        r.batches,
                        r.bytes
                    );
                    if let Some(t) = &r.torn_tail {
                        println!(
                            "  torn tail at offset {} ({}): the next open cuts it",
                            t.offset, t.error
                        );
                    }
                }
                println!("{} segment(s) verified", reports.len());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": {"code": "wal", "message": e.to_string()}})
                );
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &Path, json: bool) -> ExitCode {
    let diags = config::check_file(path);
    let failed = diags.iter().any(|d| d.severity == Severity::Error);
    if json {
        let list: Vec<Value> = diags
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "file": d.file.display().to_string(),
                    "key": d.key,
                    "message": d.message,
                    "suggestion": d.suggestion,
                    "line": d.location.as_ref().map(|l| l.line),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"file": path.display().to_string(), "ok": !failed, "diagnostics": list})
        );
    } else {
        for d in &diags {
            eprintln!("{d}");
        }
        if !failed {
            println!("{}: ok", path.display());
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where the API is and how to authenticate to it.
struct Api {
    /// `host:port`.
    authority: String,
    token: Option<String>,
}

/// How long a request may take (a promote waits for leadership to move).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Api {
    fn resolve(cli: &Cli) -> Result<Api, String> {
        // -c, then $WOLFSCALE_CONFIG, then /etc/wolfscale/wolfscale.toml, then
        // ./wolfscale.toml.
        let etc = std::path::Path::new("/etc/wolfscale/wolfscale.toml");
        let env_set = std::env::var_os(config::ENV_VAR).is_some_and(|v| !v.is_empty());
        let path = match &cli.config {
            None if !env_set && etc.exists() => etc.to_path_buf(),
            given => config::resolve_path(given.as_deref()),
        };
        // The config is read only when it is needed: an explicit endpoint and token
        // need no file.
        let from_config = || -> Result<Option<Config>, String> {
            if cli.config.is_none() && !path.exists() {
                return Ok(None);
            }
            Config::load(&path)
                .map(|(c, _)| Some(c))
                .map_err(|e| e.to_string())
        };
        let cfg = match (&cli.endpoint, &cli.token) {
            (Some(_), Some(_)) => None,
            _ => from_config()?,
        };
        let authority = match &cli.endpoint {
            Some(e) => parse_endpoint(e)?,
            None => match &cfg {
                Some(c) => {
                    let mut addr = c.api.bind_address;
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    addr.to_string()
                }
                None => "127.0.0.1:8080".into(),
            },
        };
        let token = cli.token.clone().or_else(|| {
            cfg.as_ref()
                .and_then(|c| c.api.token.as_ref())
                .map(|t| t.expose().to_string())
        });
        Ok(Api { authority, token })
    }

    /// [`Api::call`], its failure as the message to print.
    async fn fetch(&self, method: Method, path: &str) -> Result<Value, String> {
        self.call(method, path).await.map_err(|e| e.report())
    }

    /// One request; the JSON answer of a 2xx, or the error it carries.
    async fn call(&self, method: Method, path: &str) -> Result<Value, ApiFailure> {
        let fut = self.exchange(method, path);
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiFailure::Transport(format!(
                "no answer from http://{} within {} s",
                self.authority,
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn exchange(&self, method: Method, path: &str) -> Result<Value, ApiFailure> {
        let transport = |e: &dyn std::fmt::Display| {
            ApiFailure::Transport(format!("http://{}: {e}", self.authority))
        };
        let resp =
            wolfscale::api::client::request(&self.authority, method, path, self.token.as_deref())
                .await
                .map_err(|e| transport(&e))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(&e))?
            .to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::json!({"error": {"code": "not_json", "message": String::from_utf8_lossy(&body)}})
        });
        if status.is_success() {
            Ok(json)
        } else {
            Err(ApiFailure::Refused { status, body: json })
        }
    }
}

enum ApiFailure {
    /// The API could not be reached or spoke no HTTP.
    Transport(String),
    /// It answered with an error.
    Refused { status: StatusCode, body: Value },
}

impl ApiFailure {
    fn report(&self) -> String {
        match self {
            ApiFailure::Transport(e) => format!("cannot reach the API: {e}"),
            ApiFailure::Refused { status, body } => {
                let code = body["error"]["code"].as_str().unwrap_or("error");
                let message = body["error"]["message"].as_str().unwrap_or("");
                format!("{message} (HTTP {}, {code})", status.as_u16())
            }
        }
    }

    /// The leader's API address, when the node answered that it is not the leader.
    fn leader_api(&self) -> Option<String> {
        match self {
            ApiFailure::Refused { body, .. } if body["error"]["code"] == "not_leader" => body
                ["error"]["leader"]["api_addr"]
                .as_str()
                .map(str::to_string),
            _ => None,
        }
    }
}

/// `http://host:port` (or `host:port`) to `host:port`.
fn parse_endpoint(e: &str) -> Result<String, String> {
    if e.starts_with("https://") {
        return Err(format!(
            "{e}: the API speaks plain HTTP; use http:// (behind a TLS proxy, point -e at the node itself)"
        ));
    }
    let rest = e.strip_prefix("http://").unwrap_or(e);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{e}: no host in the endpoint"));
    }
    if authority.contains(':') {
        Ok(authority.to_string())
    } else {
        Ok(format!("{authority}:80"))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `GET /cluster`, with each member's own log and applied index (from its `/status`;
/// `null` for a member that does not answer within 2 s).
async fn servers(api: &Api) -> Result<Value, String> {
    let mut v = api.fetch(Method::GET, "/cluster").await?;
    let addrs: Vec<String> = v["members"]
        .as_array()
        .map(|ms| ms.iter().map(|m| text(&m["api_addr"])).collect())
        .unwrap_or_default();
    let asks = addrs.into_iter().map(|authority| async move {
        let member = Api {
            authority,
            token: None,
        };
        tokio::time::timeout(Duration::from_secs(2), member.fetch(Method::GET, "/status"))
            .await
            .ok()
            .and_then(Result::ok)
    });
    let answers = futures_util::future::join_all(asks).await;
    if let Some(ms) = v["members"].as_array_mut() {
        for (m, status) in ms.iter_mut().zip(answers) {
            let field = |k: &str| status.as_ref().map_or(Value::Null, |s| s[k].clone());
            m["last_log_index"] = field("last_log_index");
            m["applied_index"] = field("applied_index");
        }
    }
    Ok(v)
}

fn print_servers(cluster: &Value) {
    println!(
        "leader: {}   term: {}   (as node {} sees it)",
        text(&cluster["leader_id"]),
        text(&cluster["term"]),
        text(&cluster["node_id"])
    );
    let rows: Vec<[String; 11]> = cluster["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    [
                        text(&m["node_id"]),
                        text(&m["cluster_addr"]),
                        text(&m["role"]),
                        text(&m["status"]),
                        if m["voter"] == true {
                            "voter"
                        } else {
                            "learner"
                        }
                        .into(),
                        text(&m["last_log_index"]),
                        text(&m["applied_index"]),
                        text(&m["lag"]),
                        m["last_heard_ms"]
                            .as_u64()
                            .map_or("-".into(), |ms| format!("{ms} ms")),
                        text(&m["proxy_addr"]),
                        text(&m["api_addr"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let head = [
        "NODE", "ADDRESS", "ROLE", "STATUS", "VOTE", "LOG", "APPLIED", "LAG", "HEARD", "PROXY",
        "API",
    ];
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// `[#########-----------]  45%  12.3 of 27.1 MiB  downloading`
fn progress_line(m: &Value) -> String {
    const WIDTH: usize = 30;
    let phase = m["phase"].as_str().unwrap_or("?");
    let bytes = m["bytes"].as_u64().unwrap_or(0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    match m["total"].as_u64().filter(|t| *t > 0) {
        Some(total) => {
            let done = (bytes.min(total) as f64 / total as f64 * WIDTH as f64) as usize;
            format!(
                "[{}{}] {:>3}%  {:.1} of {:.1} MiB  {phase}",
                "#".repeat(done),
                "-".repeat(WIDTH - done),
                bytes.min(total) * 100 / total,
                mib(bytes),
                mib(total)
            )
        }
        None => format!("{:.1} MiB  {phase}", mib(bytes)),
    }
}

fn print_status(status: &Value) {
    if let Some(map) = status.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in map {
            println!("{k:<width$}  {}", text(v));
        }
    }
}

async fn remote(api: Api, command: Command, json: bool) -> Result<(), String> {
    if json {
        let (method, path) = match &command {
            Command::Status => (Method::GET, "/status".to_string()),
            Command::Id => (Method::GET, "/id".to_string()),
            Command::Promote => (Method::POST, "/cluster/promote".to_string()),
            Command::Demote => (Method::POST, "/cluster/demote".to_string()),
            Command::Remove { node_id } => (Method::DELETE, format!("/cluster/nodes/{node_id}")),
            _ => (Method::GET, String::new()),
        };
        if !path.is_empty() {
            let v = match api.call(method, &path).await {
                Ok(v) => v,
                Err(ApiFailure::Refused { body, .. }) => {
                    println!("{body}");
                    return Err(String::new());
                }
                Err(e) => return Err(e.report()),
            };
            println!("{v}");
            return Ok(());
        }
    }
    match command {
        Command::List {
            what: ListCommand::Servers,
        } => {
            let v = servers(&api).await?;
            if json {
                println!("{v}");
            } else {
                print_servers(&v);
            }
        }
        Command::Id => {
            let v = api.fetch(Method::GET, "/id").await?;
            println!("{}", text(&v["id"]));
        }
        Command::Status => {
            let v = api.fetch(Method::GET, "/status").await?;
            print_status(&v);
        }
        Command::Promote => {
            let v = api.fetch(Method::POST, "/cluster/promote").await?;
            println!(
                "{} is the leader (term {})",
                text(&v["leader_id"]),
                text(&v["term"])
            );
        }
        Command::Demote => {
            let v = api.fetch(Method::POST, "/cluster/demote").await?;
            println!(
                "{} handed leadership to {}",
                text(&v["demoted"]),
                text(&v["leader_id"])
            );
        }
        Command::Remove { node_id } => {
            let path = format!("/cluster/nodes/{node_id}");
            let v = match api.call(Method::DELETE, &path).await {
                Ok(v) => v,
                // Only the leader changes the membership: ask it.
                Err(e) => match e.leader_api() {
                    Some(leader) => {
                        let at_leader = Api {
                            authority: leader,
                            token: api.token.clone(),
                        };
                        at_leader.fetch(Method::DELETE, &path).await?
                    }
                    None => return Err(e.report()),
                },
            };
            println!("{} removed from the cluster", text(&v["removed"]));
        }
        Command::Migrate { from } => {
            let from = parse_endpoint(&from)?;
            let path = format!("/cluster/migrate?from={from}");
            if let Err(e) = api.call(Method::POST, &path).await {
                return Err(match (json, e) {
                    (true, ApiFailure::Refused { body, .. }) => {
                        println!("{body}");
                        String::new()
                    }
                    (_, e) => e.report(),
                });
            }
            let mut last_line = String::new();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let m = api.fetch(Method::GET, "/cluster/migrate").await?;
                let line = progress_line(&m);
                if line != last_line && !json {
                    eprint!("\r{line}\x1b[K");
                    last_line = line;
                }
                let phase = m["phase"].as_str();
                if json && matches!(phase, Some("done") | Some("failed")) {
                    println!("{m}");
                }
                match phase {
                    Some("done") => {
                        if !json {
                            eprintln!();
                            println!(
                                "migrated from {from}: the node's databases are at entry {}",
                                text(&m["index"])
                            );
                        }
                        break;
                    }
                    Some("failed") if json => return Err(String::new()),
                    Some("failed") => {
                        eprintln!();
                        return Err(format!("migration failed: {}", text(&m["error"])));
                    }
                    _ => {}
                }
            }
        }
        Command::Wal { .. } | Command::CheckConfig { .. } => unreachable!("local commands"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Wal { command } => return wal(command, cli.json),
        Command::CheckConfig { file } => {
            let path = config::resolve_path(file.as_deref().or(cli.config.as_deref()));
            return check_config(&path, cli.json);
        }
        _ => {}
    }
    let api = match Api::resolve(&cli) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(remote(api, cli.command, cli.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            ExitCode::from(1)
        }
    }
}
