//! The write-ahead log measured against the filesystem it sits on: fsync'd append
//! throughput for many concurrent appenders, large-entry bandwidth, read-back, open
//! time, and LZ4's ratio on SQL text. Each WAL number is printed beside the raw number
//! that bounds it, taken in the same directory in the same run.
//!
//! `bench/wal.sh` runs it (`cargo bench --bench wal`; harness = false, so this is a
//! plain `main` that prints a table and ends with one `RESULT ...` line).
//!
//! # Phases
//! 1. Raw: 4 KiB `pwrite` + `fdatasync` in a loop, once through a preallocated file
//!    (what fio measures: the device's flush rate, and what the WAL's preallocated
//!    segments should get) and once appending to a growing file (every sync also
//!    commits the new file size: what appending to an unpreallocated segment costs). Then 1 MiB
//!    sequential writes and one `fdatasync` at the end: the bandwidth ceiling. Then
//!    4 MiB writes each followed by `fdatasync`: the best a writer that syncs every
//!    4 MiB group (what phase 4 produces) could do.
//! 2. Small appends: ~180-byte SQL `INSERT`s, fsync on, the `[wal]` defaults otherwise
//!    (see the overrides below), 1/8/64 appenders × 1/64/1024 entries per append, each
//!    for a fixed time. The run of one appender with one entry per append is one
//!    `fdatasync` per append, so it is set against the raw preallocated 4 KiB
//!    write + `fdatasync` rate of phase 1 (`single_vs_raw` in the `RESULT` line): the
//!    WAL writes into zero-filled, preallocated segments, so each of its syncs should
//!    cost what a raw sync of a preallocated file does.
//! 3. Read-back of the biggest small-entry log, in ranges.
//! 4. Large appends: 64 KiB incompressible entries from a few appenders; one run of
//!    one entry per append for a fixed time, one of 16 entries (1 MiB) per append
//!    writing a fixed `LARGE_MB` total, which is kept for phase 5.
//! 5. `Wal::open_blocking` of that log, warm and (if the page cache can be dropped) cold, and
//!    read-back of it, warm and cold.
//! 6. Compression: a mix of INSERT/UPDATE statements encoded with
//!    [`wolfscale::wal::format::encode_frame`], by entries per frame; and how fast
//!    `encode_frame` runs, LZ4 on and off.
//!
//! Each run opens a fresh log and appends its first entry before the clock starts:
//! that append creates the log's first segment (zero-filling `segment_size` bytes),
//! a once-per-log cost. Segments created during a run (zero-filled ahead of need on
//! a helper thread) are part of the measurement.
//!
//! # Concurrency
//! Appends must continue the log, so appenders take an index range under one mutex and
//! submit it with [`Wal::append_with_notice`] before letting go (submission order is
//! index order); they wait for durability outside the lock, which is what lets the
//! writer put many appenders under one sync. Syncs are counted by wrapping the
//! [`Syncer`]; each sync is one frame.
//!
//! # Environment
//! - `WAL_BENCH_DIR`: directory for every file written (required; `bench/wal.sh` makes
//!   and removes it). Emptied as the run goes.
//! - `DURATION_MS`: length of each fixed-time run (default 2000).
//! - `SEQ_MB`: raw sequential write size (default 1024).
//! - `LARGE_MB`: size of the large-entry log (default 1024).
//! - `DROP_CACHES`: `0` skips the cold runs (default: try, as root).
//! - `WAL_BATCH_SIZE`, `WAL_FLUSH_INTERVAL_US`, `WAL_COMPRESSION` (0/1): override
//!   those [`WalOptions`] (default: `WalOptions::new`'s, the `[wal]` defaults).
//! - `PHASES`: comma-separated subset of `raw,small,large,compression` (default all;
//!   the summary and `RESULT` line need all), e.g. `large` to profile one phase.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use tokio::sync::Mutex;
use wolfscale::wal::format::{encode_frame, Entry};
use wolfscale::wal::{Syncer, Wal, WalOptions};

