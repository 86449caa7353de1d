//! Named crash points for fault tests: `WOLFSCALE_FAILPOINTS=name[,name…]` makes the
//! process abort (as a SIGKILL would end it: no cleanup, no flush) when it reaches a
//! point of that name. Unset, a point costs one relaxed load.
//!
//! | point | where |
//! |---|---|
//! | `before-local-commit` | the leader's session got its turn from the applier, before `XA COMMIT` |
//! | `after-local-commit` | right after that `XA COMMIT`, before the marker moves |
//! | `after-prepare` | a transaction is PREPARED, before it is proposed to the log |

use std::collections::HashSet;
use std::sync::OnceLock;

fn armed() -> &'static HashSet<String> {
    static ARMED: OnceLock<HashSet<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("WOLFSCALE_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Abort the process here if `name` is armed.
pub fn hit(name: &str) {
    if armed().contains(name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
