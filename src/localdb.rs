//! Throwaway `mariadbd` processes: used by `wolfscale demo` and by the integration
//! test harness (`tests/common`).
//!
//! A server's data directory is a copy of one installed template (made once per
//! machine and MariaDB version with `mariadb-install-db` under the system temp dir;
//! root gets a native-password account with an empty password): copying takes a
//! fraction of a second where an install takes seconds, which matters for tests that
//! start a MariaDB per cluster node. The server runs on a free loopback port with a
//! small buffer pool and no binlog, and is stopped when the handle is dropped. The
//! child is also asked to die with its parent (`PR_SET_PDEATHSIG`), so a test process
//! killed outright leaves no server behind. That signal follows the *thread* that
//! forked the child, so every server is forked by one spawner thread that lives as long
//! as the process.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LocalDbError {
    #[error("{program} not found on PATH (install the MariaDB server package): {source}")]
    Missing {
        program: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("mariadb-install-db failed in {dir}: {log}")]
    Install { dir: PathBuf, log: String },
    #[error("mariadbd did not become ready on port {port}: {log}")]
    NotReady { port: u16, log: String },
}

/// Server settings for a throwaway instance.
#[derive(Debug, Clone)]
pub struct Options {
    pub buffer_pool: &'static str,
    /// Run with `skip_name_resolve = OFF` (MariaDB's default); off by default here,
    /// because name lookups cost time and tests rarely need them.
    pub resolve_names: bool,
    /// Extra `mariadbd` arguments.
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            buffer_pool: "32M",
            resolve_names: false,
            extra_args: vec![],
        }
    }
}

