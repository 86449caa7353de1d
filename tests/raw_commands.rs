//! Command by command, the proxy's reply must be the bytes MariaDB itself sends: the
//! same command sequence runs on a direct connection and through the proxy, and every
//! reply packet (sequence id included) is compared. This covers the commands drivers
//! rarely exercise: COM_FIELD_LIST, COM_STMT_SEND_LONG_DATA, cursors and COM_STMT_FETCH,
//! COM_STMT_RESET, COM_SET_OPTION, COM_STATISTICS, COM_INIT_DB, COM_PROCESS_KILL.

mod common;

use common::raw::{Raw, Reply};
use common::{Node, APP_PASSWORD};
use mysql_async::prelude::Queryable;
use wolfscale::protocol::response::{Expect, Scanner};

fn stmt_id(reply: &[(u8, Vec<u8>)]) -> [u8; 4] {
    let ok = &reply[0].1;
    assert_eq!(ok[0], 0, "prepare failed: {reply:?}");
    [ok[1], ok[2], ok[3], ok[4]]
}

/// Run the script on one connection; returns each command's reply.
async fn script(raw: &mut Raw) -> Vec<Vec<(u8, Vec<u8>)>> {
    let mut replies = Vec::new();
    let q = |sql: &str| [&[0x03][..], sql.as_bytes()].concat();
    replies.push(
        raw.exchange(
            &q("SELECT a, b FROM test.r ORDER BY a"),
            Some(Expect::Query),
        )
        .await,
    );
    replies.push(
        raw.exchange(&q("SELECT 1; SELECT 'two', NULL"), Some(Expect::Query))
            .await,
    );
    replies.push(
        raw.exchange(&[0x02, b't', b'e', b's', b't'], Some(Expect::Single))
            .await,
    ); // COM_INIT_DB
    replies.push(raw.exchange(b"\x04r\x00", Some(Expect::FieldList)).await); // COM_FIELD_LIST
    replies.push(raw.exchange(&[0x0E], Some(Expect::Single)).await); // COM_PING
    replies.push(raw.exchange(&[0x1B, 1, 0], Some(Expect::Single)).await); // COM_SET_OPTION multi-statements off
    replies.push(
        raw.exchange(&q("SELECT 1; SELECT 2"), Some(Expect::Query))
            .await,
    ); // now a syntax error
    replies.push(raw.exchange(&[0x1B, 0, 0], Some(Expect::Single)).await); // back on
                                                                           // Prepared statement with a parameter sent as long data.
    let prep = raw
        .exchange(
            b"\x16SELECT CONCAT(?, '!') AS s, a FROM r ORDER BY a",
            Some(Expect::Prepare),
        )
        .await;
    let id = stmt_id(&prep);
    replies.push(prep);
    let mut long = vec![0x18];
    long.extend_from_slice(&id);
    long.extend_from_slice(&[0, 0]);
    long.extend_from_slice(b"long data ");
    replies.push(raw.exchange(&long, None).await); // no reply expected
    replies.push(raw.exchange(&long, None).await);
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id);
    exec.push(0); // no cursor
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0xFE, 0]); // null bitmap, new params bound, MYSQL_TYPE_STRING
    replies.push(raw.exchange(&exec, Some(Expect::execute(&exec))).await);
    let mut reset = vec![0x1A];
    reset.extend_from_slice(&id);
    replies.push(raw.exchange(&reset, Some(Expect::Single)).await); // COM_STMT_RESET
                                                                    // A read-only cursor, fetched two rows at a time.
    let mut cursor = exec.clone();
    cursor[5] = 1;
    cursor.truncate(10);
    cursor.extend_from_slice(&[0, 1, 0xFE, 0, 3, b'a', b'b', b'c']);
    replies.push(raw.exchange(&cursor, Some(Expect::execute(&cursor))).await);
    let mut fetch = vec![0x1C];
    fetch.extend_from_slice(&id);
    fetch.extend_from_slice(&2u32.to_le_bytes());
    for _ in 0..3 {
        replies.push(raw.exchange(&fetch, Some(Expect::Fetch)).await);
    }
    let mut close = vec![0x19];
    close.extend_from_slice(&id);
    replies.push(raw.exchange(&close, None).await); // no reply
    replies.push(raw.exchange(&exec, Some(Expect::execute(&exec))).await); // unknown statement now
    replies.push(
        raw.exchange(&q("SELECT * FROM missing"), Some(Expect::Query))
            .await,
    );
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_match_mariadb_byte_for_byte() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "CREATE TABLE test.r (a INT PRIMARY KEY, b VARCHAR(10) CHARACTER SET utf8mb4);
         INSERT INTO test.r VALUES (1,'x'),(2,NULL),(3,'zzz'),(4,'w'),(5,'v')",
    )
    .await
    .unwrap();
    let mut direct = Raw::login(node.db.port(), "app", APP_PASSWORD).await;
    let mut proxied = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    let want = script(&mut direct).await;
    let got = script(&mut proxied).await;
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "reply #{i} differs");
    }
    // Sanity: the script really produced rows, errors and cursor batches.
    assert!(want[0].len() > 5);
    assert_eq!(want[6][0].1[0], 0xFF, "multi-statements were switched off");
    assert_eq!(want[14].len(), 3, "two rows and an EOF per fetch");
    assert_eq!(want.last().unwrap()[0].1[0], 0xFF);
    // After the exchange both connections are still in step: a final query agrees.
    let last = [&[0x03][..], b"SELECT COUNT(*) FROM r"].concat();
    assert_eq!(
        direct.exchange(&last, Some(Expect::Query)).await,
        proxied.exchange(&last, Some(Expect::Query)).await
    );
    // COM_STATISTICS answers with one text packet.
    let stats = proxied.exchange(&[0x09], Some(Expect::Single)).await;
    assert_eq!(stats.len(), 1);
    assert!(String::from_utf8_lossy(&stats[0].1).starts_with("Uptime:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn com_process_kill_maps_proxy_ids() {
    let node = Node::start().await;
    let victim = node.client(None).await;
    let victim_id = victim.id();
    let mut raw = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    let mut kill = vec![0x0C];
    kill.extend_from_slice(&victim_id.to_le_bytes());
    let reply = raw.exchange(&kill, Some(Expect::Single)).await;
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].1[0], 0x00, "{reply:?}");
    let mut victim = victim;
    assert!(
        victim.query_drop("SELECT 1").await.is_err(),
        "victim connection was killed"
    );
    let mut unknown = vec![0x0C];
    unknown.extend_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let reply = raw.exchange(&unknown, Some(Expect::Single)).await;
    assert_eq!(u16::from_le_bytes([reply[0].1[1], reply[0].1[2]]), 1094);
}

