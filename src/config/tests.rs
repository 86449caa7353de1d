//! Unit tests that need the whole module; per-file tests live beside their code.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::raw::SCHEMA;
use super::*;

fn load(text: &str) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    Config::from_toml_str(text, Path::new("conf/wolfscale.toml"))
}

#[test]
fn template_loads_without_any_diagnostic() {
    for (id, number) in [
        ("node-1", 1),
        ("7", 7),
        ("db-dc1-1023", 1023),
        ("primary", derive_node_number("primary")),
        ("a", derive_node_number("a")),
        (&"x".repeat(64), derive_node_number(&"x".repeat(64))),
    ] {
        let (config, diagnostics) = load(&template(id)).expect("template must validate");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert_eq!(config.node.id, id);
        assert_eq!(
            (config.node.number, config.node.number_explicit),
            (number, false)
        );
    }
}

/// The template states the defaults, so it must load to the same config as a file that
/// only sets the required keys.
#[test]
fn template_values_are_the_defaults() {
    let (from_template, _) = load(&template("node-5")).unwrap();
    let (minimal, _) = load("[node]\nid = \"node-5\"\n[database]\nuser = \"wolfscale\"\n").unwrap();
    assert_eq!(from_template, minimal);
    assert_eq!(minimal.wal, WalConfig::default());
    assert_eq!(minimal.cluster, ClusterConfig::default());
    assert_eq!(minimal.api, ApiConfig::default());
    assert_eq!(minimal.proxy, ProxyConfig::default());
    assert_eq!(minimal.node.data_dir, PathBuf::from("conf/data"));
    assert_eq!(minimal.node.advertise_address, "127.0.0.1:7654");
    assert_eq!(minimal.source, PathBuf::from("conf/wolfscale.toml"));
}

/// Every known key appears in the template, set or commented out.
#[test]
fn template_mentions_every_key() {
    let text = template("node-1");
    for (section, keys) in SCHEMA {
        let header = format!("[{section}]");
        let body = text
            .split_once(&header)
            .map(|(_, rest)| rest.split("\n[").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("no {header} in template"));
        for (key, _) in *keys {
            let present = body.lines().any(|line| {
                let line = line.strip_prefix("# ").unwrap_or(line);
                line.starts_with(&format!("{key} = "))
            });
            assert!(present, "{section}.{key} missing from template");
        }
    }
}

#[test]
fn template_optional_keys_load_when_uncommented() {
    let text = template("node-3")
        .replace("# number = ", "number = ")
        .replace("# database = ", "database = ")
        .replace("# secret = ", "secret = ")
        .replace("# token = ", "token = ")
        .replace("# follower_innodb_flush = ", "follower_innodb_flush = ");
    let (config, diagnostics) = load(&text).unwrap();
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(config.database.database.as_deref(), Some("app"));
    assert_eq!(config.database.follower_innodb_flush, Some(2));
    assert_eq!(
        load(&template("node-3"))
            .unwrap()
            .0
            .database
            .follower_innodb_flush,
        None
    );
    // 0 would lose commits of a crashed mariadbd while the node keeps running.
    for bad in ["0", "3"] {
        let text = template("node-3").replace(
            "# follower_innodb_flush = 2",
            &format!("follower_innodb_flush = {bad}"),
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("database.follower_innodb_flush"), "{err}");
    }
    assert_eq!(config.cluster.secret.unwrap().expose(), "change-me");
    assert_eq!(config.api.token.unwrap().expose(), "change-me");
    assert_eq!((config.node.number, config.node.number_explicit), (3, true));
    // The shorthand instead of the min/max pair it stands for: the same config.
    let shorthand = template("node-3")
        .replace("election_timeout_min_ms = 1500\n", "")
        .replace("election_timeout_max_ms = 3000\n", "")
        .replace("# election_timeout_ms = ", "election_timeout_ms = ");
    let (from_shorthand, diagnostics) = load(&shorthand).unwrap();
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(from_shorthand, load(&template("node-3")).unwrap().0);
}

/// Ids that need quoting or escaping in TOML are written so that they load as given, and
/// refused ones are reported at node.id, never as a syntax error.
#[test]
fn template_writes_any_id_as_a_toml_string() {
    for id in ["node-1", "a.b_c-D"] {
        assert_eq!(load(&template(id)).unwrap().0.node.id, id);
    }
    for bad in [
        "",
        "a b",
        "quote\"",
        "back\\slash",
        "new\nline",
        "tab\t",
        "é",
        "'",
    ] {
        let err = load(&template(bad)).unwrap_err();
        let keys: Vec<_> = err.diagnostics().iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["node.id"], "{bad:?}: {err}");
        assert_eq!(err.diagnostics()[0].problem, Problem::InvalidValue);
        assert!(!err.diagnostics()[0].to_string().contains('\n'), "{err}");
    }
}

