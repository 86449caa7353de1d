//! A Rust application on mysql_async that talks to a follower's proxy as it would to
//! MariaDB: it writes (the follower sends the write to the leader), reads its own write
//! back at once on the same connection (read-your-writes, the default `session`
//! consistency), and hands the write's log index to a second connection, as a pooled
//! application would, so that connection sees it too.
//!
//! ```sh
//! cargo run --example follower_client -- mysql://app:secret@10.0.10.12:8007/myapp
//! ```
//!
//! Exits 1 if a read misses the write.

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mysql://root@127.0.0.1:8007/test".into());
    let opts = Opts::from_url(&url)?;
    let mut writer = Conn::new(opts.clone()).await?;
    writer
        .query_drop(
            "CREATE TABLE IF NOT EXISTS example_notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        )
        .await?;
    // An id of the application's own (a Snowflake from the API's GET /id would do too).
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    let body = format!("written through {}", opts.ip_or_hostname());
    writer
        .exec_drop(
            "INSERT INTO example_notes (id, body) VALUES (?, ?)",
            (id, &body),
        )
        .await?;

    // The same connection reads its own write, whatever the follower's lag.
    let mine: Option<String> = writer
        .exec_first("SELECT body FROM example_notes WHERE id = ?", (id,))
        .await?;
    println!("same connection reads: {mine:?}");

    // Another connection (another member of a pool) is given the write's log index.
    let index: u64 = writer
        .query_first("SELECT @@wolfscale_session_index")
        .await?
        .unwrap_or(0);
    let mut reader = Conn::new(opts).await?;
    reader
        .query_drop(format!("SET wolfscale_session_index = {index}"))
        .await?;
    let theirs: Option<String> = reader
        .exec_first("SELECT body FROM example_notes WHERE id = ?", (id,))
        .await?;
    println!("another connection, given index {index}, reads: {theirs:?}");
    writer.disconnect().await?;
    reader.disconnect().await?;
    if mine.as_deref() != Some(body.as_str()) || theirs.as_deref() != Some(body.as_str()) {
        eprintln!("a read missed the write");
        std::process::exit(1);
    }
    println!("ok: id {id}");
    Ok(())
}