/// COM_STMT_BULK_EXECUTE (MariaDB's array binding): the same bytes as MariaDB's reply,
/// and the rows really land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_execute_matches_mariadb() {
    const BULK_OPERATIONS: u32 = 0x4;
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop("CREATE TABLE test.bulk (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    let mut replies = Vec::new();
    for (port, base) in [(node.db.port(), 0i32), (node.proxy_port(), 1000)] {
        let mut raw = Raw::login_with(port, "app", APP_PASSWORD, BULK_OPERATIONS).await;
        let prep = raw
            .exchange(
                b"\x16INSERT INTO test.bulk VALUES (?, ?)",
                Some(Expect::Prepare),
            )
            .await;
        let id = stmt_id(&prep);
        let mut bulk = vec![0xFA];
        bulk.extend_from_slice(&id);
        bulk.extend_from_slice(&128u16.to_le_bytes()); // types sent with the request
        bulk.extend_from_slice(&[0x03, 0, 0xFE, 0]); // INT, STRING
        for i in 0..50i32 {
            bulk.push(0);
            bulk.extend_from_slice(&(base + i).to_le_bytes());
            bulk.push(0);
            let v = format!("v{i}");
            bulk.push(v.len() as u8);
            bulk.extend_from_slice(v.as_bytes());
        }
        let reply = raw.exchange(&bulk, Some(Expect::execute(&bulk))).await;
        assert_eq!(reply[0].1[0], 0x00, "bulk insert failed: {reply:?}");
        // A duplicate key in the batch is MariaDB's ERR 1062, forwarded as is (the
        // message names the key value, which differs between the two runs).
        let dup = raw.exchange(&bulk, Some(Expect::execute(&bulk))).await;
        assert_eq!(&dup[0].1[..3], &[0xFF, 0x26, 0x04], "{dup:?}");
        replies.push(reply);
    }
    assert_eq!(replies[0], replies[1]);
    let n: Option<i64> = root
        .query_first("SELECT COUNT(*) FROM test.bulk WHERE id >= 1000")
        .await
        .unwrap();
    assert_eq!(n, Some(50));
}

