//! Every client runs as exactly the account MariaDB would give it, never another.
//!
//! The matrix: MariaDB with `skip_name_resolve` ON and OFF, reached over TCP and over
//! its Unix socket, with and without the PROXY protocol; accounts on `localhost`,
//! `127.0.0.1`, `%`, `10.%`, a netmask, a single other address, and anonymous ones, with
//! equal and different passwords; clients from 127.0.0.1 and 127.0.0.2. For each login
//! the proxy's outcome (refused with which error, or `CURRENT_USER()` and whether a
//! privileged statement is allowed) is compared with a direct connection's from the
//! same address. With the PROXY protocol they must be identical; without it the proxy
//! may refuse (ERR 1045) a client whose account MariaDB would not give the proxy's own
//! address, but it must never run one with another account. (One MariaDB quirk: over
//! its Unix socket with `skip_name_resolve = ON` it matches `localhost` accounts even
//! after a PROXY header, so there the proxy checks `CURRENT_USER()` as well.)

mod common;

use std::net::IpAddr;

use common::raw::{Raw, ServerErr};
use common::{Db, Node};
use mysql_async::prelude::Queryable;
use wolfscale::localdb::Options;
use wolfscale::proxy::ProxyHandle;

const SETUP: &str = "
    CREATE DATABASE IF NOT EXISTS app;
    CREATE USER a@'localhost' IDENTIFIED BY 'same';
    GRANT ALL PRIVILEGES ON *.* TO a@'localhost';
    CREATE USER a@'%' IDENTIFIED BY 'same';
    GRANT SELECT ON app.* TO a@'%';
    CREATE USER b@'localhost' IDENTIFIED BY 'pw-local';
    GRANT ALL PRIVILEGES ON *.* TO b@'localhost';
    CREATE USER b@'%' IDENTIFIED BY 'pw-any';
    CREATE USER c@'127.0.0.1' IDENTIFIED BY 'c-127';
    GRANT CREATE ON *.* TO c@'127.0.0.1';
    CREATE USER c@'%' IDENTIFIED BY 'c-any';
    CREATE USER d@'10.%' IDENTIFIED BY 'd-10';
    GRANT CREATE ON *.* TO d@'10.%';
    CREATE USER d@'%' IDENTIFIED BY 'd-any';
    CREATE USER e@'127.0.0.0/255.255.255.0' IDENTIFIED BY 'e-mask';
    CREATE USER e@'%' IDENTIFIED BY 'e-any';
    GRANT CREATE ON *.* TO e@'%';
    CREATE USER f@'127.0.0.2' IDENTIFIED BY 'f-2';
    CREATE USER ''@'localhost' IDENTIFIED BY 'anon-local';
    GRANT CREATE ON *.* TO ''@'localhost';
    CREATE USER ''@'127.0.0.%' IDENTIFIED BY 'anon-pct';
    CREATE USER g@'%' IDENTIFIED BY 'g-any';
    GRANT CREATE ON *.* TO g@'%';
";

/// Each user with the passwords worth trying (its accounts' and the anonymous ones').
const LOGINS: &[(&str, &[&str])] = &[
    ("a", &["same", "wrong"]),
    ("b", &["pw-local", "pw-any"]),
    ("c", &["c-127", "c-any"]),
    ("d", &["d-10", "d-any"]),
    ("e", &["e-mask", "e-any"]),
    ("f", &["f-2", "anon-pct"]),
    ("g", &["g-any", "anon-pct", "anon-local"]),
    ("h", &["anon-pct", "anon-local", "x"]),
    ("", &["anon-pct", "anon-local"]),
];

const FROM: [&str; 2] = ["127.0.0.1", "127.0.0.2"];

/// What a login amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Refused(ServerErr),
    /// `CURRENT_USER()`, and the result of a statement that needs a global privilege.
    LoggedIn {
        account: String,
        create_db: Result<(), u16>,
    },
}

async fn outcome(port: u16, from: &str, user: &str, pass: &str) -> Outcome {
    let source: IpAddr = from.parse().unwrap();
    let mut raw = match Raw::try_login_from(port, source, user, pass).await {
        Ok(raw) => raw,
        Err(e) => return Outcome::Refused(e),
    };
    let rows = raw
        .query("SELECT CURRENT_USER()")
        .await
        .expect("CURRENT_USER()");
    let account = rows[0][0].clone().expect("not NULL");
    let create_db = raw
        .query("CREATE DATABASE IF NOT EXISTS matrix_probe")
        .await
        .map(|_| ())
        .map_err(|(code, _)| code);
    Outcome::LoggedIn { account, create_db }
}