#[test]
fn node_numbers_from_trailing_digits() {
    for (id, number) in [
        ("node-1", 1),
        ("node-2", 2),
        ("wolftest1", 1),
        ("wolftest3", 3),
        ("db-dc1-001", 1),
        ("db-dc1-002", 2),
        ("0", 0),
        ("7", 7),
        ("1023", 1023),
        ("1024", 0),
        ("node-1025", 1),
        (
            "n-00000000000000000000000000000000000000000000000000000000000000000000001",
            1,
        ),
        // 10^k is a multiple of 1024 for k >= 10, so any long run of nines is 1023.
        ("n-99999999999999999999999999999999999999999", 1023),
    ] {
        assert_eq!(derive_node_number(id), number, "{id}");
    }
    // Digits anywhere but at the end do not count.
    assert_eq!(derive_node_number("1a"), 327);
    assert_eq!(derive_node_number("1a"), derive_node_number_by_hash("1a"));
}

fn derive_node_number_by_hash(id: &str) -> u16 {
    (crc32c::crc32c(id.as_bytes()) % 1024) as u16
}

/// Ids without trailing digits are hashed with CRC-32C. The values are pinned: they must
/// never change, or an upgrade would renumber nodes.
#[test]
fn node_numbers_from_the_stable_hash() {
    // The standard CRC-32C check value: this is the Castagnoli CRC, not some other hash.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    for (id, number) in [
        ("primary", 905),
        ("replica", 335),
        ("db-dc1-main", 508),
        ("a", 816),
    ] {
        assert_eq!(derive_node_number(id), number, "{id}");
        assert_eq!(derive_node_number_by_hash(id), number, "{id}");
    }
    // Every derived number is a 10-bit one.
    for i in 0..5000 {
        assert!(derive_node_number(&format!("n{i}x")) <= NODE_NUMBER_MAX);
    }
}

#[test]
fn node_id_rules() {
    for good in ["node-1", "a", "A.b_c-9", &"z".repeat(NODE_ID_MAX_LEN)] {
        assert_eq!(validate_node_id(good), Ok(()), "{good}");
    }
    let why = |id: &str| validate_node_id(id).unwrap_err();
    assert!(why("").starts_with("must not be empty"), "{}", why(""));
    let long = "z".repeat(NODE_ID_MAX_LEN + 1);
    assert!(
        why(&long).starts_with("too long (65 characters)"),
        "{}",
        why(&long)
    );
    assert!(why("db 1").contains("contains ' '"), "{}", why("db 1"));
    assert!(why("a/b").contains("contains '/'"), "{}", why("a/b"));
    assert!(why("é").contains("contains 'é'"), "{}", why("é"));
    assert!(
        why("a\nb").contains("`a\\nb` contains '\\n'"),
        "{}",
        why("a\nb")
    );
    // Every reason states the whole rule.
    for bad in ["", &long, "db 1"] {
        assert!(
            why(bad).ends_with("1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`"),
            "{}",
            why(bad)
        );
    }
}

#[test]
fn resolve_path_precedence() {
    let cli = Path::new("/etc/ws.toml");
    let env = || Some(OsString::from("/env/ws.toml"));
    assert_eq!(
        resolve_path_from(Some(cli), env()),
        PathBuf::from("/etc/ws.toml")
    );
    assert_eq!(
        resolve_path_from(None, env()),
        PathBuf::from("/env/ws.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some(OsString::new())),
        PathBuf::from(DEFAULT_FILE)
    );
    assert_eq!(resolve_path_from(None, None), PathBuf::from(DEFAULT_FILE));
}

#[test]
fn relative_paths_follow_the_config_file() {
    let text = "[node]\nid = \"n1\"\ndata_dir = \"state/here\"\n[database]\nuser = \"u\"\n";
    let at = |path: &str| {
        Config::from_toml_str(text, Path::new(path))
            .unwrap()
            .0
            .node
            .data_dir
    };
    assert_eq!(
        at("/etc/wolfscale/wolfscale.toml"),
        PathBuf::from("/etc/wolfscale/state/here")
    );
    assert_eq!(at("wolfscale.toml"), PathBuf::from("state/here"));
    assert_eq!(at(MEMORY_SOURCE), PathBuf::from("state/here"));
    let abs = "[node]\nid = \"n1\"\ndata_dir = \"/var/lib/ws\"\n[database]\nuser = \"u\"\n";
    let (config, _) = Config::from_toml_str(abs, Path::new("/etc/w.toml")).unwrap();
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/ws"));
}

#[test]
fn diagnostics_are_in_file_order_and_located() {
    let text = "[wal]\nbatch_size = 0\n[node]\nid = \"\"\n[database]\nuser = \"u\"\nport = 0\n";
    let err = load(text).unwrap_err();
    let keys: Vec<_> = err.diagnostics().iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["wal.batch_size", "node.id", "database.port"]);
    let lines: Vec<_> = err
        .diagnostics()
        .iter()
        .map(|d| d.location.unwrap().line)
        .collect();
    assert_eq!(lines, [2, 4, 7]);
}

