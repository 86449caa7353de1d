//! Snowflake ids: 64-bit, unique in the cluster, increasing per node.
//!
//! ```text
//!  0 | 41 bits: milliseconds since EPOCH | 10 bits: node number | 12 bits: sequence
//! ```
//!
//! The top bit stays 0, so an id is a positive `BIGINT`. Ids of one node are strictly
//! increasing: within a millisecond the sequence counts up; when it is spent the
//! generator waits for the next millisecond. An id is never given before its
//! millisecond: when the clock goes backwards (an NTP step) by up to [`MAX_DRIFT`], the
//! generator waits for it to catch up with the last id it gave; beyond that it refuses
//! with [`IdError::ClockBehind`] rather than wait unboundedly or repeat an id. Nodes differ in the node field, so ids of different
//! nodes never collide. Across a restart, uniqueness relies on the clock having moved
//! past the last id given (the restart itself takes longer than any sequence run).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ids' epoch: 2024-01-01T00:00:00Z, in Unix milliseconds. 41 bits of
/// milliseconds from it last until 2093.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
const SEQ_MAX: u64 = (1 << SEQ_BITS) - 1;
const MS_MAX: u64 = (1 << 41) - 1;
/// How far the last id given may run ahead of the clock (after the clock went back, or
/// while a burst uses sequence numbers of milliseconds still to come).
pub const MAX_DRIFT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("the clock is {behind_ms} ms behind the last id this node gave (limit {} ms): no id until it catches up", MAX_DRIFT.as_millis())]
    ClockBehind { behind_ms: u64 },
    #[error("the clock is before the id epoch (2024-01-01) or past its end (2093)")]
    OutOfRange,
}

/// The parts of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Unix milliseconds.
    pub unix_ms: u64,
    pub node: u16,
    pub seq: u16,
}

pub fn parts(id: u64) -> Parts {
    Parts {
        unix_ms: (id >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS,
        node: ((id >> SEQ_BITS) & ((1 << NODE_BITS) - 1)) as u16,
        seq: (id & SEQ_MAX) as u16,
    }
}

/// A node's id generator.
pub struct Generator {
    node: u64,
    /// `(ms since EPOCH, sequence)` of the last id given.
    last: Mutex<(u64, u64)>,
    clock: fn() -> u64,
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Generator {
    /// For node `number` (0..=1023; higher bits are dropped).
    pub fn new(number: u16) -> Generator {
        Generator::with_clock(number, system_ms)
    }

    /// With a clock giving Unix milliseconds (tests).
    pub fn with_clock(number: u16, clock: fn() -> u64) -> Generator {
        Generator {
            node: u64::from(number) & ((1 << NODE_BITS) - 1),
            last: Mutex::new((0, 0)),
            clock,
        }
    }

    /// The next id: waits at most [`MAX_DRIFT`] (a spent millisecond, a clock that
    /// stepped back a little).
    pub fn next(&self) -> Result<u64, IdError> {
        let now = self.now()?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (ms, seq) = if now > last.0 {
            (now, 0)
        } else if last.1 < SEQ_MAX {
            (last.0, last.1 + 1)
        } else {
            (last.0 + 1, 0)
        };
        let ahead = ms.saturating_sub(now);
        if ahead > MAX_DRIFT.as_millis() as u64 {
            return Err(IdError::ClockBehind { behind_ms: ahead });
        }
        if ms > MS_MAX {
            return Err(IdError::OutOfRange);
        }
        *last = (ms, seq);
        drop(last);
        // An id of a millisecond still to come is given only once it has come.
        if ahead > 0 {
            let deadline = std::time::Instant::now() + MAX_DRIFT * 2;
            loop {
                let now = self.now()?;
                if now >= ms {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(IdError::ClockBehind {
                        behind_ms: ms - now,
                    });
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok((ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | seq)
    }

    fn now(&self) -> Result<u64, IdError> {
        (self.clock)()
            .checked_sub(EPOCH_MS)
            .ok_or(IdError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn layout_round_trips() {
        let g = Generator::new(1023);
        let id = g.next().unwrap();
        let p = parts(id);
        assert_eq!(p.node, 1023);
        assert!(p.unix_ms.abs_diff(system_ms()) < 5_000);
        assert!(id < 1 << 63, "the top bit is 0");
    }

    #[test]
    fn a_spent_millisecond_moves_to_the_next() {
        static NOW: AtomicU64 = AtomicU64::new(EPOCH_MS + 10_000);
        let g = Generator::with_clock(5, || NOW.load(Ordering::SeqCst));
        let mut last = 0;
        for i in 0..=SEQ_MAX {
            let id = g.next().unwrap();
            assert!(id > last);
            assert_eq!(parts(id).seq as u64, i);
            last = id;
        }
        // The 4097th id of the millisecond belongs to the next one: it waits for it.
        let t = std::thread::spawn(move || g.next().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        NOW.fetch_add(1, Ordering::SeqCst);
        let id = t.join().unwrap();
        assert!(id > last);
        assert_eq!(parts(id).unix_ms, EPOCH_MS + 10_001);
        assert_eq!(parts(id).seq, 0);
    }

    #[test]
    fn a_clock_that_steps_back_never_repeats_an_id() {
        static NOW: AtomicU64 = AtomicU64::new(EPOCH_MS + 50_000);
        let g = Generator::with_clock(7, || NOW.load(Ordering::SeqCst));
        let a = g.next().unwrap();
        // A small step back: the next id waits for the clock to catch up.
        NOW.fetch_sub(300, Ordering::SeqCst);
        let advance = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            NOW.fetch_add(300, Ordering::SeqCst);
        });
        let b = g.next().unwrap();
        advance.join().unwrap();
        assert!(b > a);
        assert_eq!(parts(b).unix_ms, parts(a).unix_ms);
        // Beyond the bound: refused, not repeated.
        NOW.fetch_sub(5_000, Ordering::SeqCst);
        assert!(matches!(g.next(), Err(IdError::ClockBehind { .. })));
        // Once the clock has caught up, ids go on above the last.
        NOW.fetch_add(5_001, Ordering::SeqCst);
        let c = g.next().unwrap();
        assert!(c > b);
    }

    #[test]
    fn a_clock_before_the_epoch_is_refused() {
        let g = Generator::with_clock(1, || EPOCH_MS - 1);
        assert_eq!(g.next(), Err(IdError::OutOfRange));
    }

    /// Millions of ids from several threads on each of three nodes: no duplicate, and
    /// each thread's ids strictly increase.
    #[test]
    fn millions_of_ids_across_threads_and_nodes_are_unique() {
        let nodes: Vec<std::sync::Arc<Generator>> = (1..=3)
            .map(|n| std::sync::Arc::new(Generator::new(n)))
            .collect();
        let mut handles = Vec::new();
        for g in &nodes {
            for _ in 0..2 {
                let g = g.clone();
                handles.push(std::thread::spawn(move || {
                    let mut ids = Vec::with_capacity(500_000);
                    for _ in 0..500_000 {
                        ids.push(g.next().unwrap());
                    }
                    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not increasing");
                    ids
                }));
            }
        }
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "duplicate ids");
        assert_eq!(n, 3_000_000);
    }
}