/// One MariaDB with a proxy over TCP and one over its socket.
struct Server {
    name: String,
    db: Db,
    tcp: ProxyHandle,
    socket: ProxyHandle,
}

async fn server(resolve_names: bool, networks: &str) -> Server {
    server_with(resolve_names, networks, SETUP).await
}

async fn server_with(resolve_names: bool, networks: &str, setup: &str) -> Server {
    let db = Db::start_with(Options {
        resolve_names,
        extra_args: vec![
            format!("--proxy-protocol-networks={networks}"),
            "--max-connect-errors=1000000".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut root = db.root().await;
    root.query_drop(setup).await.expect("accounts");
    root.disconnect().await.ok();
    let tcp = Node::proxy_for(&db, false).await;
    let socket = Node::proxy_for(&db, true).await;
    Server {
        name: format!(
            "skip_name_resolve={} proxy_protocol_networks={networks}",
            !resolve_names
        ),
        db,
        tcp,
        socket,
    }
}

#[derive(Default, Debug)]
struct Tally {
    identical: usize,
    refused_by_proxy: usize,
}

/// Compare every login through `port` with the direct one; `proxied`: the proxy uses
/// the PROXY protocol, so the outcomes must be identical.
async fn compare(s: &Server, via: &str, port: u16, proxied: bool, tally: &mut Tally) {
    for (user, passwords) in LOGINS {
        for pass in *passwords {
            for from in FROM {
                let direct = outcome(s.db.port(), from, user, pass).await;
                let through = outcome(port, from, user, pass).await;
                let case = format!("{} via {via}: '{user}'/{pass} from {from}", s.name);
                if through == direct {
                    tally.identical += 1;
                    continue;
                }
                assert!(
                    !proxied,
                    "{case}: direct {direct:?}, through the proxy {through:?}"
                );
                match (&direct, &through) {
                    (Outcome::LoggedIn { .. }, Outcome::Refused((1045, msg))) => {
                        assert!(msg.starts_with("Access denied for user"), "{case}: {msg}");
                        tally.refused_by_proxy += 1;
                    }
                    _ => panic!("{case}: direct {direct:?}, through the proxy {through:?}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_gets_mariadbs_account_or_is_refused() {
    // proxy_protocol_networks decides which of the two proxies may send PROXY headers:
    // 'localhost' covers the socket, '127.0.0.1' the proxy's TCP connections.
    let (s1, s2, s3, s4) = tokio::join!(
        server(true, "localhost"),
        server(true, "127.0.0.1"),
        server(false, "localhost"),
        server(false, "127.0.0.1"),
    );
    let mut verify = Tally::default();
    let mut proxied = Tally::default();
    for s in [&s1, &s2, &s3, &s4] {
        let socket_has_header = s.name.ends_with("localhost");
        // Over the socket with skip_name_resolve MariaDB matches `localhost` accounts
        // despite the PROXY header, so the proxy checks CURRENT_USER() there too.
        let socket_strict = socket_has_header && s.name.starts_with("skip_name_resolve=false");
        let tcp = s.tcp.local_addr.port();
        let socket = s.socket.local_addr.port();
        if socket_has_header {
            compare(s, "tcp", tcp, false, &mut verify).await;
            let t = if socket_strict {
                &mut proxied
            } else {
                &mut verify
            };
            compare(s, "socket", socket, socket_strict, t).await;
        } else {
            compare(s, "tcp", tcp, true, &mut proxied).await;
            compare(s, "socket", socket, false, &mut verify).await;
        }
    }
    eprintln!("PROXY protocol: {proxied:?}; CURRENT_USER() check: {verify:?}");
    assert_eq!(proxied.refused_by_proxy, 0);
    // The check must have had something to refuse, or the matrix proves nothing.
    assert!(verify.refused_by_proxy > 10, "{verify:?}");
    assert!(verify.identical > 50, "{verify:?}");
}

/// The escalation that was reported: `a` has ALL on `localhost` and SELECT on `%`, the
/// same password on both. From 127.0.0.2 MariaDB gives it `a@%`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_client_never_gets_the_localhost_account() {
    let esc = "CREATE DATABASE app;
        CREATE USER a@'localhost' IDENTIFIED BY 'same';
        GRANT ALL PRIVILEGES ON *.* TO a@'localhost';
        CREATE USER a@'%' IDENTIFIED BY 'same';
        GRANT SELECT ON app.* TO a@'%';";
    // Name resolution on, as MariaDB's default.
    let s = server_with(true, "localhost", esc).await;
    let direct = outcome(s.db.port(), "127.0.0.2", "a", "same").await;
    assert_eq!(
        direct,
        Outcome::LoggedIn {
            account: "a@%".into(),
            create_db: Err(1044)
        }
    );
    // Over TCP without the PROXY protocol MariaDB would match the proxy's own login to
    // a@localhost: the session is refused instead.
    match outcome(s.tcp.local_addr.port(), "127.0.0.2", "a", "same").await {
        Outcome::Refused((1045, msg)) => {
            assert_eq!(
                msg,
                "Access denied for user 'a'@'127.0.0.2' (using password: YES)"
            )
        }
        other => panic!("{other:?}"),
    }
    // Over the socket with the PROXY protocol MariaDB matches the client's address.
    assert_eq!(
        outcome(s.socket.local_addr.port(), "127.0.0.2", "a", "same").await,
        direct
    );
}

/// `b@localhost` (pw-local) and `b@%` (pw-any) with skip_name_resolve ON: from
/// 127.0.0.1 only pw-any works, because MariaDB does not call 127.0.0.1 `localhost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_not_localhost_without_name_resolution() {
    let dual = "CREATE USER b@'localhost' IDENTIFIED BY 'pw-local';
        CREATE USER b@'%' IDENTIFIED BY 'pw-any';";
    let s = server_with(false, "127.0.0.1", dual).await;
    for port in [s.db.port(), s.tcp.local_addr.port()] {
        assert_eq!(
            outcome(port, "127.0.0.1", "b", "pw-any").await,
            Outcome::LoggedIn {
                account: "b@%".into(),
                create_db: Err(1044)
            }
        );
        assert!(matches!(
            outcome(port, "127.0.0.1", "b", "pw-local").await,
            Outcome::Refused((1045, _))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_no_account_matches_gets_1130_as_from_mariadb() {
    let db = Db::start().await;
    let mut root = db.root().await;
    // MariaDB lets every host through once a '%' account existed, until the next
    // FLUSH PRIVILEGES.
    root.query_drop("DROP USER app@'%'; CREATE USER only1@'127.0.0.1'; FLUSH PRIVILEGES")
        .await
        .unwrap();
    root.disconnect().await.ok();
    let proxy = Node::proxy_for(&db, false).await;
    let from: IpAddr = "127.0.0.2".parse().unwrap();
    let direct = Raw::try_login_from(db.port(), from, "only1", "")
        .await
        .err();
    let through = Raw::try_login_from(proxy.local_addr.port(), from, "only1", "")
        .await
        .err();
    assert_eq!(
        direct,
        Some((
            1130,
            "Host '127.0.0.2' is not allowed to connect to this MariaDB server".into()
        ))
    );
    assert_eq!(through, direct);
}

/// COM_CHANGE_USER to an account MariaDB would not give the proxy's address is
/// refused too, not run as that other account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_user_checks_the_account_too() {
    let setup = "CREATE USER a@'localhost' IDENTIFIED BY 'same';
        CREATE USER a@'%' IDENTIFIED BY 'same';
        CREATE USER e@'127.0.0.0/255.255.255.0' IDENTIFIED BY 'e-mask';";
    let s = server_with(true, "localhost", setup).await;
    let from: IpAddr = "127.0.0.2".parse().unwrap();
    // e@'127.0.0.0/255.255.255.0' matches the client and the proxy's own address alike.
    let mut direct = Raw::try_login_from(s.db.port(), from, "e", "e-mask")
        .await
        .unwrap();
    let mut through = Raw::try_login_from(s.tcp.local_addr.port(), from, "e", "e-mask")
        .await
        .unwrap();
    let who = |rows: Vec<Vec<Option<String>>>| rows[0][0].clone();
    assert_eq!(
        who(through.query("SELECT CURRENT_USER()").await.unwrap()).as_deref(),
        Some("e@127.0.0.0/255.255.255.0")
    );
    // Directly, `a` from 127.0.0.2 becomes a@%; the proxy's own login would become
    // a@localhost, so the proxy refuses rather than run the session as that.
    direct.change_user("a", "same").await.unwrap();
    assert_eq!(
        who(direct.query("SELECT CURRENT_USER()").await.unwrap()).as_deref(),
        Some("a@%")
    );
    let refused = through.change_user("a", "same").await;
    assert_eq!(
        refused,
        Err((
            1045,
            "Access denied for user 'a'@'127.0.0.2' (using password: YES)".into()
        ))
    );
    // Through the socket proxy (PROXY protocol) the change gives what MariaDB gives.
    let mut proxied = Raw::try_login_from(s.socket.local_addr.port(), from, "e", "e-mask")
        .await
        .unwrap();
    proxied.change_user("a", "same").await.unwrap();
    assert_eq!(
        who(proxied.query("SELECT CURRENT_USER()").await.unwrap()).as_deref(),
        Some("a@%")
    );
}