const MIB: f64 = (1 << 20) as f64;
/// Entries per `Wal::read_blocking` when reading a log back.
const SMALL_READ_CHUNK: u64 = 1000;
const LARGE_ENTRY: usize = 64 << 10;
const LARGE_APPENDERS: usize = 4;
/// Entries per append in the bandwidth run: 1 MiB, the raw test's write size.
const LARGE_PER_APPEND: usize = 16;
const LARGE_READ_CHUNK: u64 = 64;

struct Settings {
    dir: PathBuf,
    duration: Duration,
    seq_mb: u64,
    large_mb: u64,
    drop_caches: bool,
    phases: Vec<String>,
    /// `WalOptions` overrides, for trying other settings without editing code.
    batch_size: Option<usize>,
    flush_interval: Option<Duration>,
    compression: Option<bool>,
}

const PHASES: [&str; 4] = ["raw", "small", "large", "compression"];

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let num = |key: &str, default: u64| -> anyhow::Result<u64> {
            match std::env::var(key) {
                Ok(v) => v
                    .parse()
                    .with_context(|| format!("{key}={v:?} is not a number")),
                Err(_) => Ok(default),
            }
        };
        let Some(dir) = std::env::var_os("WAL_BENCH_DIR") else {
            bail!("WAL_BENCH_DIR is not set (run bench/wal.sh, or point it at a scratch dir)");
        };
        let phases: Vec<String> = match std::env::var("PHASES") {
            Ok(v) => v.split(',').map(|p| p.trim().to_string()).collect(),
            Err(_) => PHASES.iter().map(|p| p.to_string()).collect(),
        };
        if let Some(bad) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
            bail!("PHASES: unknown phase {bad:?}; known: {}", PHASES.join(","));
        }
        let opt = |key: &str| -> anyhow::Result<Option<u64>> {
            std::env::var(key).ok().map(|_| num(key, 0)).transpose()
        };
        Ok(Settings {
            batch_size: opt("WAL_BATCH_SIZE")?.map(|n| n as usize),
            flush_interval: opt("WAL_FLUSH_INTERVAL_US")?.map(Duration::from_micros),
            compression: opt("WAL_COMPRESSION")?.map(|n| n != 0),
            phases,
            dir: PathBuf::from(dir),
            duration: Duration::from_millis(num("DURATION_MS", 2000)?),
            seq_mb: num("SEQ_MB", 1024)?,
            large_mb: num("LARGE_MB", 1024)?,
            drop_caches: num("DROP_CACHES", 1)? != 0,
        })
    }
}

impl Settings {
    /// `WalOptions::new` (the `[wal]` defaults) with the overrides applied.
    fn wal_options(&self, data_dir: &Path) -> WalOptions {
        let d = WalOptions::new(data_dir);
        WalOptions {
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            flush_interval: self.flush_interval.unwrap_or(d.flush_interval),
            compression: self.compression.unwrap_or(d.compression),
            ..d
        }
    }
}

/// `fdatasync`, counted.
#[derive(Default)]
struct CountingSync(AtomicU64);

impl Syncer for CountingSync {
    fn sync(&self, file: &File) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        file.sync_data()
    }
}

fn open_wal(opts: WalOptions) -> anyhow::Result<(Arc<Wal>, Arc<CountingSync>)> {
    let syncs = Arc::new(CountingSync::default());
    let dir = opts.dir.clone();
    let wal = Wal::open_blocking(WalOptions {
        syncer: syncs.clone(),
        ..opts
    })
    .with_context(|| format!("open WAL in {}", dir.display()))?;
    Ok((Arc::new(wal), syncs))
}

// ---------------------------------------------------------------- payloads

