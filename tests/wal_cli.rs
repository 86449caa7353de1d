//! `wolfctl wal dump` and `wolfctl wal check` on a real log.

use std::process::Command;

use bytes::Bytes;
use wolfscale::wal::{segment_files, Entry, Wal, WalOptions};

const WOLFCTL: &str = env!("CARGO_BIN_EXE_wolfctl");

fn write_log(dir: &std::path::Path) {
    let opts = WalOptions {
        segment_size: 2048,
        ..WalOptions::new(dir)
    };
    let wal = Wal::open_blocking(opts).unwrap();
    for c in 0..30u64 {
        let entries = (1 + c * 5..6 + c * 5)
            .map(|i| Entry {
                index: i,
                term: 1 + i / 100,
                payload: Bytes::from(vec![b'x'; i as usize]),
            })
            .collect();
        wal.append_blocking(entries).unwrap();
    }
}

#[test]
fn dump_prints_index_term_and_size() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let out = Command::new(WOLFCTL)
        .args(["wal", "dump", "--from", "99", "--to", "101", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["99", "1", "99"],
            vec!["100", "2", "100"],
            vec!["101", "2", "101"]
        ]
    );
}

#[test]
fn check_passes_then_names_file_and_offset_of_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let out = Command::new(WOLFCTL)
        .args(["wal", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("segment(s) verified"));
    let segments = segment_files(&dir.path().join("wal")).unwrap();
    assert!(segments.len() > 2);
    let victim = &segments[1].1;
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[32 + 12] ^= 0xFF; // inside the first frame's payload
    std::fs::write(victim, bytes).unwrap();
    let out = Command::new(WOLFCTL)
        .args(["wal", "check", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&victim.display().to_string()) && err.contains("offset 32"),
        "{err}"
    );
}
