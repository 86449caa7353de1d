//! Write small, valid WAL segments (raw and LZ4, several batches, a torn tail) into a
//! directory, as a seed corpus for the `segment` fuzz target:
//!
//! ```sh
//! cargo run --example wal_fuzz_seeds -- fuzz/corpus/segment
//! ```
//! Random bytes almost never carry a valid CRC, so without seeds the fuzzer only
//! exercises the rejection paths.

use bytes::Bytes;
use wolfscale::wal::{segment_files, Entry, Wal, WalOptions};

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/segment".into()),
    );
    std::fs::create_dir_all(&out)?;
    let mut n = 0;
    for compression in [false, true] {
        for (batches, per_batch) in [(1u64, 1u64), (3, 4), (2, 40)] {
            let dir = tempfile::tempdir()?;
            let wal = Wal::open(WalOptions {
                compression,
                segment_size: 1 << 20,
                ..WalOptions::new(dir.path())
            })?;
            for b in 0..batches {
                let first = 1 + b * per_batch;
                let entries = (first..first + per_batch)
                    .map(|i| Entry {
                        index: i,
                        term: 1 + i / 10,
                        payload: Bytes::from(
                            format!("INSERT INTO t (id, v) VALUES ({i}, 'value {i}')").repeat(3),
                        ),
                    })
                    .collect();
                wal.append_blocking(entries)?;
            }
            drop(wal);
            for (_, path) in segment_files(&dir.path().join("wal"))? {
                let bytes = std::fs::read(&path)?;
                std::fs::write(out.join(format!("seed-{n}")), &bytes)?;
                // The same segment with a torn last frame.
                std::fs::write(
                    out.join(format!("seed-{n}-torn")),
                    &bytes[..bytes.len() - 7],
                )?;
                n += 1;
            }
        }
    }
    println!("wrote {} seeds to {}", n * 2, out.display());
    Ok(())
}