/// xorshift64*: reproducible payloads without depending on `rand`'s API.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn timestamp(rng: &mut Rng) -> String {
    format!(
        "2026-{:02}-{:02} {:02}:{:02}:{:02}",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

/// About 200 bytes: the order row an application writes most.
fn order_insert(rng: &mut Rng) -> String {
    let statuses = ["new", "paid", "shipped", "cancelled"];
    format!(
        "INSERT INTO orders (id, customer, amount, currency, status, created, updated) \
         VALUES ({}, 'cust-{}', {}.{:02}, 'EUR', '{}', '{}', '{}')",
        1_000_000 + rng.below(9_000_000),
        rng.below(100_000),
        rng.below(5_000),
        rng.below(100),
        statuses[rng.below(4) as usize],
        timestamp(rng),
        timestamp(rng)
    )
}

/// A write-heavy application's statement mix: inserts and updates over a few tables.
fn sql_mix(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => order_insert(rng),
        4 => format!(
            "INSERT INTO customers (id, name, email, country, created) VALUES ({}, \
             'Customer {}', 'user{}@example.com', '{}', '{}')",
            rng.below(1_000_000),
            rng.below(1_000_000),
            rng.below(1_000_000),
            ["DE", "FR", "NL", "US", "GB"][rng.below(5) as usize],
            timestamp(rng)
        ),
        5..=6 => format!(
            "UPDATE orders SET status = 'shipped', updated = '{}' WHERE id = {}",
            timestamp(rng),
            1_000_000 + rng.below(9_000_000)
        ),
        7..=8 => format!(
            "UPDATE stock SET qty = qty - {} WHERE sku = 'SKU-{:06}' AND warehouse = {}",
            1 + rng.below(5),
            rng.below(200_000),
            rng.below(12)
        ),
        _ => format!(
            "INSERT INTO order_lines (order_id, line, sku, qty, price) VALUES \
             ({id}, 1, 'SKU-{:06}', {}, {}.99), ({id}, 2, 'SKU-{:06}', {}, {}.49)",
            rng.below(200_000),
            1 + rng.below(9),
            rng.below(300),
            rng.below(200_000),
            1 + rng.below(9),
            rng.below(300),
            id = 1_000_000 + rng.below(9_000_000),
        ),
    }
}

fn sql_payloads(n: usize) -> Arc<[Bytes]> {
    let mut rng = Rng(0x5eed_0001);
    (0..n)
        .map(|_| Bytes::from(order_insert(&mut rng)))
        .collect()
}

fn random_payloads(n: usize, len: usize) -> Arc<[Bytes]> {
    let mut rng = Rng(0x5eed_0002);
    (0..n)
        .map(|_| {
            let mut b = vec![0u8; len];
            rng.fill(&mut b);
            Bytes::from(b)
        })
        .collect()
}

// ---------------------------------------------------------------- raw device

/// `sync(2)` so one phase's dirty pages are not written back during the next.
fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Drop the page cache (root only). `false` when the kernel refused.
fn drop_caches() -> bool {
    sync_all();
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// 4 KiB writes each followed by `fdatasync`, for `secs`. `grow`: append to a new
/// file (each sync also journals the size); otherwise cycle through a preallocated one.
fn raw_fsync_rate(path: &Path, secs: Duration, grow: bool) -> io::Result<f64> {
    const BLOCK: u64 = 4096;
    const PREALLOC: u64 = 64 << 20;
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    let block = [0xA5u8; BLOCK as usize];
    if !grow {
        f.write_all_at(&vec![0x5A; PREALLOC as usize], 0)?;
        f.sync_all()?;
    }
    sync_all();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        let off = if grow {
            n * BLOCK
        } else {
            n * BLOCK % PREALLOC
        };
        f.write_all_at(&block, off)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(path)?;
    Ok(rate)
}

/// 1 MiB writes, `mb` of them, one `fdatasync` at the end: MB/s.
fn raw_seq_mb_s(path: &Path, mb: u64) -> io::Result<f64> {
    let mut buf = vec![0u8; 1 << 20];
    Rng(0x5eed_0003).fill(&mut buf);
    let mut f = File::create(path)?;
    sync_all();
    let start = Instant::now();
    for _ in 0..mb {
        f.write_all(&buf)?;
    }
    f.sync_data()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(path)?;
    Ok(mb as f64 / secs)
}

/// `chunk`-byte appends each followed by `fdatasync`, for `secs`: MB/s. What a
/// single writer that syncs every group of `chunk` bytes could reach at best.
fn raw_synced_chunks_mb_s(path: &Path, secs: Duration, chunk: usize) -> io::Result<f64> {
    let mut buf = vec![0u8; chunk];
    Rng(0x5eed_0005).fill(&mut buf);
    let mut f = File::create(path)?;
    sync_all();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < secs {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let mb_s = (n * chunk as u64) as f64 / MIB / start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(path)?;
    Ok(mb_s)
}

// ---------------------------------------------------------------- appends

#[derive(Clone, Copy)]
enum Stop {
    At(Instant),
    /// Stop once the next append would go past this index.
    AfterIndex(u64),
}

impl Stop {
    fn reached(self, next: u64, per_append: usize) -> bool {
        match self {
            Stop::At(t) => Instant::now() >= t,
            Stop::AfterIndex(last) => next + per_append as u64 - 1 > last,
        }
    }
}

struct AppendRun {
    appenders: usize,
    per_append: usize,
    entries: u64,
    appends: u64,
    syncs: u64,
    payload_bytes: u64,
    disk_bytes: u64,
    secs: f64,
    /// CPU time of the writer thread over the run.
    writer_cpu: f64,
    /// Submit-to-durable latencies, sorted, in microseconds.
    latencies: Vec<u32>,
}

impl AppendRun {
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }

    fn mb_s(&self) -> f64 {
        self.payload_bytes as f64 / MIB / self.secs
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return 0.0;
        };
        self.latencies[(last as f64 * p).round() as usize] as f64 / 1000.0
    }
}

