//! The write-ahead log against an in-memory model.
//!
//! Proptest generates sequences of appends (some split over several queued appenders so
//! the writer groups them), truncations, purges (inside the log and past its end, as a
//! snapshot install does), retention runs, reopens and reads. After every step the log's
//! `state()` must equal the model's, and every read must return exactly the model's
//! entries (or `Purged` when it starts at or below the purge marker). Invalid requests
//! (appends that do not continue the log, truncations below the purge marker) must be
//! refused with their typed error and change nothing.
//!
//! Operations carry raw random numbers and are interpreted against the model at the time
//! they run, so every generated sequence is valid and shrinks well.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use proptest::prelude::*;
use wolfscale::wal::{Entry, LogState, Wal, WalError, WalOptions};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
enum Op {
    /// `n` entries, submitted as `chunks` queued appends; the term goes up by `bump`.
    Append {
        n: u64,
        chunks: usize,
        bump: u64,
        seed: u64,
    },
    /// An append whose first index is off by `skew` (never 0): must be `OutOfOrder`.
    AppendOutOfOrder {
        skew: i64,
    },
    Truncate(u64),
    /// A truncation at or below the purge marker: must be `TruncateBelowPurge`.
    TruncateBelowPurge(u64),
    Purge(u64),
    /// Purge past the last entry by `gap` (a snapshot was installed).
    PurgePastEnd {
        gap: u64,
        bump: u64,
    },
    Retain,
    Reopen,
    Read {
        start: u64,
        len: u64,
    },
}

/// Which operations a test generates besides appends, truncations, purges inside the log,
/// retention runs and reads.
#[derive(Debug, Clone, Copy)]
struct Mix {
    /// Purges past the end of the log (snapshot installs).
    past_end_purges: bool,
    /// Reopening the log between operations (it is always reopened at the end).
    reopens: bool,
}

fn op(mix: Mix) -> impl Strategy<Value = Op> {
    let append = (
        prop_oneof![1u64..4, 1u64..50],
        1usize..4,
        prop_oneof![3 => Just(0u64), 1 => 1u64..3],
        any::<u64>(),
    )
        .prop_map(|(n, chunks, bump, seed)| Op::Append {
            n,
            chunks,
            bump,
            seed,
        });
    let past_end = u32::from(mix.past_end_purges);
    let reopen = 2 * u32::from(mix.reopens);
    prop_oneof![
        10 => append,
        1 => prop_oneof![-5i64..0, 1i64..5].prop_map(|skew| Op::AppendOutOfOrder { skew }),
        3 => any::<u64>().prop_map(Op::Truncate),
        1 => any::<u64>().prop_map(Op::TruncateBelowPurge),
        3 => any::<u64>().prop_map(Op::Purge),
        past_end => (0u64..100, 0u64..2).prop_map(|(gap, bump)| Op::PurgePastEnd { gap, bump }),
        1 => Just(Op::Retain),
        reopen => Just(Op::Reopen),
        5 => (any::<u64>(), 0u64..80).prop_map(|(start, len)| Op::Read { start, len }),
    ]
}

#[derive(Debug, Clone)]
struct Config {
    segment_size: u64,
    compression: bool,
    fsync: bool,
    retention: Duration,
    /// Index of the first entry appended to an empty log.
    start: u64,
}

fn config(retention: Duration) -> impl Strategy<Value = Config> {
    (
        512u64..4096,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop_oneof![Just(1u64), 1u64..1000],
    )
        .prop_map(move |(segment_size, compression, fsync, start)| Config {
            segment_size,
            compression,
            fsync,
            retention,
            start,
        })
}

/// Deterministic payload of `0..2000` bytes: half compressible text, half noise, so both
/// raw and LZ4 frames get written when compression is on.
fn payload(seed: u64, index: u64) -> Bytes {
    let mut x = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let len = (next() % 2000) as usize;
    let noisy = next() % 2 == 0;
    let text = format!("UPDATE t SET v = v + 1 WHERE id = {index}; ");
    (0..len)
        .map(|i| {
            if noisy && i % 3 == 0 {
                next() as u8
            } else {
                text.as_bytes()[i % text.len()]
            }
        })
        .collect::<Vec<u8>>()
        .into()
}

