//! Named crash points for fault tests. The process aborts (as a SIGKILL would end it:
//! no cleanup, no flush) when it reaches an armed point.
//!
//! Points are armed by `WOLFSCALE_FAILPOINTS=name[,name…]` at start, or at any time
//! through the file named by `WOLFSCALE_FAILPOINT_FILE` (one name per line, read at
//! each point while the variable is set), so that a test can let a node start and take
//! writes first. With neither set, a point costs one load of a static.
//!
//! | point | where |
//! |---|---|
//! | `before-local-commit` | the leader's session got its turn from the applier, before `XA COMMIT` |
//! | `after-local-commit` | right after that `XA COMMIT`, before the marker moves |
//! | `after-prepare` | a transaction is PREPARED, before it is proposed to the log |
//! | `after-ddl-before-log` | a DDL ran on the leader's MariaDB, before it is proposed to the log |
//!
//! In-process tests can also *hold* a point ([`hold`]): the first task that reaches it
//! waits there until the test releases it, so that a test can make another session
//! run in a window that is otherwise a few microseconds wide. Only points that call
//! [`held`] can be held: `after-prepare`.
//!
//! In-process tests can also slow one node's replay down ([`set_replay_delay`]): its
//! applier waits that long before each group of other nodes' entries, so that a test
//! sees a follower behind the leader for as long as it needs.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;

struct Armed {
    names: HashSet<String>,
    file: Option<PathBuf>,
}

fn armed() -> &'static Armed {
    static ARMED: OnceLock<Armed> = OnceLock::new();
    ARMED.get_or_init(|| Armed {
        names: std::env::var("WOLFSCALE_FAILPOINTS")
            .map(|v| names(&v))
            .unwrap_or_default(),
        file: std::env::var_os("WOLFSCALE_FAILPOINT_FILE").map(PathBuf::from),
    })
}

fn names(list: &str) -> HashSet<String> {
    list.split([',', '\n'])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Abort the process here if `name` is armed.
pub fn hit(name: &str) {
    let armed = armed();
    let from_file = || {
        armed
            .file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|text| names(&text).contains(name))
    };
    if armed.names.contains(name) || from_file() {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// A held point (see [`hold`]); released when dropped.
pub struct Hold {
    point: Arc<HeldPoint>,
}

struct HeldPoint {
    name: String,
    taken: AtomicBool,
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

static ANY_HELD: AtomicBool = AtomicBool::new(false);

fn holds() -> &'static Mutex<Vec<Arc<HeldPoint>>> {
    static HOLDS: OnceLock<Mutex<Vec<Arc<HeldPoint>>>> = OnceLock::new();
    HOLDS.get_or_init(Default::default)
}

/// Hold the next task that reaches point `name` (in this process) until the returned
/// [`Hold`] is released or dropped. Later tasks pass.
pub fn hold(name: &str) -> Hold {
    let point = Arc::new(HeldPoint {
        name: name.to_string(),
        taken: AtomicBool::new(false),
        reached: watch::Sender::new(false),
        released: watch::Sender::new(false),
    });
    holds()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(point.clone());
    ANY_HELD.store(true, Ordering::SeqCst);
    Hold { point }
}

impl Hold {
    /// Wait until a task is held at the point.
    pub async fn reached(&self) {
        self.point.reached.subscribe().wait_for(|r| *r).await.ok();
    }

    /// Let the held task (or the next one to arrive) go on.
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.point.released.send_replace(true);
        let mut all = holds().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|p| !Arc::ptr_eq(p, &self.point));
        if all.is_empty() {
            ANY_HELD.store(false, Ordering::SeqCst);
        }
    }
}

/// A point that a test may hold; with no hold in place it costs one atomic load.
pub async fn held(name: &str) {
    if !ANY_HELD.load(Ordering::SeqCst) {
        return;
    }
    let point = {
        let all = holds().lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .find(|p| p.name == name && !p.taken.swap(true, Ordering::SeqCst))
            .cloned()
    };
    if let Some(p) = point {
        let mut released = p.released.subscribe();
        p.reached.send_replace(true);
        released.wait_for(|r| *r).await.ok();
    }
}

static ANY_DELAY: AtomicBool = AtomicBool::new(false);

fn delays() -> &'static Mutex<std::collections::HashMap<u64, std::time::Duration>> {
    static DELAYS: OnceLock<Mutex<std::collections::HashMap<u64, std::time::Duration>>> =
        OnceLock::new();
    DELAYS.get_or_init(Default::default)
}

/// Make the applier of the node with `incarnation` wait `delay` before each group of
/// entries it replays (`None` removes the delay). Tests only.
pub fn set_replay_delay(incarnation: u64, delay: Option<std::time::Duration>) {
    let mut d = delays().lock().unwrap_or_else(|e| e.into_inner());
    match delay {
        Some(delay) => d.insert(incarnation, delay),
        None => d.remove(&incarnation),
    };
    ANY_DELAY.store(!d.is_empty(), Ordering::SeqCst);
}

/// The replay delay of the node with `incarnation`, if a test set one.
pub async fn replay_delay(incarnation: u64) {
    if !ANY_DELAY.load(Ordering::Relaxed) {
        return;
    }
    let delay = delays()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&incarnation)
        .copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}