/// One appender: reserve, submit under the lock, wait for durability outside it.
async fn appender(
    wal: Arc<Wal>,
    next: Arc<Mutex<u64>>,
    per_append: usize,
    stop: Stop,
    payloads: Arc<[Bytes]>,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let mut latencies = Vec::new();
    let mut bytes = 0u64;
    loop {
        // Built outside the lock; only the indexes are filled in under it.
        let mut entries: Vec<Entry> = (0..per_append)
            .map(|_| Entry {
                index: 0,
                term: 1,
                payload: Bytes::new(),
            })
            .collect();
        let (rx, sent) = {
            let mut n = next.lock().await;
            if stop.reached(*n, per_append) {
                break;
            }
            for (i, e) in entries.iter_mut().enumerate() {
                e.index = *n + i as u64;
                e.payload = payloads[(e.index % payloads.len() as u64) as usize].clone();
                bytes += e.payload.len() as u64;
            }
            *n += per_append as u64;
            let sent = Instant::now();
            (wal.append_with_notice(entries), sent)
        };
        rx.await.context("WAL writer dropped an append")??;
        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok((latencies, bytes))
}

/// Run `appenders` concurrent appenders on a fresh log at `opts.dir`, which is left in
/// place (the caller reads it back or removes it).
async fn run_appends(
    opts: WalOptions,
    appenders: usize,
    per_append: usize,
    stop: Stop,
    payloads: Arc<[Bytes]>,
) -> anyhow::Result<(AppendRun, Arc<Wal>)> {
    let (wal, syncs) = open_wal(opts)?;
    // The first append creates the first segment; it is not part of the run.
    wal.append(vec![Entry {
        index: 1,
        term: 1,
        payload: payloads[0].clone(),
    }])
    .await?;
    let syncs_before = syncs.0.load(Ordering::Relaxed);
    let next = Arc::new(Mutex::new(2u64));
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (wal, next, payloads) = (wal.clone(), next.clone(), payloads.clone());
            tokio::spawn(appender(wal, next, per_append, stop, payloads))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut payload_bytes = 0;
    for t in tasks {
        let (l, b) = t.await??;
        latencies.extend(l);
        payload_bytes += b;
    }
    let secs = start.elapsed().as_secs_f64();
    // The writer is fresh: all its CPU time is this run's.
    let writer_cpu = writer_cpu_secs()?;
    latencies.sort_unstable();
    let entries = *next.lock().await - 2;
    let run = AppendRun {
        appenders,
        per_append,
        entries,
        appends: latencies.len() as u64,
        syncs: syncs.0.load(Ordering::Relaxed) - syncs_before,
        payload_bytes,
        // Headers and frames, not the zero tail of the active segment or the spare.
        disk_bytes: wal.log_bytes(),
        secs,
        writer_cpu,
        latencies,
    };
    Ok((run, wal))
}

/// User + system CPU time of the (one live) `wal-writer` thread: whether the writer is
/// busy or waiting, independent of what else the machine is doing. (Not read right
/// after `Wal::open_blocking`: the thread names itself once it runs.)
fn writer_cpu_secs() -> anyhow::Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for task in fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        if fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "wal-writer") {
            let stat = fs::read_to_string(dir.join("stat"))?;
            // Fields after the ")" closing the name; utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let ticks: Vec<f64> = rest.split(' ').filter_map(|f| f.parse().ok()).collect();
            let (Some(u), Some(s)) = (ticks.get(11), ticks.get(12)) else {
                bail!("cannot parse {}/stat: {stat:?}", dir.display());
            };
            return Ok((u + s) / hz);
        }
    }
    bail!("no wal-writer thread found")
}