#[derive(Debug, Default)]
struct Model {
    /// Entries above the purge marker, by index (always consecutive).
    entries: BTreeMap<u64, (u64, Bytes)>,
    purged: Option<(u64, u64)>,
}

impl Model {
    fn last(&self) -> Option<(u64, u64)> {
        match self.entries.last_key_value() {
            Some((&i, (t, _))) => Some((i, *t)),
            None => self.purged,
        }
    }

    fn term(&self) -> u64 {
        self.last().map_or(1, |(_, t)| t)
    }

    /// Where the next append must start; `None` when any start is accepted.
    fn next(&self) -> Option<u64> {
        self.last().map(|(i, _)| i + 1)
    }

    fn state(&self) -> LogState {
        LogState {
            purged: self.purged,
            last: self.last(),
            first_index: self.entries.first_key_value().map(|(&i, _)| i),
        }
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<Entry>, (u64, u64)> {
        if let Some((p, _)) = self.purged {
            if range.start <= p && range.start < range.end {
                return Err((range.start, p));
            }
        }
        Ok(self
            .entries
            .range(range)
            .map(|(&index, (term, payload))| Entry {
                index,
                term: *term,
                payload: payload.clone(),
            })
            .collect())
    }
}

fn options(dir: &Path, c: &Config) -> WalOptions {
    WalOptions {
        segment_size: c.segment_size,
        flush_interval: Duration::ZERO,
        compression: c.compression,
        fsync: c.fsync,
        retention: c.retention,
        ..WalOptions::new(dir)
    }
}

fn check_read(wal: &Wal, model: &Model, range: Range<u64>) -> Result<(), TestCaseError> {
    let got = wal.read_blocking(range.clone());
    match (model.read(range.clone()), got) {
        (Ok(want), Ok(got)) => {
            prop_assert_eq!(got.len(), want.len(), "read {:?}: entry count", range);
            prop_assert!(got == want, "read {:?}: entries differ", range);
        }
        (
            Err((requested, purged)),
            Err(WalError::Purged {
                requested: r,
                purged: p,
            }),
        ) => {
            prop_assert_eq!((r, p), (requested, purged), "read {:?}", range);
        }
        (want, got) => {
            prop_assert!(
                false,
                "read {:?}: want {:?}, got {:?}",
                range,
                want.map(|v| v.len()),
                got.map(|v| v.len())
            );
        }
    }
    Ok(())
}

/// Pick a value in `lo..=hi` from raw randomness.
fn pick(raw: u64, lo: u64, hi: u64) -> u64 {
    lo + raw % (hi - lo + 1)
}

fn run(config: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), &config);
    let mut wal =
        Some(Wal::open_blocking(opts.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?);
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let w = wal.as_ref().unwrap();
        match op {
            Op::Append {
                n,
                chunks,
                bump,
                seed,
            } => {
                let first = model.next().unwrap_or(config.start);
                let term = model.term() + bump;
                let entries: Vec<Entry> = (first..first + n)
                    .map(|index| Entry {
                        index,
                        term,
                        payload: payload(seed, index),
                    })
                    .collect();
                // Queue every chunk before waiting, so the writer can group them.
                let size = entries.len().div_ceil(chunks);
                let notices: Vec<_> = entries
                    .chunks(size)
                    .map(|c| w.append_with_notice(c.to_vec()))
                    .collect();
                for rx in notices {
                    let r = rx.blocking_recv().expect("writer answered");
                    prop_assert!(r.is_ok(), "step {}: append failed: {:?}", step, r);
                }
                for e in entries {
                    model.entries.insert(e.index, (e.term, e.payload));
                }
            }
            Op::AppendOutOfOrder { skew } => {
                let Some(expected) = model.next() else {
                    continue; // an empty log takes any start
                };
                let got = expected.saturating_add_signed(skew);
                if got == expected {
                    continue;
                }
                let r = w.append_blocking(vec![Entry {
                    index: got,
                    term: model.term(),
                    payload: Bytes::from_static(b"stray"),
                }]);
                prop_assert!(
                    matches!(r, Err(WalError::OutOfOrder { expected: e, got: g }) if e == expected && g == got),
                    "step {}: out-of-order append of {} (expected {}): {:?}",
                    step,
                    got,
                    expected,
                    r
                );
            }
            Op::Truncate(raw) => {
                // Anywhere in (purged, last + 2]; past the end it changes nothing.
                let lo = model
                    .purged
                    .map(|(p, _)| p + 1)
                    .or_else(|| model.entries.first_key_value().map(|(&i, _)| i))
                    .unwrap_or(config.start);
                let hi = model.last().map_or(lo, |(l, _)| l + 2).max(lo);
                let at = pick(raw, lo, hi);
                let r = w.truncate_from_blocking(at);
                prop_assert!(r.is_ok(), "step {}: truncate_from({}): {:?}", step, at, r);
                model.entries.retain(|&i, _| i < at);
            }
            Op::TruncateBelowPurge(raw) => {
                let Some((p, _)) = model.purged else { continue };
                let at = pick(raw, 0, p);
                let r = w.truncate_from_blocking(at);
                prop_assert!(
                    matches!(r, Err(WalError::TruncateBelowPurge { index, purged }) if index == at && purged == p),
                    "step {}: truncate_from({}) with purge marker {}: {:?}",
                    step,
                    at,
                    p,
                    r
                );
            }
            Op::Purge(raw) => {
                let Some((last, _)) = model.last() else {
                    continue;
                };
                // Around the marker (at or below it is a no-op) or from the first entry.
                let lo = match (model.purged, model.entries.first_key_value()) {
                    (Some((p, _)), _) => p.saturating_sub(2),
                    (None, Some((&first, _))) => first,
                    (None, None) => continue,
                };
                let at = pick(raw, lo, last);
                match model.entries.get(&at) {
                    Some(&(term, _)) => {
                        let r = w.purge_blocking(at, term);
                        prop_assert!(r.is_ok(), "step {}: purge({}): {:?}", step, at, r);
                        model.purged = Some((at, term));
                        model.entries.retain(|&i, _| i > at);
                    }
                    None => {
                        // At or below the marker: a no-op whatever the term.
                        let r = w.purge_blocking(at, model.term());
                        prop_assert!(r.is_ok(), "step {}: stale purge({}): {:?}", step, at, r);
                    }
                }
            }
            Op::PurgePastEnd { gap, bump } => {
                let at = model.last().map_or(config.start, |(l, _)| l + 1) + gap;
                let term = model.term() + bump;
                let r = w.purge_blocking(at, term);
                prop_assert!(
                    r.is_ok(),
                    "step {}: purge({}) past the end: {:?}",
                    step,
                    at,
                    r
                );
                model.purged = Some((at, term));
                model.entries.clear();
            }
            Op::Retain => {
                let r = w.retain_blocking(SystemTime::now() + 4 * WEEK);
                prop_assert!(r.is_ok(), "step {}: retain: {:?}", step, r);
            }
            Op::Reopen => {
                drop(wal.take());
                let reopened = Wal::open_blocking(opts.clone());
                prop_assert!(
                    reopened.is_ok(),
                    "step {}: reopen: {:?}",
                    step,
                    reopened.err()
                );
                wal = reopened.ok();
                let w = wal.as_ref().unwrap();
                check_read(w, &model, 0..u64::MAX)?;
                if let Some((p, _)) = model.purged {
                    check_read(w, &model, p + 1..u64::MAX)?;
                }
            }
            Op::Read { start, len } => {
                let lo = model
                    .purged
                    .map_or(config.start, |(p, _)| p)
                    .saturating_sub(3);
                let hi = model.last().map_or(lo, |(l, _)| l + 3).max(lo);
                let start = pick(start, lo, hi);
                check_read(w, &model, start..start + len)?;
            }
        }
        let w = wal.as_ref().unwrap();
        prop_assert_eq!(w.state(), model.state(), "state after step {}", step);
    }
    // Everything readable matches, before and after a final reopen.
    let readable = model.state().first_index.unwrap_or(u64::MAX - 1)..u64::MAX;
    check_read(wal.as_ref().unwrap(), &model, readable.clone())?;
    drop(wal.take());
    let wal =
        Wal::open_blocking(opts).map_err(|e| TestCaseError::fail(format!("final reopen: {e}")))?;
    prop_assert_eq!(wal.state(), model.state(), "state after the final reopen");
    check_read(&wal, &model, readable)?;
    Ok(())
}

