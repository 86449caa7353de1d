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

#[test]
fn dump_and_check_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let out = Command::new(WOLFCTL)
        .args([
            "wal",
            "dump",
            "--json",
            "--from",
            "99",
            "--to",
            "100",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"index": 99, "term": 1, "bytes": 99}),
            serde_json::json!({"index": 100, "term": 2, "bytes": 100}),
        ]
    );
    let out = Command::new(WOLFCTL)
        .args(["wal", "check", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let segments = v["segments"].as_array().expect("segments");
    let entries: u64 = segments
        .iter()
        .map(|s| s["entries"].as_u64().unwrap())
        .sum();
    assert_eq!((v["ok"].as_bool(), entries), (Some(true), 150), "{v}");
    let victim = &segment_files(&dir.path().join("wal")).unwrap()[1].1;
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[32 + 12] ^= 0xFF;
    std::fs::write(victim, bytes).unwrap();
    let out = Command::new(WOLFCTL)
        .args(["wal", "check", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("offset 32"),
        "{v}"
    );
}