/// CPU time of the calling thread.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

fn print_append_header() {
    println!(
        "{:>9} | {:>10} | {:>10} | {:>9} | {:>8} | {:>12} | {:>8} | {:>12} | {:>6} | {:>6} | {:>10}",
        "appenders",
        "entries/ap",
        "entries/s",
        "appends/s",
        "syncs/s",
        "entries/sync",
        "MB/s",
        "payload/disk",
        "p50 ms",
        "p99 ms",
        "writer CPU"
    );
    println!("{}", "-".repeat(131));
}

fn print_append_row(r: &AppendRun) {
    println!(
        "{:>9} | {:>10} | {:>10.0} | {:>9.0} | {:>8.0} | {:>12.1} | {:>8.1} | {:>12.2} | {:>6.2} | {:>6.2} | {:>9.0}%",
        r.appenders,
        r.per_append,
        r.per_s(r.entries),
        r.per_s(r.appends),
        r.per_s(r.syncs),
        r.entries as f64 / r.syncs.max(1) as f64,
        r.mb_s(),
        r.payload_bytes as f64 / r.disk_bytes.max(1) as f64,
        r.percentile_ms(0.5),
        r.percentile_ms(0.99),
        r.writer_cpu / r.secs * 100.0,
    );
}

// ---------------------------------------------------------------- read and open

/// Read every entry in ranges of `chunk`: (payload bytes, entries, seconds).
fn read_back(wal: &Wal, chunk: u64) -> anyhow::Result<(u64, u64, f64)> {
    let state = wal.state();
    let (Some(first), Some((last, _))) = (state.first_index, state.last) else {
        bail!("nothing to read back");
    };
    let start = Instant::now();
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut at = first;
    while at <= last {
        let got = wal.read_blocking(at..(at + chunk).min(last + 1))?;
        entries += got.len() as u64;
        bytes += got.iter().map(|e| e.payload.len() as u64).sum::<u64>();
        at += chunk;
    }
    if entries != last - first + 1 {
        bail!("read back {entries} entries, expected {}", last - first + 1);
    }
    Ok((bytes, entries, start.elapsed().as_secs_f64()))
}

#[derive(Clone, Copy)]
struct OpenTime {
    wall: f64,
    /// CPU time of the opening thread (`Wal::open_blocking` recovers on the caller's thread).
    cpu: f64,
}

fn timed_open(opts: WalOptions) -> anyhow::Result<(Wal, OpenTime)> {
    let (start, cpu0) = (Instant::now(), thread_cpu_secs());
    let wal = Wal::open_blocking(opts)?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - cpu0;
    Ok((wal, OpenTime { wall, cpu }))
}

// ---------------------------------------------------------------- phases

/// The numbers the RESULT line and the summary are made of.
#[derive(Default)]
struct Summary {
    fsyncs_raw_prealloc: f64,
    fsyncs_raw_grow: f64,
    seq_mb_s: f64,
    best_small: f64,
    /// Best with more than one appender.
    best_concurrent: f64,
    best_config: (usize, usize),
    /// Appends/s of one appender with one entry per append (one fdatasync each).
    single_appends_per_s: f64,
    large_mb_s: f64,
    read_mb_s: f64,
}

