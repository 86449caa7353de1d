//! The binaries: `wolfscale init/validate/classify/start` and `wolfctl check-config`,
//! including graceful shutdown on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Db;
use mysql_async::prelude::*;
use mysql_async::Conn;

const WOLFSCALE: &str = env!("CARGO_BIN_EXE_wolfscale");
const WOLFCTL: &str = env!("CARGO_BIN_EXE_wolfctl");

#[test]
fn init_writes_a_config_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wolfscale.toml");
    let out = Command::new(WOLFSCALE)
        .args(["init", "--node-id", "node-3", "--output"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("id = \"node-3\""), "{text}");
    let out = Command::new(WOLFSCALE)
        .arg("-c")
        .arg(&path)
        .args(["validate", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(WOLFCTL)
        .args(["check-config", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Refuses to overwrite.
    let out = Command::new(WOLFSCALE)
        .args(["init", "--output"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `validate` connects to [database] and says whether MariaDB takes the PROXY
/// protocol from the proxy, and what happens to clients when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_proxy_protocol_support() {
    let db = Db::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wolfscale.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nid = \"node-1\"\n[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\n",
            db.port()
        ),
    )
    .unwrap();
    let validate = || {
        let out = Command::new(WOLFSCALE)
            .arg("-c")
            .arg(&path)
            .arg("validate")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = validate();
    assert!(
        text.contains("PROXY protocol not accepted from 127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("add 127.0.0.1 to proxy_protocol_networks"),
        "{text}"
    );
    let mut root = db.root().await;
    root.query_drop("SET GLOBAL proxy_protocol_networks = '127.0.0.0/8'")
        .await
        .unwrap();
    let text = validate();
    assert!(
        text.contains("PROXY protocol accepted from 127.0.0.1"),
        "{text}"
    );
}

#[test]
fn validate_reports_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[node]\nid = \"node-1\"\ndvertise_address = \"10.0.0.1:7654\"\n[database]\nuser = \"u\"\nport = 70000\n\
         [cluster]\nbootstrap = true\n",
    )
    .unwrap();
    for mut cmd in [
        {
            let mut c = Command::new(WOLFSCALE);
            c.arg("-c").arg(&path).arg("validate");
            c
        },
        {
            let mut c = Command::new(WOLFCTL);
            c.args(["check-config", "-f"]).arg(&path);
            c
        },
    ] {
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.toml"), "{err}");
        assert!(
            err.contains("node.dvertise_address") && err.contains("advertise_address`"),
            "{err}"
        );
        assert!(err.contains("database.port"), "{err}");
        assert!(err.contains("cluster.bootstrap"), "{err}");
    }
    // WOLFSCALE_CONFIG is the fallback when -c is absent.
    let out = Command::new(WOLFSCALE)
        .env("WOLFSCALE_CONFIG", &path)
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // `start` refuses a bad config before doing anything.
    let out = Command::new(WOLFSCALE)
        .arg("-c")
        .arg(&path)
        .arg("start")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node.dvertise_address"));
}

/// `wolfscale info` prints every key with its effective value and no secret;
/// `validate` warns about an API open to the network without a token; `wolfctl
/// check-config --json` gives the diagnostics as JSON; usage errors exit 2.
#[test]
fn info_redacts_secrets_and_validate_warns_about_an_open_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wolfscale.toml");
    std::fs::write(
        &path,
        "[node]\nid = \"node-2\"\nadvertise_address = \"10.0.0.2:7654\"\ndata_dir = \"/tmp/x\"\n\
         [database]\nuser = \"svc\"\npassword = \"db-pass-5521\"\n\
         [cluster]\nsecret = \"cluster-secret-8812\"\n[api]\nbind_address = \"0.0.0.0:8080\"\n",
    )
    .unwrap();
    let out = Command::new(WOLFSCALE)
        .arg("-c")
        .arg(&path)
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("db-pass-5521") && !text.contains("cluster-secret-8812"),
        "{text}"
    );
    let parsed: toml::Table = toml::from_str(&text).expect("info prints TOML");
    assert_eq!(parsed["node"]["id"].as_str(), Some("node-2"));
    assert_eq!(parsed["database"]["password"].as_str(), Some("<redacted>"));
    assert_eq!(parsed["cluster"]["secret"].as_str(), Some("<redacted>"));
    // Defaults are filled in.
    assert_eq!(
        parsed["proxy"]["bind_address"].as_str(),
        Some("0.0.0.0:8007")
    );
    assert_eq!(
        parsed["cluster"]["election_timeout_min_ms"].as_integer(),
        Some(1500)
    );
    assert!(parsed["api"].get("token").is_none(), "{text}");

    let validate = |path: &std::path::Path| {
        let out = Command::new(WOLFSCALE)
            .arg("-c")
            .arg(path)
            .args(["validate", "--offline"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = validate(&path);
    assert!(
        err.contains("api.bind_address") && err.contains("no [api] token"),
        "{err}"
    );
    let with_token = dir.path().join("token.toml");
    std::fs::write(
        &with_token,
        std::fs::read_to_string(&path).unwrap() + "token = \"t-1\"\n",
    )
    .unwrap();
    let err = validate(&with_token);
    assert!(!err.contains("no [api] token"), "{err}");

    let out = Command::new(WOLFCTL)
        .args(["check-config", "--json", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    std::fs::write(dir.path().join("bad.toml"), "[node]\nid = 5\nport = 1\n").unwrap();
    let out = Command::new(WOLFCTL)
        .args(["check-config", "--json", "-f"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], false, "{v}");
    let keys: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["key"].as_str())
        .collect();
    assert!(keys.contains(&"node.port"), "{v}");

    // Usage errors exit 2, for both tools.
    for tool in [WOLFSCALE, WOLFCTL] {
        let out = Command::new(tool).arg("no-such-command").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{tool}: {out:?}");
    }
}

#[test]
fn classify_prints_the_class() {
    let out = Command::new(WOLFSCALE)
        .args(["classify", "SELECT * FROM t WHERE id = 1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("read"),
        "{out:?}"
    );
    let out = Command::new(WOLFSCALE)
        .args(["classify", "INSERT INTO t VALUES (UUID())"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("write") && text.contains("UUID()"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_statements_then_exits() {
    let db = Db::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = wolfscale::localdb::free_port().unwrap();
    let cfg = dir.path().join("wolfscale.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nid = \"node-1\"\ndata_dir = \"data\"\n[database]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\n\
             password = \"\"\n[api]\nenabled = false\n[proxy]\nbind_address = \"127.0.0.1:{port}\"\n\
             shutdown_timeout_ms = 10000\n",
            db.port()
        ),
    )
    .unwrap();
    let mut child = Command::new(WOLFSCALE)
        .args(["--log-level", "info", "-c"])
        .arg(&cfg)
        .arg("start")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let opts = common::opts(port, "app", common::APP_PASSWORD, None);
    let up = common::wait_until(Duration::from_secs(20), || async {
        Conn::new(opts.clone()).await.is_ok()
    })
    .await;
    assert!(up, "proxy did not come up");
    let mut busy = Conn::new(opts.clone()).await.unwrap();
    let idle = Conn::new(opts.clone()).await.unwrap();
    let query = tokio::spawn(async move { busy.query_first::<i64, _>("SELECT SLEEP(2)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    // New connections are refused at once.
    let refused = common::wait_until(Duration::from_secs(2), || async {
        Conn::new(opts.clone()).await.is_err()
    })
    .await;
    assert!(refused, "listener still open after SIGTERM");
    // The in-flight statement completes normally.
    let r = query.await.unwrap();
    assert_eq!(r.unwrap(), Some(0));
    drop(idle);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// `install_service.sh` in a throwaway root (no systemd here): it asks for the
/// settings when there is no config (answers piped in), writes a config that loads with
/// every answer in it, installs the binaries and a unit; a second run keeps the config.
/// `run.sh` runs the documented commands. Both pass shellcheck.
#[test]
fn service_install_and_run_sh_in_a_throwaway_root() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("shellcheck")
        .arg(repo.join("install_service.sh"))
        .arg(repo.join("run.sh"))
        .output()
        .expect("shellcheck (scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let root = tempfile::tempdir().unwrap();
    let bins = std::path::Path::new(WOLFSCALE).parent().unwrap();
    let install_in = |root: &std::path::Path, mode: &str, answers: &str| {
        let mut child = Command::new("bash")
            .arg(repo.join("install_service.sh"))
            .arg(mode)
            .env("ROOT", root)
            .env("WOLFSCALE_BIN_DIR", bins)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answers.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let install = |mode: &str, answers: &str| install_in(root.path(), mode, answers);
    let answers = "node-7\n0.0.0.0:7654\n10.0.0.7:7654\ny\n10.0.0.8:7654\n10.0.0.9:7654\n\n\
                   cluster-s3cret\n127.0.0.1\n3307\nshop\nsvc\npa\"ss\\word\n8081\n";
    let out = install("node", answers);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("start --bootstrap"),
        "the first node is told how to start: {stdout}"
    );
    let r = root.path();
    for (path, exec) in [
        ("opt/wolfscale/wolfscale", true),
        ("opt/wolfscale/wolfctl", true),
        ("usr/local/bin/wolfctl", true),
        ("var/lib/wolfscale", false),
        ("var/log/wolfscale", false),
    ] {
        let m = std::fs::metadata(r.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            m.permissions().mode() & 0o111 != 0,
            exec || m.is_dir(),
            "{path}"
        );
    }
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/wolfscale.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/opt/wolfscale/wolfscale -c /opt/wolfscale/wolfscale.toml start\n"
        ),
        "{unit}"
    );
    assert!(
        unit.contains("User=wolfscale") && unit.contains("WantedBy=multi-user.target"),
        "{unit}"
    );
    let config = r.join("opt/wolfscale/wolfscale.toml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (cfg, _) = wolfscale::config::Config::load(&config).expect("the written config loads");
    assert_eq!(cfg.node.id, "node-7");
    assert_eq!(cfg.node.advertise_address, "10.0.0.7:7654");
    assert_eq!(cfg.cluster.peers, vec!["10.0.0.8:7654", "10.0.0.9:7654"]);
    assert_eq!(
        (cfg.database.host.as_str(), cfg.database.port),
        ("127.0.0.1", 3307)
    );
    assert_eq!(cfg.database.database.as_deref(), Some("shop"));
    assert_eq!(cfg.database.user, "svc");
    assert_eq!(cfg.database.password.expose(), "pa\"ss\\word");
    assert_eq!(cfg.api.bind_address.port(), 8081);
    assert_eq!(
        cfg.cluster.secret.as_ref().map(|s| s.expose().to_string()),
        Some("cluster-s3cret".to_string())
    );

    // A standalone proxy's install, in a root of its own: it asks for the proxy's
    // id, where it listens, the nodes, the secret and the service account.
    let proxy_root = tempfile::tempdir().unwrap();
    let out = install_in(
        proxy_root.path(),
        "proxy",
        "edge-1\n0.0.0.0:3306\n10.0.0.8:7654\n10.0.0.9:7654\n\ncluster-s3cret\nsvc\npw\n",
    );
    assert!(out.status.success(), "{out:?}");
    let proxy_config = proxy_root.path().join("opt/wolfscale/wolfscale.toml");
    let (cfg, _) =
        wolfscale::config::Config::load_as(&proxy_config, wolfscale::config::Role::Proxy)
            .expect("the written proxy config loads");
    assert_eq!(cfg.node.id, "edge-1");
    assert_eq!(cfg.proxy.bind_address.port(), 3306);
    assert_eq!(cfg.cluster.peers, vec!["10.0.0.8:7654", "10.0.0.9:7654"]);
    assert_eq!(cfg.database.user, "svc");
    let unit = std::fs::read_to_string(
        proxy_root
            .path()
            .join("etc/systemd/system/wolfscale-proxy.service"),
    )
    .unwrap();
    assert!(unit.contains("wolfscale.toml proxy\n"), "{unit}");

    // A proxy install over an existing config keeps it and asks nothing.
    let out = install("proxy", "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeping the existing"),
        "{out:?}"
    );
    let unit =
        std::fs::read_to_string(r.join("etc/systemd/system/wolfscale-proxy.service")).unwrap();
    assert!(unit.contains("wolfscale.toml proxy\n"), "{unit}");
    let out = install("nonsense", "");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // run.sh: the documented commands, on that config.
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(repo.join("run.sh"))
            .args(args)
            .env("WOLFSCALE_CONFIG", &config)
            .env("WOLFSCALE_BIN", WOLFSCALE)
            .output()
            .unwrap()
    };
    let out = run(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("id = \"node-7\""),
        "{out:?}"
    );
    assert!(
        !text.contains("pa\\\"ss") && text.contains("<redacted>"),
        "{text}"
    );
    assert_eq!(run(&["bogus"]).status.code(), Some(2));
}

/// docker/: what can be checked without a Docker engine (`docker/check.sh`: the compose
/// file resolves, the build stage's `cargo build --locked`, the entry point's config
/// validates and it bootstraps on the first start only), and shellcheck on its scripts.
#[test]
fn docker_files_check_out_without_an_engine() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("shellcheck")
        .arg(repo.join("docker/entrypoint.sh"))
        .arg(repo.join("docker/check.sh"))
        .output()
        .expect("shellcheck (scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bins = std::path::Path::new(WOLFSCALE).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("docker/check.sh"))
        .env("WOLFSCALE_BIN_DIR", bins)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in ["compose file: ok", "build stage", "entry point"] {
        assert!(text.contains(step), "{step}: {text}");
    }
}