/// Read packets until the peer has been quiet for `idle`: everything the server sent,
/// without asking the reply scanner where the reply ends.
async fn read_until_quiet(raw: &mut Raw, idle: std::time::Duration) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match raw.read(idle).await {
            Reply::Packet(seq, p) => out.push((seq, p)),
            Reply::Timeout => return out,
            Reply::Closed => panic!("connection closed after {out:?}"),
        }
    }
}

/// After how many of `packets` the reply scanner says the reply is complete.
fn scanned_len(expect: Expect, packets: &[(u8, Vec<u8>)]) -> Option<usize> {
    let mut scanner = Scanner::new(expect);
    for (i, (seq, p)) in packets.iter().enumerate() {
        let mut framed = bytes::BytesMut::new();
        wolfscale::protocol::packet::encode_packet(&mut framed, *seq, p);
        scanner.scan(&framed).expect("scannable reply");
        if scanner.is_done() {
            return Some(i + 1);
        }
    }
    None
}

/// A prepared `CALL` of a procedure that opens a cursor of its own (MariaDB's
/// main.sp-cursor): every EOF of the CALL's result sets carries
/// SERVER_STATUS_CURSOR_EXISTS, from the procedure's cursor, yet rows and more results
/// follow. With or without a client-requested cursor (flags 0 and CURSOR_TYPE_READ_ONLY)
/// the proxy must forward the whole reply; a real cursor (a prepared SELECT with
/// CURSOR_TYPE_READ_ONLY) still ends after its column definitions. MariaDB's reply is
/// read without the scanner, until the connection goes quiet, so a scanner that stops
/// early fails here instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_call_with_procedure_cursor_matches_mariadb() {
    use std::time::Duration;
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "CREATE TABLE test.t1 (a INT);
         INSERT INTO test.t1 VALUES (1), (2);
         CREATE PROCEDURE test.p1(a INT)
         BEGIN
           DECLARE done INT DEFAULT 0;
           DECLARE v_a INT;
           DECLARE c CURSOR (p_a VARCHAR(32)) FOR SELECT p_a FROM t1;
           DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
           OPEN c(a);
           read_loop: LOOP
             FETCH c INTO v_a;
             IF done THEN LEAVE read_loop; END IF;
             SELECT v_a;
           END LOOP;
           CLOSE c;
         END;
         CREATE PROCEDURE test.p2() SELECT a FROM t1",
    )
    .await
    .unwrap();
    // (statement, COM_STMT_EXECUTE flags byte, packets MariaDB sends)
    let cases: [(&[u8], u8, usize); 8] = [
        (b"CALL p1(1)", 0, 11),
        (b"CALL p1(1)", 1, 11),
        (b"CALL p2()", 0, 7),
        (b"CALL p2()", 1, 7),
        (b"SELECT a FROM t1", 0, 6),
        (b"SELECT a FROM t1", 1, 3), // a real cursor: column definitions only
        (b"SELECT 1", 0, 5),
        (b"SELECT 1", 1, 3),
    ];
    let mut direct = Raw::login(node.db.port(), "app", APP_PASSWORD).await;
    let mut proxied = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    for raw in [&mut direct, &mut proxied] {
        let init = raw.exchange(b"\x02test", Some(Expect::Single)).await;
        assert_eq!(init[0].1[0], 0, "{init:?}");
    }
    for (sql, flags, packets) in cases {
        let what = format!("{} flags={flags}", String::from_utf8_lossy(sql));
        let prepare = [&[0x16][..], sql].concat();
        let want_prep = direct.exchange(&prepare, Some(Expect::Prepare)).await;
        let got_prep = proxied.exchange(&prepare, Some(Expect::Prepare)).await;
        assert_eq!(want_prep, got_prep, "{what}: prepare");
        let id = stmt_id(&want_prep);
        let mut exec = vec![0x17];
        exec.extend_from_slice(&id);
        exec.push(flags);
        exec.extend_from_slice(&1u32.to_le_bytes());
        let expect = Expect::execute(&exec);
        assert_eq!(expect, Expect::Execute { cursor: flags == 1 });
        // What MariaDB itself sends, read until the connection goes quiet.
        direct.send(0, &exec).await;
        let want = read_until_quiet(&mut direct, Duration::from_millis(700)).await;
        assert_eq!(want.len(), packets, "{what}: MariaDB's reply {want:?}");
        assert_eq!(
            scanned_len(expect, &want),
            Some(want.len()),
            "{what}: the scanner ends MariaDB's reply at its last packet"
        );
        // Through the proxy: the same packets, and the reply is complete.
        let got = tokio::time::timeout(
            Duration::from_secs(15),
            proxied.exchange(&exec, Some(expect)),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: reply through the proxy hangs"));
        assert_eq!(got, want, "{what}: reply through the proxy");
        let extra = read_until_quiet(&mut proxied, Duration::from_millis(200)).await;
        assert!(extra.is_empty(), "{what}: stray packets {extra:?}");
        if flags == 1 {
            // libmariadb takes CURSOR_EXISTS plus its own request for a cursor to mean
            // one was opened, so it may fetch: rows from a real cursor, ERR 1421 (no
            // open cursor) after a CALL. Either way the same bytes.
            let mut fetch = vec![0x1C];
            fetch.extend_from_slice(&id);
            fetch.extend_from_slice(&10u32.to_le_bytes());
            let want = direct.exchange(&fetch, Some(Expect::Fetch)).await;
            let got = tokio::time::timeout(
                Duration::from_secs(15),
                proxied.exchange(&fetch, Some(Expect::Fetch)),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: fetch through the proxy hangs"));
            assert_eq!(got, want, "{what}: fetch");
            if sql.starts_with(b"CALL") {
                assert_eq!(Reply::Packet(1, want[0].1.clone()).err_code(), Some(1421));
            }
        }
        let mut close = vec![0x19];
        close.extend_from_slice(&id);
        direct.exchange(&close, None).await;
        proxied.exchange(&close, None).await;
    }
    // Both sessions are still in step: a plain query answers the same.
    let last = [&[0x03][..], b"SELECT COUNT(*) FROM t1"].concat();
    let want = tokio::time::timeout(
        Duration::from_secs(15),
        direct.exchange(&last, Some(Expect::Query)),
    )
    .await
    .expect("direct query");
    let got = tokio::time::timeout(
        Duration::from_secs(15),
        proxied.exchange(&last, Some(Expect::Query)),
    )
    .await
    .expect("proxied query hangs");
    assert_eq!(want, got);
}

/// A COM_STMT_EXECUTE of statement `id` with one parameter of `ty` (type, flags)
/// holding `value`; `ty: None` leaves the types out (the previous execution's hold).
fn execute_one(id: [u8; 4], ty: Option<(u8, u8)>, value: Option<&[u8]>) -> Vec<u8> {
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id);
    exec.push(0);
    exec.extend_from_slice(&1u32.to_le_bytes());
    exec.push(if value.is_none() { 1 } else { 0 }); // null bitmap
    match ty {
        Some((t, flags)) => exec.extend_from_slice(&[1, t, flags]),
        None => exec.push(0),
    }
    exec.extend_from_slice(value.unwrap_or_default());
    exec
}