fn raw_phase(s: &Settings, sum: &mut Summary) -> anyhow::Result<()> {
    let path = s.dir.join("raw.dat");
    sum.fsyncs_raw_prealloc = raw_fsync_rate(&path, s.duration, false)?;
    sum.fsyncs_raw_grow = raw_fsync_rate(&path, s.duration, true)?;
    sum.seq_mb_s = raw_seq_mb_s(&path, s.seq_mb)?;
    let group = LARGE_APPENDERS * LARGE_PER_APPEND * LARGE_ENTRY;
    let synced_mb_s = raw_synced_chunks_mb_s(&path, s.duration, group)?;
    println!("raw device ({}):", s.dir.display());
    let rows = [
        (
            "4 KiB write + fdatasync, preallocated file".to_string(),
            sum.fsyncs_raw_prealloc,
            "fsyncs/s",
        ),
        (
            "4 KiB write + fdatasync, growing file".to_string(),
            sum.fsyncs_raw_grow,
            "fsyncs/s",
        ),
        (
            format!("1 MiB writes x {} + one fdatasync", s.seq_mb),
            sum.seq_mb_s,
            "MB/s",
        ),
        (
            format!("{} MiB writes, fdatasync after each", group >> 20),
            synced_mb_s,
            "MB/s",
        ),
    ];
    for (what, value, unit) in rows {
        println!("  {what:<43}: {value:>10.1} {unit}");
    }
    println!();
    Ok(())
}

async fn small_phase(s: &Settings, sum: &mut Summary) -> anyhow::Result<()> {
    let payloads = sql_payloads(4096);
    let avg = payloads.iter().map(|p| p.len()).sum::<usize>() / payloads.len();
    println!(
        "appends, fsync on, {avg}-byte SQL entries, {:?} per run:",
        s.duration
    );
    print_append_header();
    let mut biggest: Option<(u64, PathBuf)> = None;
    for appenders in [1, 8, 64] {
        for per_append in [1, 64, 1024] {
            let dir = s.dir.join(format!("small-{appenders}-{per_append}"));
            let stop = Stop::At(Instant::now() + s.duration);
            let (run, wal) = run_appends(
                s.wal_options(&dir),
                appenders,
                per_append,
                stop,
                payloads.clone(),
            )
            .await?;
            drop(wal);
            print_append_row(&run);
            if (appenders, per_append) == (1, 1) {
                sum.single_appends_per_s = run.per_s(run.appends);
            }
            let rate = run.per_s(run.entries);
            if rate > sum.best_small {
                sum.best_small = rate;
                sum.best_config = (appenders, per_append);
            }
            if appenders > 1 {
                sum.best_concurrent = sum.best_concurrent.max(rate);
            }
            // Keep only the biggest log, for the read-back.
            let keep = biggest.as_ref().is_none_or(|(n, _)| run.entries > *n);
            let doomed = if keep {
                biggest.replace((run.entries, dir)).map(|(_, d)| d)
            } else {
                Some(dir)
            };
            if let Some(d) = doomed {
                fs::remove_dir_all(&d)?;
            }
        }
    }
    if let Some((_, dir)) = biggest {
        let (wal, _) = timed_open(s.wal_options(&dir))?;
        let (bytes, entries, secs) = read_back(&wal, SMALL_READ_CHUNK)?;
        println!(
            "read-back of the biggest log ({entries} entries, {SMALL_READ_CHUNK} per read): \
             {:.0} entries/s, {:.1} MB/s of payload",
            entries as f64 / secs,
            bytes as f64 / MIB / secs
        );
        drop(wal);
        fs::remove_dir_all(&dir)?;
    }
    println!();
    Ok(())
}