/// Deterministic mutations of the template (truncations, byte flips, dropped and
/// duplicated lines, swapped values): loading must never panic, and every diagnostic must
/// name the file.
#[test]
fn mutated_templates_never_panic() {
    let base = template("node-9").into_bytes();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift64*: no dependency, reproducible.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for cut in (0..base.len()).step_by(base.len() / 150 + 1) {
        cases.push(base[..cut].to_vec());
    }
    const NASTY: &[u8] = b"=[]\"'#\n.,{}0-9x\\\x00\xff";
    for _ in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = match next() % 3 {
                0 => bytes[at] ^ (1 << (next() % 8)),
                1 => NASTY[(next() % NASTY.len() as u64) as usize],
                _ => b'9',
            };
        }
        cases.push(bytes);
    }
    let lines: Vec<&str> = std::str::from_utf8(&base).unwrap().lines().collect();
    for i in 0..lines.len() {
        let mut dropped = lines.clone();
        dropped.remove(i);
        cases.push(dropped.join("\n").into_bytes());
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        cases.push(doubled.join("\n").into_bytes());
    }
    for value in [
        "-1",
        "0",
        "99999999999",
        "\"x\"",
        "true",
        "[]",
        "{}",
        "1.5",
        "1979-05-27",
    ] {
        for line in lines
            .iter()
            .filter(|l| l.contains(" = ") && !l.starts_with('#'))
        {
            let (key, _) = line.split_once(" = ").unwrap();
            let text = lines.join("\n").replace(line, &format!("{key} = {value}"));
            cases.push(text.into_bytes());
        }
    }
    assert!(cases.len() > 500, "{}", cases.len());
    let file = Path::new("fuzz.toml");
    for bytes in cases {
        let text = String::from_utf8_lossy(&bytes);
        match Config::from_toml_str(&text, file) {
            Ok((_, warnings)) => assert!(warnings.iter().all(|d| !d.is_error())),
            Err(e) => {
                assert!(
                    !e.diagnostics().is_empty() && e.diagnostics().iter().any(|d| d.is_error())
                );
                for d in e.diagnostics() {
                    assert_eq!(d.file, file);
                    assert!(!d.to_string().contains('\n'), "{d}");
                }
                let _ = e.to_string();
            }
        }
    }
}

/// The README's configuration table names every key WolfScale knows: a row's first
/// cell names `section.key`, or a first `section.key` followed by more `key`s of that
/// section.
#[test]
fn readme_documents_every_key() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("## Configuration")
        .expect("a Configuration section");
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + e);
    let cells: Vec<&str> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .collect();
    let mut missing = Vec::new();
    for (section, keys) in super::raw::SCHEMA {
        for (key, _) in *keys {
            let full = format!("`{section}.{key}`");
            let bare = format!("`{key}`");
            let documented = cells.iter().any(|c| {
                c.contains(&full) || (c.contains(&format!("`{section}.")) && c.contains(&bare))
            });
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README's configuration table lacks {missing:?}"
    );
}

#[test]
fn a_standalone_proxy_needs_no_advertise_address() {
    let text = "[node]\nid = \"proxy-1\"\n[database]\nuser = \"svc\"\n[cluster]\npeers = [\"10.0.0.1:7654\"]\nsecret = \"s\"\n";
    let err = load(text).expect_err("a node with peers must say where peers reach it");
    assert!(err.to_string().contains("node.advertise_address"), "{err}");
    let (cfg, diags) = Config::from_toml_str_as(text, Path::new(MEMORY_SOURCE), Role::Proxy)
        .expect("a proxy is never reached through the cluster port");
    assert_eq!(cfg.cluster.peers, vec!["10.0.0.1:7654"]);
    assert!(diags.is_empty(), "{diags:?}");
}
