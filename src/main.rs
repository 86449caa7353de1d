//! `wolfscale`: run a node, write or check its configuration, classify SQL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use wolfscale::config::{self, Config, Severity};
use wolfscale::proxy::{Proxy, ProxySettings};

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
    /// Run this node: the MySQL proxy in front of the local MariaDB.
    Start {
        /// Bootstrap a new cluster from this node (cluster mode is not in this build yet).
        #[arg(long)]
        bootstrap: bool,
    },
    /// Check the config file and report every problem with file, key and reason; then
    /// connect to [database] and report how clients' accounts will be matched.
    Validate {
        /// Check the file only, without connecting to MariaDB.
        #[arg(long)]
        offline: bool,
    },
    /// Print the class of a SQL statement.
    Classify { sql: String },
    /// Start a throwaway MariaDB (mariadbd from PATH) and a proxy in front of it.
    Demo {
        /// Proxy listen address.
        #[arg(long, default_value = "127.0.0.1:8007")]
        listen: std::net::SocketAddr,
        /// Directory for the throwaway server (default: a new temporary directory).
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Command::Validate { offline } => Ok(validate(&path, offline)),
        Command::Classify { sql } => {
            println!("{}", wolfscale::sql::classify(&sql));
            Ok(ExitCode::SUCCESS)
        }
        Command::Start { bootstrap } => start(&path, bootstrap),
        Command::Demo { listen, dir } => demo(listen, dir),
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

fn validate(path: &std::path::Path, offline: bool) -> ExitCode {
    let diags = config::check_file(path);
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
    println!("{}: ok ({} warning(s))", path.display(), diags.len());
    if offline {
        return ExitCode::SUCCESS;
    }
    let Ok((cfg, _)) = Config::load(path) else {
        return ExitCode::SUCCESS;
    };
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
    let settings = ProxySettings::from_config(cfg);
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

fn start(path: &std::path::Path, bootstrap: bool) -> anyhow::Result<ExitCode> {
    let (cfg, warnings) = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if bootstrap {
        tracing::warn!("--bootstrap: clustering is not part of this build; running a single node");
    }
    if !cfg.proxy.enabled {
        anyhow::bail!(
            "{}: proxy.enabled = false leaves nothing to run in this build",
            path.display()
        );
    }
    let settings = ProxySettings::from_config(&cfg);
    runtime()?.block_on(serve_until_signal(settings))?;
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn serve_until_signal(settings: ProxySettings) -> anyhow::Result<()> {
    let proxy = Proxy::bind(settings).await?;
    let (tx, rx) = watch::channel(false);
    let serve = tokio::spawn(proxy.serve(rx));
    wait_for_signal().await?;
    tracing::info!("signal received: shutting down");
    tx.send_replace(true);
    serve.await?;
    Ok(())
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

fn demo(listen: std::net::SocketAddr, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (dir, temp) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("wolfscale-demo-{}", std::process::id())),
            true,
        ),
    };
    let db = wolfscale::localdb::LocalMariaDb::start(&dir, &Default::default())
        .context("starting the demo MariaDB")?;
    tracing::info!(dir = %dir.display(), port = db.port(), "throwaway MariaDB started");
    let settings = ProxySettings::new(listen, db.addr(), "root");
    println!(
        "WolfScale demo: connect with  mariadb -h{} -P{} -uroot",
        listen.ip(),
        listen.port()
    );
    let result = runtime()?.block_on(serve_until_signal(settings));
    drop(db);
    if temp {
        std::fs::remove_dir_all(&dir).ok();
    }
    result.map(|_| ExitCode::SUCCESS)
}
