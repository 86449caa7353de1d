//! Snapshots: a logical dump of the local MariaDB that carries its own
//! `wolfscale.applied` row (ARCHITECTURE §3).
//!
//! A snapshot is built with the applier held (no entry is applied and no local commit
//! is ordered meanwhile) and settled first (every local commit handed over is done and
//! the marker written), so the dump's marker names exactly the entries in its data. It
//! is `mariadb-dump --single-transaction` of every database but the system ones
//! (`wolfscale` included, last), with routines, events and triggers, followed by the
//! accounts after [`ACCOUNTS_MARKER`]: `CREATE USER IF NOT EXISTS` / `CREATE ROLE IF NOT
//! EXISTS` and the grants of every account but the server's own (`root`, `mysql`,
//! `mariadb.sys`) and the node's service account, read with `SHOW CREATE USER` and
//! `SHOW GRANTS` (an account that cannot be read is skipped with a warning; with
//! `mariadb-dump --system=users` one such account failed the whole dump). They are
//! loaded after the data, with `--force`: an account statement the loader may not run
//! is reported and does not fail the install.
//!
//! Installing one (a node behind the purged log: openraft streams the leader's current
//! snapshot to it) drops every non-system database, loads the dump with the `mariadb`
//! client, re-reads the marker and checks it is the snapshot's position; the applier
//! then skips every entry at or below it.
//!
//! Files, under `data_dir/snapshots/`: `<id>.sql` and `<id>.meta` (the openraft
//! snapshot meta, JSON), written to `*.tmp` and renamed; only the newest is kept.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use mysql_async::prelude::Queryable;
use tokio::io::AsyncWriteExt;

use super::types::TypeConfig;

pub type Meta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// The line after which a snapshot holds account statements.
pub const ACCOUNTS_MARKER: &str = "-- wolfscale: accounts follow";

/// Accounts that are the server's own, never copied.
const SYSTEM_ACCOUNTS: &[&str] = &["root", "mysql", "mariadb.sys", "PUBLIC", ""];

/// Databases that are the server's own, never dumped nor dropped.
const SYSTEM_DATABASES: &[&str] = &["information_schema", "performance_schema", "mysql", "sys"];

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Where snapshots live and how to reach the local MariaDB with the client tools.
#[derive(Clone)]
pub struct Snapshots {
    pub dir: PathBuf,
    db: mysql_async::Opts,
}