/// Cases per property; `PROPTEST_CASES` overrides it for a longer hunt.
const CASES: u32 = 128;

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        // Failures are reported with their minimal input; the only files this test may
        // write are its own.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// Retention either deletes fully purged segments at once or keeps them (a week);
    /// purges inside the log only.
    #[test]
    fn wal_matches_model(
        config in prop_oneof![config(Duration::ZERO), config(WEEK)],
        ops in prop::collection::vec(op(Mix { past_end_purges: false, reopens: false }), 1..40),
    ) {
        run(config, ops)?;
    }

    /// Snapshot installs (purges past the end), with retention deleting what they cover
    /// right away.
    #[test]
    fn wal_matches_model_with_snapshot_installs(
        config in config(Duration::ZERO),
        ops in prop::collection::vec(op(Mix { past_end_purges: true, reopens: false }), 1..40),
    ) {
        run(config, ops)?;
    }

    /// Everything, with reopens between operations.
    #[test]
    fn wal_matches_model_across_reopens(
        config in prop_oneof![config(Duration::ZERO), config(WEEK)],
        ops in prop::collection::vec(op(Mix { past_end_purges: false, reopens: true }), 1..40),
    ) {
        run(config, ops)?;
    }

    #[test]
    fn wal_matches_model_with_snapshot_installs_across_reopens(
        config in config(Duration::ZERO),
        ops in prop::collection::vec(op(Mix { past_end_purges: true, reopens: true }), 1..40),
    ) {
        run(config, ops)?;
    }

    /// Snapshot installs while retention keeps old segments: gaps between segments that
    /// the purge marker covers.
    #[test]
    fn wal_matches_model_with_snapshot_installs_and_retained_segments(
        config in config(WEEK),
        ops in prop::collection::vec(op(Mix { past_end_purges: true, reopens: true }), 1..40),
    ) {
        run(config, ops)?;
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| Entry {
            index,
            term,
            payload: payload(7, index),
        })
        .collect()
}