async fn large_phase(s: &Settings, sum: &mut Summary) -> anyhow::Result<()> {
    let payloads = random_payloads(16, LARGE_ENTRY);
    println!(
        "appends, fsync on, {} KiB incompressible entries, {LARGE_APPENDERS} appenders:",
        LARGE_ENTRY >> 10
    );
    print_append_header();
    let dir = s.dir.join("large-1");
    let stop = Stop::At(Instant::now() + s.duration);
    let (run, wal) = run_appends(
        s.wal_options(&dir),
        LARGE_APPENDERS,
        1,
        stop,
        payloads.clone(),
    )
    .await?;
    drop(wal);
    print_append_row(&run);
    fs::remove_dir_all(&dir)?;

    sync_all();
    let dir = s.dir.join("large");
    let last = (s.large_mb << 20) / LARGE_ENTRY as u64;
    let stop = Stop::AfterIndex(last);
    let (run, wal) = run_appends(
        s.wal_options(&dir),
        LARGE_APPENDERS,
        LARGE_PER_APPEND,
        stop,
        payloads,
    )
    .await?;
    drop(wal);
    print_append_row(&run);
    sum.large_mb_s = run.mb_s();
    println!(
        "  large_write_vs_raw = {:.1} / {:.1} MB/s = {:.2}",
        sum.large_mb_s,
        sum.seq_mb_s,
        sum.large_mb_s / sum.seq_mb_s
    );
    println!();
    open_and_read(s, &dir, sum)?;
    fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Open and read back the large log, warm, then cold if the page cache can be dropped.
fn open_and_read(s: &Settings, dir: &Path, sum: &mut Summary) -> anyhow::Result<()> {
    let gib = dir_bytes(&dir.join("wal"))? as f64 / (1u64 << 30) as f64;
    println!(
        "open and read-back of the {gib:.2} GiB large-entry log \
         ({LARGE_READ_CHUNK} entries per read):"
    );
    let (read_mb_s, open) = open_and_read_once(s, dir, false)?;
    sum.read_mb_s = read_mb_s;
    print_open_read("warm", gib, open, read_mb_s);
    if !s.drop_caches {
        println!("  cold: skipped (DROP_CACHES=0)");
        return Ok(());
    }
    if !drop_caches() {
        println!("  cold: skipped (cannot write /proc/sys/vm/drop_caches; needs root)");
        return Ok(());
    }
    let (read_mb_s, open) = open_and_read_once(s, dir, true)?;
    print_open_read("cold", gib, open, read_mb_s);
    Ok(())
}

/// (read MB/s, open timing). For a cold run the cache is dropped again between the
/// open and the read, since the open itself reads every byte.
fn open_and_read_once(s: &Settings, dir: &Path, cold: bool) -> anyhow::Result<(f64, OpenTime)> {
    let (wal, open) = timed_open(s.wal_options(dir))?;
    if cold {
        drop_caches();
    }
    let (bytes, _, secs) = read_back(&wal, LARGE_READ_CHUNK)?;
    Ok((bytes as f64 / MIB / secs, open))
}

fn print_open_read(label: &str, gib: f64, open: OpenTime, read_mb_s: f64) {
    println!(
        "  {label}: open {:.3} s = {:.3} s/GiB (CPU {:.3} s), read {:.1} MB/s",
        open.wall,
        open.wall / gib,
        open.cpu,
        read_mb_s
    );
}

/// Payload bytes over frame bytes for the SQL mix, by entries per frame.
fn compression_phase() {
    let mut rng = Rng(0x5eed_0004);
    let n = 64 * 1000;
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry {
            index: 1 + i as u64,
            term: 1,
            payload: Bytes::from(sql_mix(&mut rng)),
        })
        .collect();
    let raw: usize = entries.iter().map(|e| e.payload.len()).sum();
    println!(
        "compression of an INSERT/UPDATE mix ({n} statements, {} bytes average), payload bytes / frame bytes:",
        raw / n
    );
    for per_frame in [1, 8, 64, 1000] {
        let (mut plain, mut packed) = (Vec::new(), Vec::new());
        for group in entries.chunks(per_frame) {
            encode_frame(group, false, &mut plain);
            encode_frame(group, true, &mut packed);
        }
        println!(
            "  {per_frame:>4} entries/frame: uncompressed {:.2}, LZ4 {:.2}",
            raw as f64 / plain.len() as f64,
            raw as f64 / packed.len() as f64
        );
    }
    println!();
    let large: Vec<Entry> = random_payloads(16, LARGE_ENTRY)
        .iter()
        .cycle()
        .take(LARGE_APPENDERS * LARGE_PER_APPEND)
        .enumerate()
        .map(|(i, p)| Entry {
            index: 1 + i as u64,
            term: 1,
            payload: p.clone(),
        })
        .collect();
    println!("encode_frame on one CPU, MB/s of payload (a fresh output Vec per frame, as the writer does):");
    let cases: [(&str, &[Entry]); 2] = [
        ("1000 SQL statements", &entries[..1000]),
        ("64 x 64 KiB random", &large),
    ];
    for (what, group) in cases {
        println!(
            "  {what:<20}: LZ4 on {:>8.0}, off {:>8.0}",
            encode_mb_s(group, true),
            encode_mb_s(group, false)
        );
    }
    println!();
}