impl Snapshots {
    pub fn new(dir: PathBuf, db: mysql_async::Opts) -> io::Result<Snapshots> {
        std::fs::create_dir_all(&dir)?;
        // Leftovers of a build or a transfer cut short.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") || name.ends_with(".part") {
                std::fs::remove_file(entry.path()).ok();
            }
        }
        Ok(Snapshots { dir, db })
    }

    pub fn sql_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sql"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.meta"))
    }

    /// A file to receive a snapshot streamed from a peer into.
    pub fn incoming_path(&self, meta: &Meta) -> PathBuf {
        self.dir.join(format!("{}.part", name(meta)))
    }

    /// The newest complete snapshot.
    pub fn current(&self) -> io::Result<Option<(Meta, PathBuf)>> {
        let mut best: Option<(Meta, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("meta") {
                continue;
            }
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<Meta>(&text) else {
                continue;
            };
            let sql = path.with_extension("sql");
            if !sql.exists() {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(b, _)| b.last_log_id < meta.last_log_id)
            {
                best = Some((meta, sql));
            }
        }
        Ok(best)
    }

    /// Keep `meta` (whose dump is at `sql`) as the current snapshot, and remove the
    /// older ones.
    pub fn keep(&self, meta: &Meta, sql: &Path) -> io::Result<PathBuf> {
        let id = name(meta);
        let final_sql = self.sql_path(&id);
        if sql != final_sql {
            std::fs::rename(sql, &final_sql)?;
        }
        let tmp = self.dir.join(format!("{id}.meta.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(meta).map_err(io_err)?)?;
        std::fs::rename(&tmp, self.meta_path(&id))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .ok();
        // Older snapshots go; a newer one (installed meanwhile) stays.
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let older = stem.starts_with("snap-") && stem.as_str() < id.as_str();
            if older && !path.to_string_lossy().ends_with(".part") {
                std::fs::remove_file(&path).ok();
            }
        }
        Ok(final_sql)
    }

    /// Client-tool arguments that reach the local MariaDB as the service account. The
    /// password goes through the environment, not the command line.
    fn client_args(&self, cmd: &mut tokio::process::Command) {
        cmd.arg("--no-defaults")
            .arg(format!("--host={}", self.db.ip_or_hostname()))
            .arg(format!("--port={}", self.db.tcp_port()))
            .arg("--protocol=TCP");
        if let Some(user) = self.db.user() {
            cmd.arg(format!("--user={user}"));
        }
        match self.db.pass() {
            Some(p) if !p.is_empty() => {
                cmd.env("MYSQL_PWD", p);
            }
            _ => {}
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
    }

    /// The user databases of the local MariaDB (`wolfscale` among them).
    async fn user_databases(&self) -> io::Result<Vec<String>> {
        let mut conn = mysql_async::Conn::new(self.db.clone())
            .await
            .map_err(io_err)?;
        let all: Vec<String> = conn.query("SHOW DATABASES").await.map_err(io_err)?;
        conn.disconnect().await.ok();
        Ok(all
            .into_iter()
            .filter(|d| !SYSTEM_DATABASES.contains(&d.to_ascii_lowercase().as_str()))
            .collect())
    }

    /// Dump the local MariaDB into `out` (the caller holds the applier).
    pub async fn dump(&self, out: &Path) -> io::Result<()> {
        // `wolfscale` (the marker) last: a load cut short by a crash leaves no marker
        // ahead of the data (the node then needs a snapshot again).
        let mut databases = self.user_databases().await?;
        databases.sort_by_key(|d| d == "wolfscale");
        let file = std::fs::File::create(out)?;
        let mut cmd = tokio::process::Command::new(tool("mariadb-dump"));
        self.client_args(&mut cmd);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--add-drop-database",
            "--databases",
        ])
        .args(&databases)
        .stdout(file)
        .stderr(Stdio::piped());
        let output = cmd.spawn()?.wait_with_output().await?;
        if !output.status.success() {
            return Err(io_err(format!(
                "mariadb-dump failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let accounts = self.account_statements().await?;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(out)?;
            writeln!(f, "\n{ACCOUNTS_MARKER}")?;
            for s in accounts {
                writeln!(f, "{s};")?;
            }
            f.sync_all()?;
        }
        Ok(())
    }

    /// `CREATE … IF NOT EXISTS` and `GRANT` statements for the accounts to copy.
    async fn account_statements(&self) -> io::Result<Vec<String>> {
        let mut conn = mysql_async::Conn::new(self.db.clone())
            .await
            .map_err(io_err)?;
        let rows: Vec<(String, String, String)> = conn
            .query("SELECT User, Host, is_role FROM mysql.user")
            .await
            .map_err(io_err)?;
        let me = self.db.user().unwrap_or_default().to_string();
        let lit = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut creates = Vec::new();
        let mut grants = Vec::new();
        for (user, host, is_role) in rows {
            if SYSTEM_ACCOUNTS.contains(&user.as_str()) || user == me {
                continue;
            }
            let (create, target) = if is_role == "Y" {
                (
                    Ok(format!("CREATE ROLE IF NOT EXISTS {}", lit(&user))),
                    lit(&user),
                )
            } else {
                let target = format!("{}@{}", lit(&user), lit(&host));
                let shown: Result<Option<String>, _> =
                    conn.query_first(format!("SHOW CREATE USER {target}")).await;
                (
                    shown
                        .map_err(|e| e.to_string())
                        .and_then(|s| s.ok_or_else(|| "no answer".to_string()))
                        .map(|s| s.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1)),
                    target,
                )
            };
            let create = match create {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(account = %target, error = %e, "an account cannot be read: it is not in the snapshot");
                    continue;
                }
            };
            match conn
                .query::<String, _>(format!("SHOW GRANTS FOR {target}"))
                .await
            {
                Ok(g) => {
                    creates.push(create);
                    grants.extend(g);
                }
                Err(e) => {
                    tracing::warn!(account = %target, error = %e, "an account's grants cannot be read: it is not in the snapshot");
                }
            }
        }
        conn.disconnect().await.ok();
        creates.extend(grants);
        Ok(creates)
    }

    /// Replace the local MariaDB's data with the dump at `sql`.
    pub async fn load(&self, sql: &Path) -> io::Result<()> {
        let mut conn = mysql_async::Conn::new(self.db.clone())
            .await
            .map_err(io_err)?;
        for db in self.user_databases().await? {
            conn.query_drop(format!(
                "DROP DATABASE IF EXISTS {}",
                crate::apply::quote_ident(&db)
            ))
            .await
            .map_err(io_err)?;
        }
        conn.disconnect().await.ok();
        let mut input = tokio::io::BufReader::new(tokio::fs::File::open(sql).await?);
        // The data, strictly; then the accounts, each on its own.
        let (copied, output) = self.client_load(&mut input, false).await;
        let output = output?;
        if !output.status.success() {
            return Err(io_err(format!(
                "loading the snapshot failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        copied?;
        let (copied, output) = self.client_load(&mut input, true).await;
        let output = output?;
        let errors = String::from_utf8_lossy(&output.stderr);
        if !errors.trim().is_empty() {
            tracing::warn!(errors = %errors.trim(), "some accounts of the snapshot could not be created here");
        }
        copied
    }

    /// Pipe `input` into the `mariadb` client, up to [`ACCOUNTS_MARKER`] (or the end);
    /// `force`: go on after an error.
    async fn client_load(
        &self,
        input: &mut tokio::io::BufReader<tokio::fs::File>,
        force: bool,
    ) -> (io::Result<()>, io::Result<std::process::Output>) {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(tool("mariadb"));
        self.client_args(&mut cmd);
        cmd.arg("--binary-mode")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if force {
            cmd.arg("--force");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (Ok(()), Err(e)),
        };
        let mut stdin = child.stdin.take().expect("piped");
        let copy = async {
            let mut line = Vec::new();
            loop {
                line.clear();
                if input.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                if line.trim_ascii_end() == ACCOUNTS_MARKER.as_bytes() {
                    break;
                }
                stdin.write_all(&line).await?;
            }
            stdin.shutdown().await?;
            drop(stdin);
            Ok::<_, io::Error>(())
        };
        tokio::join!(copy, child.wait_with_output())
    }
}

/// Replace the local databases with the dump at `sql` whose meta is `meta` (the
/// caller holds the applier): load it, give the applier a new connection and the
/// loaded marker, check that the marker is `meta`'s position, make the request ids it
/// covers unanswerable as absent, and keep it as the current snapshot.
pub async fn install(
    snapshots: &Snapshots,
    applier: &mut crate::apply::Applier,
    requests: &super::requests::Requests,
    meta: &Meta,
    sql: &Path,
) -> io::Result<()> {
    snapshots.load(sql).await?;
    applier.after_snapshot().await.map_err(io_err)?;
    let loaded = applier.applied().index;
    let want = meta.last_log_id.as_ref().map(|l| l.index);
    if loaded != want {
        return Err(io_err(format!(
            "the snapshot's marker is at {loaded:?}, its meta says {want:?}"
        )));
    }
    if let Some(index) = want {
        requests.covered_through(index);
    }
    snapshots.keep(meta, sql)?;
    Ok(())
}

/// A client tool, from `$WOLFSCALE_MARIADB_BIN` when set (a directory), else `PATH`.
fn tool(name: &str) -> PathBuf {
    match std::env::var_os("WOLFSCALE_MARIADB_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(name),
        _ => PathBuf::from(name),
    }
}

/// A snapshot's file name: its position.
pub fn name(meta: &Meta) -> String {
    match &meta.last_log_id {
        Some(l) => format!("snap-{:020}-{}", l.index, l.leader_id.term),
        None => "snap-empty".into(),
    }
}

/// The header `GET /snapshot` carries the snapshot's meta in (JSON).
pub const META_HEADER: &str = "x-wolfscale-snapshot";

/// Fetch a snapshot at or past `min_index` from the API at `from` (`HOST:PORT`) into
/// `out`, calling `progress(bytes, total)` as it arrives. Returns its meta.
pub async fn download(
    from: &str,
    token: Option<&str>,
    min_index: u64,
    out: &Path,
    progress: impl Fn(u64, Option<u64>),
) -> io::Result<Meta> {
    use http_body_util::BodyExt;
    let path = format!("/snapshot?min_index={min_index}");
    let resp = crate::api::client::request(from, hyper::Method::GET, &path, token)
        .await
        .map_err(io_err)?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(io_err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            v["error"]["message"].as_str().unwrap_or("no message")
        )));
    }
    let meta: Meta = resp
        .headers()
        .get(META_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| io_err(format!("no {META_HEADER} header in the answer")))?;
    let total = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut file = tokio::fs::File::create(out).await?;
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    progress(0, total);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io_err)?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data).await?;
            bytes += data.len() as u64;
            progress(bytes, total);
        }
    }
    if total.is_some_and(|t| t != bytes) {
        return Err(io_err(format!(
            "the snapshot was cut short: {bytes} of {total:?} bytes"
        )));
    }
    file.sync_all().await?;
    Ok(meta)
}