fn lenenc_str(s: &str) -> Vec<u8> {
    [&[s.len() as u8][..], s.as_bytes()].concat()
}

/// Prepared KILLs answer with MariaDB's own bytes: the prepare reply (one parameter,
/// or none for a literal id), and each execution's, with the id bound as an integer,
/// NULL, a string, long data, a double (rounded) and a decimal (rounded), with and
/// without the types resent. None of the ids names a connection, so each execution is
/// MariaDB's ERR 1094 for the id it took; which id shows that the value was read as
/// MariaDB reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_kill_replies_match_mariadb_byte_for_byte() {
    const LONGLONG: u8 = 8;
    const DOUBLE: u8 = 5;
    const NEWDECIMAL: u8 = 246;
    const STRING: u8 = 0xFE;
    const UNSIGNED: u8 = 0x80;
    let node = Node::start().await;
    let mut replies = Vec::new();
    // Both logged in first: MariaDB numbers prepared statements per connection, but a
    // new connection may continue the count of one that just closed.
    let mut direct = Raw::login(node.db.port(), "app", APP_PASSWORD).await;
    let mut proxied = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    for raw in [&mut direct, &mut proxied] {
        let mut got = Vec::new();
        let prep = raw
            .exchange(b"\x16KILL QUERY ?", Some(Expect::Prepare))
            .await;
        let id = stmt_id(&prep);
        got.push(prep);
        // An execution's reply is kept; long data has none.
        let mut run = async |cmd: Vec<u8>| {
            let expect = (cmd[0] == 0x17).then(|| Expect::execute(&cmd));
            let reply = raw.exchange(&cmd, expect).await;
            if expect.is_some() {
                got.push(reply);
            }
        };
        run(execute_one(
            id,
            Some((LONGLONG, UNSIGNED)),
            Some(&2_147_483_632u64.to_le_bytes()),
        ))
        .await;
        run(execute_one(id, Some((LONGLONG, 0)), None)).await;
        run(execute_one(
            id,
            Some((STRING, 0)),
            Some(&lenenc_str("2147483633")),
        ))
        .await;
        // The types of the previous execution (a string) hold.
        run(execute_one(id, None, Some(&lenenc_str("2147483634")))).await;
        // Long data (no reply), then an execution that takes it. (After a DOUBLE or
        // DECIMAL execution MariaDB reads long data as the stale value of that type.)
        let mut long = vec![0x18];
        long.extend_from_slice(&id);
        long.extend_from_slice(&[0, 0]);
        long.extend_from_slice(b"21474836");
        run(long.clone()).await;
        long.truncate(7);
        long.extend_from_slice(b"38");
        run(long.clone()).await;
        run(execute_one(id, Some((STRING, 0)), Some(&[]))).await;
        run(execute_one(
            id,
            Some((DOUBLE, 0)),
            Some(&2_147_483_635.5f64.to_le_bytes()),
        ))
        .await;
        run(execute_one(
            id,
            Some((NEWDECIMAL, 0)),
            Some(&lenenc_str("2147483636.5")),
        ))
        .await;
        let mut close = vec![0x19];
        close.extend_from_slice(&id);
        raw.exchange(&close, None).await;
        // A literal id: no parameter.
        let prep = raw
            .exchange(b"\x16KILL 2147483639", Some(Expect::Prepare))
            .await;
        let id = stmt_id(&prep);
        got.push(prep);
        let mut exec = vec![0x17];
        exec.extend_from_slice(&id);
        exec.push(0);
        exec.extend_from_slice(&1u32.to_le_bytes());
        got.push(raw.exchange(&exec, Some(Expect::execute(&exec))).await);
        // The connection is in step afterwards.
        got.push(raw.exchange(b"\x03SELECT 1", Some(Expect::Query)).await);
        replies.push(got);
    }
    let (want, got) = (&replies[0], &replies[1]);
    assert_eq!(want.len(), got.len());
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(w, g, "reply #{i} differs");
    }
    // What MariaDB said, so that a change there shows.
    let said = |i: usize| {
        let p = &want[i][0].1;
        assert_eq!(p[0], 0xFF, "#{i}: {p:?}");
        common::raw::err_of(p)
    };
    let unknown = |n: u64| (1094, format!("Unknown thread id: {n}"));
    assert_eq!(said(1), unknown(2_147_483_632));
    assert_eq!(said(2), unknown(0));
    assert_eq!(said(3), unknown(2_147_483_633));
    assert_eq!(said(4), unknown(2_147_483_634));
    assert_eq!(said(5), unknown(2_147_483_638)); // long data
    assert_eq!(said(6), unknown(2_147_483_636)); // a double rounds half to even
    assert_eq!(said(7), unknown(2_147_483_637)); // a decimal rounds half up
    assert_eq!(said(9), unknown(2_147_483_639));
    // The prepare replies: one parameter, then none.
    assert_eq!(u16::from_le_bytes([want[0][0].1[7], want[0][0].1[8]]), 1);
    assert_eq!(u16::from_le_bytes([want[8][0].1[7], want[8][0].1[8]]), 0);
}

