//! `sql::classify` on the proxy's hot path: every COM_QUERY goes through it.
//!
//! `cargo bench --bench classify -- --quick`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;
use wolfscale::sql::classify;

/// sysbench oltp_read_only's point select.
const POINT_SELECT: &str = "SELECT c FROM sbtest1 WHERE id=?";

/// A typical ORM insert.
const INSERT: &str = "INSERT INTO `users` (`name`, `email`, `created_at`, `updated_at`) \
     VALUES ('David', 'david@example.com', '2024-01-01 00:00:00.000000', \
     '2024-01-01 00:00:00.000000')";

/// A typical ORM update (also goes through the full parse).
const UPDATE: &str = "UPDATE `users` SET `users`.`name` = 'Dave', `users`.`updated_at` = \
     '2024-01-02 00:00:00.000000' WHERE `users`.`id` = 1";

/// A ~2 KB Hibernate-style select: many aliased columns, joins, IN list.
fn orm_select() -> String {
    let cols: Vec<String> = (0..40)
        .map(|i| format!("order0_.column_{i} as column{i}_1_0_"))
        .collect();
    let ids: Vec<String> = (0..30).map(|i| (1000 + i).to_string()).collect();
    let sql = format!(
        "select {}, customer1_.id as id1_2_1_, customer1_.email as email2_2_1_ \
         from orders order0_ inner join customers customer1_ on order0_.customer_id=customer1_.id \
         left outer join order_lines lines2_ on order0_.id=lines2_.order_id \
         where order0_.status in ('NEW', 'PAID') and order0_.id in ({}) \
         and customer1_.country=? order by order0_.created_at desc limit ? offset ?",
        cols.join(", "),
        ids.join(", ")
    );
    debug_assert!(sql.len() > 1800, "{}", sql.len());
    sql
}

fn bench_classify(c: &mut Criterion) {
    let orm = orm_select();
    let cases: [(&str, &str); 4] = [
        ("point_select", POINT_SELECT),
        ("insert", INSERT),
        ("update", UPDATE),
        ("orm_select_2kb", &orm),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, sql) in cases {
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_function(name, |b| b.iter(|| classify(black_box(sql))));
    }
    group.finish();
}

/// What a full sqlparser parse of the same statements costs: what the read
/// fast path saves.
fn bench_parse_baseline(c: &mut Criterion) {
    let orm = orm_select();
    let mut group = c.benchmark_group("sqlparser_baseline");
    for (name, sql) in [("point_select", POINT_SELECT), ("orm_select_2kb", &orm)] {
        group.bench_function(name, |b| {
            b.iter(|| Parser::parse_sql(&MySqlDialect {}, black_box(sql)).map(|s| s.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_classify, bench_parse_baseline);
criterion_main!(benches);
