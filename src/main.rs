//! `wolfscale`: run a node, write or check its configuration, classify SQL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wolfscale::config::{self, Config, Severity};
use wolfscale::run::RunningNode;

#[derive(Parser)]
#[command(
    name = "wolfscale",
    version,
    about = "MariaDB gateway and synchronization manager"
)]
struct Cli {
    /// Config file (default: $WOLFSCALE_CONFIG, then ./wolfscale.toml).
    #[arg(short, long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace, or e.g. "wolfscale=debug").
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented wolfscale.toml.
    Init {
        #[arg(long, default_value = "node-1")]
        node_id: String,
        /// Where to write it (default: the config path).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run this node: the MySQL proxy, the cluster member and the HTTP API.
    Start {
        /// Create a new cluster of this node and `[cluster] peers` (first start of the
        /// first node only; a node that already has a log resumes from it).
        #[arg(long)]
        bootstrap: bool,
    },
    /// Run this node and join an established cluster through one of its nodes
    /// (`HOST:7654`, any member: it points to the leader). The node becomes a learner,
    /// its MariaDB is filled from the log, and it becomes a voter once caught up.
    Join {
        /// A member's cluster address.
        #[arg(value_name = "HOST:PORT")]
        leader: String,
    },
    /// Run the MySQL proxy with no MariaDB of its own. With `[cluster] peers` (and
    /// `secret`) it is a standalone proxy in front of that cluster: it learns the
    /// members and the leader, sends writes and transactions to the leader, and reads
    /// from members fresh enough for the session. Without peers it fronts
    /// `[database]` alone: every statement runs directly on that MariaDB.
    Proxy {
        /// Where to listen (default: `[proxy] bind_address`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print this node's and the cluster's status (from the node's HTTP API).
    Status {
        /// The API to ask (default: this config's [api] bind_address).
        #[arg(short, long)]
        endpoint: Option<String>,
    },
    /// Check the config file and report every problem with file, key and reason; then
    /// connect to [database] and report how clients' accounts will be matched.
    Validate {
        /// Check the file only, without connecting to MariaDB.
        #[arg(long)]
        offline: bool,
        /// Check it as a standalone proxy's file (`wolfscale proxy`), which needs no
        /// `[node] advertise_address`.
        #[arg(long)]
        proxy: bool,
    },
    /// Print the configuration this node runs with: every key, defaults filled in,
    /// secrets redacted.
    Info,
    /// Print the class of a SQL statement.
    Classify { sql: String },
    /// A local cluster to try: N throwaway MariaDBs and N nodes on loopback ports.
    Demo {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// The first node's MySQL port; the others get free ports.
        #[arg(long, default_value = "127.0.0.1:8007")]
        listen: std::net::SocketAddr,
        /// Directory for the throwaway servers (default: a new temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a service's log file gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = config::resolve_path(cli.config.as_deref());
    match cli.command {
        Command::Init {
            node_id,
            output,
            force,
        } => init(node_id, output.unwrap_or(path), force),
        Command::Validate { offline, proxy } => Ok(validate(&path, offline, proxy)),
        Command::Info => info(&path),
        Command::Classify { sql } => {
            println!("{}", wolfscale::sql::classify(&sql));
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { bootstrap } => start(&path, bootstrap, None),
        Command::Join { leader } => start(&path, false, Some(leader)),
        Command::Proxy { listen } => proxy(&path, listen),
        Command::Status { endpoint } => status(&path, endpoint),
        Command::Demo { nodes, listen, dir } => demo(nodes, listen, dir),
    }
}

fn init(node_id: String, output: PathBuf, force: bool) -> anyhow::Result<ExitCode> {
    if output.exists() && !force {
        anyhow::bail!(
            "{} already exists (use --force to overwrite)",
            output.display()
        );
    }
    std::fs::write(&output, config::template(&node_id))
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("wrote {}", output.display());
    Ok(ExitCode::SUCCESS)
}

fn info(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (cfg, _) = Config::load(path)?;
    println!("# {}", cfg.source.display());
    print!("{}", config::render_info(&cfg));
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &std::path::Path, offline: bool, proxy: bool) -> ExitCode {
    let role = if proxy {
        config::Role::Proxy
    } else {
        config::Role::Node
    };
    let diags = config::check_file_as(path, role);
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    for d in &diags {
        eprintln!("{d}");
    }
    if errors > 0 {
        eprintln!("{}: {errors} error(s)", path.display());
        return ExitCode::from(1);
    }
    let loaded = Config::load_as(path, role).ok();
    let exposure = loaded
        .as_ref()
        // A proxy serves no HTTP API.
        .filter(|_| !proxy)
        .map(|(cfg, _)| config::exposure_warnings(cfg))
        .unwrap_or_default();
    for w in &exposure {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok ({} warning(s))",
        path.display(),
        diags.len() + exposure.len()
    );
    if offline {
        return ExitCode::SUCCESS;
    }
    let Some((cfg, _)) = loaded else {
        return ExitCode::SUCCESS;
    };
    if proxy && !cfg.cluster.peers.is_empty() {
        println!(
            "standalone proxy: no MariaDB of its own to check (accounts come through the nodes)"
        );
        return ExitCode::SUCCESS;
    }
    let report = runtime().map(|rt| rt.block_on(database_report(&cfg)));
    match report {
        Ok(Ok(lines)) => lines.iter().for_each(|l| println!("{l}")),
        Ok(Err(e)) => println!("warning: database: {e:#} (the file itself is valid)"),
        Err(e) => println!("warning: database: {e:#}"),
    }
    ExitCode::SUCCESS
}

/// What `validate` can tell about `[database]`: reachable, and how accounts will match.
async fn database_report(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let settings = wolfscale::proxy::ProxySettings::from_config(cfg);
    let greeting = wolfscale::proxy::backend::probe(&settings.backend_addr).await?;
    let opts = wolfscale::proxy::server::service_opts(&settings);
    let (accepted, networks, from) =
        wolfscale::proxy::server::proxy_protocol_allowed(&opts, &settings.backend_addr).await?;
    let from = from.map_or("the Unix socket".to_string(), |ip| ip.to_string());
    let version = String::from_utf8_lossy(&greeting.server_version).into_owned();
    let mut lines = vec![format!(
        "database: {} reachable as '{}' ({version})",
        settings.backend_addr, settings.service_user
    )];
    lines.push(if accepted {
        format!(
            "database: PROXY protocol accepted from {from} (proxy_protocol_networks = '{networks}'): \
             MariaDB matches each client's account by the client's own address"
        )
    } else {
        format!(
            "warning: database: PROXY protocol not accepted from {from} (proxy_protocol_networks = '{networks}'): \
             a client is refused (ERR 1045) when MariaDB would give the proxy's own address another \
             account than the client's; add {} to proxy_protocol_networks to avoid that",
            if from.starts_with("the Unix") { "localhost" } else { from.as_str() }
        )
    });
    Ok(lines)
}

/// The config of a node to run: its errors printed (exit code 2), its warnings logged,
/// refused when the proxy is disabled (nothing would run).
fn runnable_config(
    path: &std::path::Path,
    role: config::Role,
) -> anyhow::Result<Result<Config, ExitCode>> {
    let (cfg, warnings) = match Config::load_as(path, role) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Err(ExitCode::from(2)));
        }
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if role == config::Role::Node {
        for w in config::exposure_warnings(&cfg) {
            tracing::warn!("{w}");
        }
    }
    if !cfg.proxy.enabled {
        anyhow::bail!(
            "{}: proxy.enabled = false leaves nothing to run",
            path.display()
        );
    }
    Ok(Ok(cfg))
}

fn start(
    path: &std::path::Path,
    bootstrap: bool,
    join: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = match runnable_config(path, config::Role::Node)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    runtime()?.block_on(async {
        let node = RunningNode::start(&cfg, bootstrap).await?;
        tracing::info!(
            node = %cfg.node.id,
            proxy = %node.proxy_addr,
            api = ?node.api_addr,
            "node started"
        );
        if let Some(addr) = join {
            node.cluster.join(&addr).await?;
        }
        wait_for_signal().await?;
        tracing::info!("signal received: shutting down");
        node.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn proxy(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let cfg = match runnable_config(path, config::Role::Proxy)? {
        Ok(cfg) => cfg,
        Err(code) => return Ok(code),
    };
    if !cfg.cluster.peers.is_empty() {
        return runtime()?.block_on(async {
            let proxy = wolfscale::run::StandaloneProxy::start(&cfg, listen).await?;
            tracing::info!(
                proxy = %proxy.proxy_addr,
                peers = ?cfg.cluster.peers,
                "standalone proxy started in front of the cluster"
            );
            wait_for_signal().await?;
            tracing::info!("signal received: shutting down");
            proxy.shutdown().await;
            Ok(ExitCode::SUCCESS)
        });
    }
    runtime()?.block_on(async {
        let mut settings = wolfscale::proxy::ProxySettings::from_config(&cfg);
        if let Some(l) = listen {
            settings.listen = l;
        }
        let proxy = wolfscale::proxy::Proxy::bind(settings).await?;
        tracing::info!(proxy = %proxy.local_addr(), "proxy started (single node, no cluster)");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let serve = tokio::spawn(proxy.serve(rx));
        wait_for_signal().await?;
        tracing::info!("signal received: shutting down");
        stop.send_replace(true);
        serve.await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// GET a path of a node's HTTP API and parse the JSON answer.
async fn api_get(endpoint: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("cannot reach the API at {hostport}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(serde_json::from_str(body)?)
}

fn status(path: &std::path::Path, endpoint: Option<String>) -> anyhow::Result<ExitCode> {
    let endpoint = match endpoint {
        Some(e) => e,
        None => {
            let (cfg, _) = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let a = cfg.api.bind_address;
            let host = if a.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                a.ip().to_string()
            };
            format!("{host}:{}", a.port())
        }
    };
    runtime()?.block_on(async {
        let node = api_get(&endpoint, "/status").await?;
        let cluster = api_get(&endpoint, "/cluster").await?;
        let s = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!(
            "node {} ({}), {}, term {}, leader {}, log {}, applied {}",
            s(&node["node_id"]),
            s(&node["status"]),
            s(&node["role"]),
            s(&node["term"]),
            s(&node["leader_id"]),
            s(&node["last_log_index"]),
            s(&node["applied_index"])
        );
        println!(
            "{:<16} {:<9} {:<14} {:<22} {:<22} {:>8} {:>6}",
            "member", "role", "status", "cluster", "proxy", "matched", "lag"
        );
        for m in cluster["members"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:<9} {:<14} {:<22} {:<22} {:>8} {:>6}",
                s(&m["node_id"]),
                s(&m["role"]),
                s(&m["status"]),
                s(&m["cluster_addr"]),
                s(&m["proxy_addr"]),
                s(&m["matched_index"]),
                s(&m["lag"])
            );
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn demo(
    nodes: u16,
    listen: std::net::SocketAddr,
    dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=9).contains(&nodes), "--nodes must be 1..=9");
    let (dir, temp) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("wolfscale-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = runtime()?.block_on(run_demo(nodes, listen, &dir));
    if temp {
        std::fs::remove_dir_all(&dir).ok();
    }
    result.map(|_| ExitCode::SUCCESS)
}

async fn run_demo(
    nodes: u16,
    listen: std::net::SocketAddr,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    use wolfscale::localdb::{free_port, LocalMariaDb, Options};
    let opts = Options {
        extra_args: vec!["--proxy-protocol-networks=127.0.0.0/8,localhost".into()],
        ..Options::default()
    };
    let mut dbs = Vec::new();
    for i in 1..=nodes {
        let d = dir.join(format!("node-{i}"));
        let o = opts.clone();
        let db = tokio::task::spawn_blocking(move || LocalMariaDb::start(&d.join("mariadb"), &o))
            .await?
            .context("starting a demo MariaDB")?;
        dbs.push(db);
    }
    let cluster_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut configs = Vec::new();
    for i in 0..nodes as usize {
        let proxy = if i == 0 {
            listen.to_string()
        } else {
            format!("127.0.0.1:{}", free_port()?)
        };
        let peers: Vec<String> = (0..nodes as usize)
            .filter(|j| *j != i)
            .map(|j| format!("\"127.0.0.1:{}\"", cluster_ports[j]))
            .collect();
        let text = format!(
            "[node]\nid = \"node-{n}\"\nbind_address = \"127.0.0.1:{cp}\"\nadvertise_address = \"127.0.0.1:{cp}\"\n\
             data_dir = \"{data}\"\n[database]\nhost = \"127.0.0.1\"\nport = {db}\nuser = \"root\"\n\
             [cluster]\npeers = [{peers}]\nsecret = \"demo-secret\"\n[api]\nbind_address = \"127.0.0.1:{api}\"\n\
             [proxy]\nbind_address = \"{proxy}\"\n",
            n = i + 1,
            cp = cluster_ports[i],
            data = dir.join(format!("node-{}", i + 1)).join("data").display(),
            db = dbs[i].port(),
            peers = peers.join(", "),
            api = free_port()?,
        );
        let (cfg, _) = Config::from_toml_str(&text, std::path::Path::new(config::MEMORY_SOURCE))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        configs.push(cfg);
    }
    // Followers first, then the bootstrapping node, which contacts them.
    let mut running = Vec::new();
    for (i, cfg) in configs.iter().enumerate().skip(1) {
        let cfg = cfg.clone();
        running.push((
            i,
            tokio::spawn(async move { RunningNode::start(&cfg, false).await }),
        ));
    }
    let first = RunningNode::start(&configs[0], true).await?;
    let mut started = vec![first];
    for (_, h) in running {
        started.push(h.await??);
    }
    println!(
        "WolfScale demo: {nodes} nodes, each with its own MariaDB (data in {})",
        dir.display()
    );
    for (i, n) in started.iter().enumerate() {
        println!(
            "  node-{}: mariadb -h127.0.0.1 -P{} -uroot      HTTP API http://{}  (its MariaDB: port {})",
            i + 1,
            n.proxy_addr.port(),
            n.api_addr.map(|a| a.to_string()).unwrap_or_default(),
            dbs[i].port()
        );
    }
    println!("Writes go through the leader's port; Ctrl-C stops everything.");
    wait_for_signal().await?;
    for n in started {
        n.shutdown().await;
    }
    drop(dbs);
    Ok(())
}