/// A running `mariadbd`; stopped on drop.
pub struct LocalMariaDb {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl LocalMariaDb {
    /// Install (if `dir/data` does not exist yet) and start a server under `dir`.
    pub fn start(dir: &Path, opts: &Options) -> Result<Self, LocalDbError> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        if !data.join("mysql").exists() {
            let template = template()?;
            copy_dir(&template, &data)?;
        }
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match spawn(dir, &data, port, opts) {
                Ok(db) => return Ok(db),
                // Another process may have taken the port between probe and bind.
                Err(e @ LocalDbError::NotReady { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LocalDbError::NotReady {
            port: 0,
            log: String::new(),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start the server again after [`Self::stop`], on the same port and data.
    pub fn restart(&mut self, opts: &Options) -> Result<(), LocalDbError> {
        self.stop();
        let data = self.dir.join("data");
        *self = spawn(&self.dir, &data, self.port, opts)?;
        Ok(())
    }

    /// Stop with SIGTERM, then SIGKILL after ten seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().ok();
        child.wait().ok();
    }
}

impl Drop for LocalMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

fn common_args(data: &Path, opts: &Options) -> Vec<String> {
    // Each server gets its own tmpdir: concurrent bootstraps sharing /tmp collide.
    let tmp = data.with_file_name("tmp");
    std::fs::create_dir_all(&tmp).ok();
    vec![
        "--no-defaults".into(),
        format!("--datadir={}", data.display()),
        format!("--tmpdir={}", tmp.display()),
        "--user=root".into(),
        format!("--innodb-buffer-pool-size={}", opts.buffer_pool),
        "--innodb-log-file-size=16M".into(),
    ]
}

/// The installed template data directory for this MariaDB version, made on first use.
/// Concurrent first uses (test processes) each install into a private directory and
/// rename it into place; the first rename wins.
fn template() -> Result<PathBuf, LocalDbError> {
    let version = Command::new(mariadbd_path())
        .arg("--version")
        .output()
        .map_err(|source| LocalDbError::Missing {
            program: "mariadbd",
            source,
        })?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&version.stdout, &mut hasher);
    std::hash::Hash::hash(TEMPLATE_FORMAT, &mut hasher);
    let key = std::hash::Hasher::finish(&hasher);
    let root = std::env::temp_dir();
    let template = root.join(format!("wolfscale-mariadb-template-{key:016x}"));
    if template.join("data").join("mysql").exists() {
        return Ok(template.join("data"));
    }
    let staging = root.join(format!(
        "wolfscale-mariadb-template-{key:016x}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&staging)?;
    let installed = install(&staging, &staging.join("data"), &Options::default());
    if let Err(e) = installed {
        std::fs::remove_dir_all(&staging).ok();
        return Err(e);
    }
    if std::fs::rename(&staging, &template).is_err() {
        // Another process published one first.
        std::fs::remove_dir_all(&staging).ok();
    }
    if template.join("data").join("mysql").exists() {
        Ok(template.join("data"))
    } else {
        Err(LocalDbError::Install {
            dir: template,
            log: "the template directory vanished after it was installed".into(),
        })
    }
}

/// Changes to how the template is installed invalidate old templates.
const TEMPLATE_FORMAT: &str = "v1 log-file-size=16M";

/// Copy a data directory (regular files and directories only), skipping what belongs to
/// a running server.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let skip = name.to_string_lossy().ends_with(".pid") || name == "ibtmp1";
        if skip {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn install(dir: &Path, data: &Path, opts: &Options) -> Result<(), LocalDbError> {
    let out = Command::new("mariadb-install-db")
        .args(common_args(data, opts))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .current_dir(dir)
        .output()
        .map_err(|source| LocalDbError::Missing {
            program: "mariadb-install-db",
            source,
        })?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(LocalDbError::Install {
            dir: dir.to_path_buf(),
            log,
        });
    }
    Ok(())
}

fn spawn(dir: &Path, data: &Path, port: u16, opts: &Options) -> Result<LocalMariaDb, LocalDbError> {
    let log = dir.join("mariadbd.err");
    let mut cmd = Command::new(mariadbd_path());
    cmd.args(common_args(data, opts))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--log-error={}", log.display()))
        .args(["--skip-log-bin", "--max-connections=500"])
        .args((!opts.resolve_names).then_some("--skip-name-resolve"))
        .args(&opts.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = spawn_from_long_lived_thread(cmd).map_err(|source| LocalDbError::Missing {
        program: "mariadbd",
        source,
    })?;
    let mut db = LocalMariaDb {
        child: Some(child),
        dir: dir.to_path_buf(),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if greeting_ok(dir, port) {
            return Ok(db);
        }
        let exited = db
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .is_some();
        if exited {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    db.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    Err(LocalDbError::NotReady { port, log: tail })
}

/// Fork `cmd` from a thread that never exits, so `PR_SET_PDEATHSIG` fires only when
/// the whole process dies, not when the (possibly short-lived) calling thread does.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mariadbd-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    reply.send(cmd.spawn()).ok();
                }
            })
            .expect("spawn the mariadbd spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let sent = spawner
        .lock()
        .map(|s| s.send((cmd, tx)).is_ok())
        .unwrap_or(false);
    if !sent {
        return Err(std::io::Error::other("mariadbd spawner thread is gone"));
    }
    rx.recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("mariadbd spawner thread is gone")))
}

/// `mariadbd` from PATH, or from /usr/sbin where Debian puts it outside root's PATH.
fn mariadbd_path() -> PathBuf {
    let sbin = Path::new("/usr/sbin/mariadbd");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("mariadbd").exists()))
        .unwrap_or(false);
    if !on_path && sbin.exists() {
        sbin.to_path_buf()
    } else {
        PathBuf::from("mariadbd")
    }
}

/// Whether this instance serves: a greeting on its own Unix socket first. A greeting
/// on the TCP port alone could come from another process that took the port (another
/// test's proxy): mariadbd binds the port before it creates the socket, and exits when
/// it cannot, so a greeting on the socket means the port is this server's.
fn greeting_ok(dir: &Path, port: u16) -> bool {
    fn greets(mut s: impl Read) -> bool {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).is_ok() && head[4] == 10
    }
    let socket = std::os::unix::net::UnixStream::connect(dir.join("mariadbd.sock"));
    let Ok(socket) = socket else {
        return false;
    };
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if !greets(socket) {
        return false;
    }
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok();
    greets(tcp)
}

/// The first port of the kernel's ephemeral range, if it can be read.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    // The OS may hand the same port out again once it is released: never return one
    // this process got before (callers pick several ports before binding any).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    // Below the ephemeral range when there is room: a port the kernel hands out for
    // `bind(0)` may go to some outgoing connection before the caller binds it.
    let low = ephemeral_low().filter(|l| *l > 11_000);
    for _ in 0..64 {
        let port = match low {
            Some(low) => {
                let port = 10_000 + (rand::random::<u16>() % (low - 10_000));
                if TcpListener::bind(("127.0.0.1", port)).is_err() {
                    continue;
                }
                port
            }
            None => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no fresh loopback port after 64 tries",
    ))
}
