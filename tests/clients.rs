//! Real clients through the proxy: the `mariadb` CLI, PyMySQL + SQLAlchemy, sysbench.
//! `scripts/test-deps.sh` installs them; a missing one fails the test with that hint.

mod common;

use std::process::Command;

use common::{run, Node, APP_PASSWORD};

fn mariadb_cli(port: u16) -> Command {
    let mut c = Command::new("mariadb");
    c.args([
        "-h127.0.0.1",
        &format!("-P{port}"),
        "-uapp",
        &format!("-p{APP_PASSWORD}"),
        "--batch",
    ]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_statements_and_source() {
    let node = Node::start().await;
    let port = node.proxy_port();
    let out = tokio::task::block_in_place(|| {
        run(
            mariadb_cli(port).arg("-e").arg(
                "CREATE DATABASE cli; USE cli; CREATE TABLE t (id INT, s VARCHAR(10)); \
                 INSERT INTO t VALUES (1,'one'),(2,'two'); SELECT id, s FROM t ORDER BY id; SHOW WARNINGS;",
            ),
            "mariadb -e",
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "id\ts\n1\tone\n2\ttwo\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "USE cli;\nDELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT COUNT(*) AS n FROM t; END //\nDELIMITER ;\n\
         INSERT INTO t VALUES (3, 'three');\nCALL p();\n",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| {
        run(
            mariadb_cli(port)
                .arg("-e")
                .arg(format!("source {}", script.display())),
            "mariadb source",
        )
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n3\n");
    // An error reaches the CLI with MariaDB's code and SQLSTATE, and a non-zero exit.
    let out = tokio::task::block_in_place(|| {
        mariadb_cli(port)
            .args(["-e", "SELECT * FROM cli.nope"])
            .output()
    })
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ERROR 1146 (42S02)"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_and_sqlalchemy_orm() {
    let node = Node::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/orm_test.py");
    let port = node.proxy_port().to_string();
    let out = tokio::task::block_in_place(|| {
        run(
            Command::new("python3").args([script, &port, "app", APP_PASSWORD, "test"]),
            "python3 orm_test.py",
        )
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("orm ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_read_write() {
    let node = Node::start().await;
    let port = node.proxy_port().to_string();
    let common = |cmd: &mut Command| {
        cmd.args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            "--mysql-user=app",
            &format!("--mysql-password={APP_PASSWORD}"),
            "--mysql-db=test",
            "--tables=2",
            "--table-size=2000",
        ]);
    };
    let out = tokio::task::block_in_place(|| {
        let mut prepare = Command::new("sysbench");
        prepare.arg("oltp_read_write");
        common(&mut prepare);
        run(prepare.arg("prepare"), "sysbench prepare");
        let mut bench = Command::new("sysbench");
        bench.arg("oltp_read_write");
        common(&mut bench);
        // Prepared statements (db-ps-mode=auto) are sysbench's default.
        run(
            bench.args(["--threads=4", "--time=5", "--db-ps-mode=auto", "run"]),
            "sysbench run",
        )
    });
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no '{label}' in sysbench output:\n{text}"))
    };
    let transactions = count("transactions:");
    assert!(transactions > 50, "{text}");
    // "Ignored errors" are InnoDB deadlocks that sysbench retries, as it does directly
    // against MariaDB; anything else would abort the run and fail `run` above.
    assert!(count("ignored errors:") * 20 < transactions, "{text}");
}