/// What one connection saw of a prepared LOAD DATA LOCAL INFILE: the prepare reply, the
/// file request, the reply after the file, the second request, the reply after an empty
/// file, and a query's reply afterwards.
type Exchange = (
    Vec<(u8, Vec<u8>)>,
    Reply,
    Reply,
    Reply,
    Reply,
    Vec<(u8, Vec<u8>)>,
);

/// A prepared LOAD DATA LOCAL INFILE (COM_STMT_PREPARE + COM_STMT_EXECUTE): MariaDB asks
/// for the file in the execute's reply, as for a query; through the proxy the request,
/// the file's packets and the final OK pass as they do directly, and the rows land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_load_data_local_infile_matches_mariadb() {
    use std::time::Duration;
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "SET GLOBAL local_infile = 1;
         CREATE TABLE test.li (id INT PRIMARY KEY, name VARCHAR(20))",
    )
    .await
    .unwrap();
    let mut replies = Vec::new();
    // Both logged in first: MariaDB numbers prepared statements per connection, but a
    // new connection may inherit the counter of one that just closed.
    let mut direct = Raw::login(node.db.port(), "app", APP_PASSWORD).await;
    let mut proxied = Raw::login(node.proxy_port(), "app", APP_PASSWORD).await;
    for (raw, base) in [(&mut direct, 0), (&mut proxied, 1000)] {
        let sql = format!(
            "LOAD DATA LOCAL INFILE 'rows-{base}.csv' INTO TABLE test.li FIELDS TERMINATED BY ','"
        );
        let prep = raw
            .exchange(
                &[&[0x16][..], sql.as_bytes()].concat(),
                Some(Expect::Prepare),
            )
            .await;
        let id = stmt_id(&prep);
        let mut exec = vec![0x17];
        exec.extend_from_slice(&id);
        exec.push(0);
        exec.extend_from_slice(&1u32.to_le_bytes());
        raw.send(0, &exec).await;
        let asked = raw.read(Duration::from_secs(10)).await;
        let Reply::Packet(1, ref request) = asked else {
            panic!("no file request: {asked:?}");
        };
        assert_eq!(request[0], 0xFB, "{request:?}");
        // The file, in two packets, then the empty packet that ends it.
        let rows: Vec<String> = (0..200).map(|i| format!("{},r{i}\n", base + i)).collect();
        raw.send(2, rows[..100].concat().as_bytes()).await;
        raw.send(3, rows[100..].concat().as_bytes()).await;
        raw.send(4, &[]).await;
        let done = raw.read(Duration::from_secs(10)).await;
        // Records: 200  Deleted: 0  Skipped: 0  Warnings: 0
        let Reply::Packet(5, ref ok) = done else {
            panic!("no reply after the file: {done:?}");
        };
        assert_eq!(ok[..2], [0x00, 200], "{ok:?}");
        // Executed again, it asks again.
        raw.send(0, &exec).await;
        let again = raw.read(Duration::from_secs(10)).await;
        assert!(
            matches!(&again, Reply::Packet(1, p) if p[0] == 0xFB),
            "{again:?}"
        );
        raw.send(2, &[]).await;
        let empty = raw.read(Duration::from_secs(10)).await;
        let after = raw.exchange(b"\x03SELECT 1", Some(Expect::Query)).await;
        replies.push((prep, asked, done, again, empty, after));
    }
    let masked = |r: &Exchange| {
        // The file names differ (rows-0.csv, rows-1000.csv).
        let name = |reply: &Reply| match reply {
            Reply::Packet(seq, p) => Reply::Packet(*seq, p[..1].to_vec()),
            other => panic!("{other:?}"),
        };
        (
            r.0.clone(),
            name(&r.1),
            format!("{:?}", r.2),
            name(&r.3),
            format!("{:?}", r.4),
            r.5.clone(),
        )
    };
    assert_eq!(masked(&replies[0]), masked(&replies[1]));
    let n: Option<(i64, i64)> = root
        .query_first("SELECT COUNT(*), SUM(id >= 1000) FROM test.li")
        .await
        .unwrap();
    assert_eq!(n, Some((400, 200)));
}

