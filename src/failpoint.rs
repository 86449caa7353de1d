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

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

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