/// How fast `encode_frame` turns `group` into a frame.
fn encode_mb_s(group: &[Entry], compress: bool) -> f64 {
    let bytes: usize = group.iter().map(|e| e.payload.len()).sum();
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        let mut out = Vec::with_capacity(bytes + 64 + 12 * group.len());
        encode_frame(group, compress, &mut out);
        std::hint::black_box(&out);
        frames += 1;
    }
    (frames * bytes as u64) as f64 / MIB / start.elapsed().as_secs_f64()
}

fn print_targets(sum: &Summary) {
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("against the targets:");
    println!(
        "  fsync'd entries/s, best run ({} appenders x {}): {:.0} (>= 100000: {}); \
         best with > 1 appender: {:.0}",
        sum.best_config.0,
        sum.best_config.1,
        sum.best_small,
        mark(sum.best_small >= 100_000.0),
        sum.best_concurrent
    );
    let single = sum.single_appends_per_s / sum.fsyncs_raw_prealloc;
    println!(
        "  one appender, one entry per append: {:.0} appends/s = {single:.2} x the raw \
         preallocated 4 KiB write + fdatasync rate ({:.0}/s; growing file: {:.0}/s)",
        sum.single_appends_per_s, sum.fsyncs_raw_prealloc, sum.fsyncs_raw_grow
    );
    let ratio = sum.large_mb_s / sum.seq_mb_s;
    println!(
        "  large_write_vs_raw: {ratio:.2} (>= 0.8: {})",
        mark(ratio >= 0.8)
    );
    println!(
        "  read-back: {:.0} MB/s (>= 500: {})",
        sum.read_mb_s,
        mark(sum.read_mb_s >= 500.0)
    );
    println!();
}

fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    fs::create_dir_all(&s.dir).with_context(|| format!("create {}", s.dir.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut sum = Summary::default();
    let d = s.wal_options(&s.dir);
    println!(
        "WAL benchmark: {} CPUs; WalOptions: batch_size {}, flush_interval {:?}, \
         compression {}, fsync {}, segment_size {} MiB\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        d.batch_size,
        d.flush_interval,
        d.compression,
        d.fsync,
        d.segment_size >> 20
    );
    let run = |p: &str| s.phases.iter().any(|q| q == p);
    if run("raw") {
        raw_phase(&s, &mut sum)?;
    }
    if run("small") {
        rt.block_on(small_phase(&s, &mut sum))?;
    }
    if run("large") {
        rt.block_on(large_phase(&s, &mut sum))?;
    }
    if run("compression") {
        compression_phase();
    }
    if s.phases.len() < PHASES.len() {
        println!("(PHASES={}: no summary)", s.phases.join(","));
        return Ok(());
    }
    print_targets(&sum);
    println!(
        "RESULT entries_per_s_fsync={:.0} fsyncs_per_s_raw={:.0} single_appends_per_s={:.0} \
         single_vs_raw={:.2} large_write_vs_raw={:.2} read_mb_s={:.0}",
        sum.best_small,
        sum.fsyncs_raw_prealloc,
        sum.single_appends_per_s,
        sum.single_appends_per_s / sum.fsyncs_raw_prealloc,
        sum.large_mb_s / sum.seq_mb_s,
        sum.read_mb_s
    );
    Ok(())
}