/// The first append to a reopened log, and a truncation into a recovered segment.
#[test]
fn append_and_truncate_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 1 << 20,
        flush_interval: Duration::ZERO,
        ..WalOptions::new(dir.path())
    };
    Wal::open_blocking(opts.clone())
        .unwrap()
        .append_blocking(entries(1..=5, 1))
        .unwrap();
    let wal = Wal::open_blocking(opts.clone()).unwrap();
    wal.append_blocking(entries(6..=6, 1))
        .expect("append after reopen");
    drop(wal);
    let wal = Wal::open_blocking(opts.clone()).unwrap();
    wal.truncate_from_blocking(3)
        .expect("truncate after reopen");
    wal.append_blocking(entries(3..=4, 2)).unwrap();
    drop(wal);
    let wal = Wal::open_blocking(opts).unwrap();
    let mut want = entries(1..=2, 1);
    want.extend(entries(3..=4, 2));
    assert_eq!(wal.read_blocking(1..100).unwrap(), want);
}

/// A follower installs a snapshot past its log (purge past the end), appends, and later
/// compacts (purges) inside the new entries; the old segments are still within the
/// retention period. The segments now skip from 200 to 501 while the marker is 550.
#[test]
fn reopen_after_purge_that_follows_a_snapshot_install() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 1024,
        flush_interval: Duration::ZERO,
        retention: WEEK,
        ..WalOptions::new(dir.path())
    };
    {
        let wal = Wal::open_blocking(opts.clone()).unwrap();
        for c in 0..20 {
            wal.append_blocking(entries(1 + c * 10..=10 + c * 10, 1))
                .unwrap();
        }
        wal.purge_blocking(500, 2).unwrap();
        wal.append_blocking(entries(501..=600, 2)).unwrap();
        wal.purge_blocking(550, 2).unwrap();
        assert_eq!(wal.read_blocking(551..1000).unwrap(), entries(551..=600, 2));
    }
    let wal = Wal::open_blocking(opts).expect("reopen");
    assert_eq!(
        wal.state(),
        LogState {
            purged: Some((550, 2)),
            last: Some((600, 2)),
            first_index: Some(551),
        }
    );
    assert_eq!(wal.read_blocking(551..1000).unwrap(), entries(551..=600, 2));
}
