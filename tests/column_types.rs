//! Every MariaDB column type, read through the proxy and directly: the decoded values
//! (raw bytes for the text protocol, typed values for the binary one) and the full
//! column metadata must be identical.

mod common;

use common::Node;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};

const CREATE: &str = r#"
CREATE TABLE every_type (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, bi BIGINT, biu BIGINT UNSIGNED,
  de DECIMAL(20,6), fl FLOAT, db DOUBLE,
  d DATE, t TIME(3), dt DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
  c4 CHAR(4) CHARACTER SET utf8mb4, vc VARCHAR(100) CHARACTER SET utf8mb4, tx TEXT CHARACTER SET utf8mb4,
  l1 VARCHAR(50) CHARACTER SET latin1, l1t TEXT CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(20), bl BLOB, lb LONGBLOB,
  bt BIT(10), en ENUM('red','green','blue'), st SET('a','b','c'),
  js JSON, geo GEOMETRY, pt POINT,
  inet INET6, u UUID
) ENGINE=InnoDB
"#;

const ROWS: &str = r#"
INSERT INTO every_type VALUES
 (1, -128, 255, -32768, -8388608, -2147483648, -9223372036854775808, 18446744073709551615,
  -12345678901234.123456, 3.14159, 2.718281828459045,
  '2024-02-29', '-838:59:58.999', '2024-12-31 23:59:59.999999', '2038-01-19 03:14:07.123456', 2155,
  'ab', 'héllo wörld 🐺', REPEAT('texte ', 100),
  'caf\xe9', 'latin-1 text',
  x'00ff10ab', x'deadbeef', x'000102', REPEAT(x'ab', 70000),
  b'1010101010', 'green', 'a,c',
  '{"k": [1, 2.5, "x", null, true]}', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), POINT(1.5, -2.25),
  '2001:db8::ff00:42:8329', '123e4567-e89b-12d3-a456-426655440000'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '0000-00-00', '00:00:00', '1000-01-01 00:00:00', NULL, 1901,
  '', '', '', '', '', x'00000000', x'', x'', x'', b'0', 'red', '', '[]', POINT(0,0), POINT(0,0), '::', '00000000-0000-0000-0000-000000000000')
"#;

/// Column metadata and values of a result, in comparable form.
fn snapshot(rows: &[Row]) -> (Vec<String>, Vec<Vec<Value>>) {
    let cols = rows
        .first()
        .map(|r| r.columns_ref().iter().map(|c| format!("{c:?}")).collect())
        .unwrap_or_default();
    let values = rows.iter().map(|r| r.clone().unwrap()).collect();
    (cols, values)
}

async fn both(direct: &mut Conn, proxied: &mut Conn, sql: &str) {
    let d: Vec<Row> = direct.query(sql).await.unwrap();
    let p: Vec<Row> = proxied.query(sql).await.unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(snapshot(&d), snapshot(&p), "text protocol: {sql}");
    let d: Vec<Row> = direct.exec(sql, ()).await.unwrap();
    let p: Vec<Row> = proxied.exec(sql, ()).await.unwrap();
    assert_eq!(snapshot(&d), snapshot(&p), "binary protocol: {sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_is_identical_through_the_proxy() {
    let node = Node::start().await;
    let mut direct = node.db.direct(Some("test")).await;
    direct
        .query_drop("SET SESSION sql_mode = ''")
        .await
        .unwrap();
    direct.query_drop(CREATE).await.unwrap();
    direct.query_drop(ROWS).await.unwrap();
    let mut proxied = node.client(Some("test")).await;
    both(
        &mut direct,
        &mut proxied,
        "SELECT * FROM every_type ORDER BY id",
    )
    .await;
    // Expressions and aliases (metadata without an origin table).
    both(
        &mut direct,
        &mut proxied,
        "SELECT id, de * 2 AS twice, CONCAT(vc, '!') AS shout, JSON_EXTRACT(js, '$.k[1]') AS j, \
         ST_AsText(geo) AS wkt, HEX(bt) AS bits FROM every_type ORDER BY id",
    )
    .await;
    // Prepared statement with typed parameters of several kinds.
    let params = (1i64, "héllo wörld 🐺", std::f64::consts::E);
    let sql = "SELECT id, vc, db FROM every_type WHERE id = ? OR vc = ? OR db = ?";
    let d: Vec<Row> = direct.exec(sql, params).await.unwrap();
    let p: Vec<Row> = proxied.exec(sql, params).await.unwrap();
    assert_eq!(snapshot(&d), snapshot(&p));
    assert_eq!(d.len(), 1);
}