/// The same through a driver: mysql_async prepares the LOAD DATA LOCAL INFILE and
/// executes it, answering the file request from its handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_load_data_local_infile_from_a_driver() {
    let node = Node::start().await;
    let mut root = node.db.root().await;
    root.query_drop(
        "SET GLOBAL local_infile = 1;
         CREATE TABLE test.li (id INT PRIMARY KEY, name VARCHAR(20))",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let body: String = (0..3000).map(|i| format!("{i},name-{i}\n")).collect();
    std::fs::write(&file, &body).unwrap();
    let opts =
        mysql_async::OptsBuilder::from_opts(node.proxy_opts("app", APP_PASSWORD, Some("test")))
            .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new(vec![
                file.clone()
            ])));
    let mut c = mysql_async::Conn::new(opts).await.unwrap();
    let sql = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE li FIELDS TERMINATED BY ','",
        file.display()
    );
    let stmt = c.prep(&sql).await.expect("prepare LOAD DATA");
    c.exec_drop(&stmt, ()).await.expect("execute LOAD DATA");
    assert_eq!(c.affected_rows(), 3000);
    // Again: every key is taken now; with LOCAL, MariaDB skips duplicates with a
    // warning each.
    c.exec_drop(&stmt, ())
        .await
        .expect("execute LOAD DATA again");
    assert_eq!((c.affected_rows(), c.get_warnings()), (0, 3000));
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM li").await.unwrap();
    assert_eq!(n, Some(3000));
}
