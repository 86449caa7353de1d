//! The data endpoints: `POST /write/{insert,update,delete,upsert,ddl,batch}` and
//! `POST /query`.
//!
//! They are MySQL clients of this node's own proxy, so an API write takes exactly the
//! path a driver's write takes: to the leader (forwarded by a follower over the
//! cluster's member addresses), through the log and a majority, replayed everywhere,
//! with the proxy's determinism rules and its exactly-once retry. Nothing from a
//! request is pasted into SQL:
//!
//! * table and column names are looked up in the live schema (`information_schema`)
//!   and the schema's own spelling is quoted into the statement; a name the schema does
//!   not have is refused before any SQL is built;
//! * values are bound as parameters of a prepared statement;
//! * `/write/ddl` and `/query` take SQL by design: they accept exactly one statement,
//!   of the right class (DDL; a plain read, with `?` parameters bound).
//!
//! Each answer carries the log index of the write (`log_index`): passed back as
//! `min_index` to `/query` on any node, it gives read-your-writes across requests.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Pool, Value};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value as Json_};

use crate::cluster::Cluster;
use crate::config::ReadConsistency;
use crate::sql::StatementClass;

/// Rows `/query` returns at most; the answer says `truncated` past it.
pub const MAX_ROWS: usize = 10_000;

/// Schemas the write endpoints never touch (accounts go through SQL, with the
/// proxy's rules for them; the node's own bookkeeping is not the API's to change).
const SYSTEM_SCHEMAS: [&str; 5] = [
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "wolfscale",
];

/// What the data endpoints need.
#[derive(Clone)]
pub struct Data {
    pub cluster: Arc<Cluster>,
    /// Connections to this node's proxy; `None` when the node runs no proxy.
    pub pool: Option<Pool>,
    /// `[database] database`: the schema of a table named without one.
    pub database: Option<String>,
    /// `[api] id_column`.
    pub id_column: Option<String>,
    /// `[proxy] read_consistency`: a query's level when it names none.
    pub consistency: ReadConsistency,
}

/// An error answer: `{"error": {"code", "message"[, "errno", "sqlstate"][, …]}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// A MariaDB error's number and SQLSTATE, kept as they came.
    pub mysql: Option<(u16, String)>,
    /// More members of the error object (which operation of a batch failed).
    pub extra: Map<String, Json_>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            mysql: None,
            extra: Map::new(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// An error MariaDB would give for the same mistake, with its number and SQLSTATE.
    fn like_mariadb(
        status: StatusCode,
        code: &'static str,
        errno: u16,
        sqlstate: &str,
        message: String,
    ) -> ApiError {
        ApiError {
            mysql: Some((errno, sqlstate.to_string())),
            ..ApiError::new(status, code, message)
        }
    }

    fn with(mut self, key: &str, value: Json_) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), json!(self.code));
        error.insert("message".into(), json!(self.message));
        if let Some((errno, state)) = self.mysql {
            error.insert("errno".into(), json!(errno));
            error.insert("sqlstate".into(), json!(state));
        }
        error.extend(self.extra);
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<mysql_async::Error> for ApiError {
    fn from(e: mysql_async::Error) -> ApiError {
        match e {
            mysql_async::Error::Server(s) => {
                let status = server_status(s.code, &s.state);
                ApiError {
                    mysql: Some((s.code, s.state)),
                    ..ApiError::new(status, "mariadb_error", s.message)
                }
            }
            mysql_async::Error::Driver(
                d @ (mysql_async::DriverError::StmtParamsMismatch { .. }
                | mysql_async::DriverError::StmtParamsNumberExceedsLimit { .. }
                | mysql_async::DriverError::PacketTooLarge),
            ) => ApiError::bad(d.to_string()),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!("cannot reach the database through this node's proxy: {other}"),
            ),
        }
    }
}

/// The HTTP status for a MariaDB error: the client's mistake (4xx) unless the cluster
/// cannot take the request now (503).
fn server_status(code: u16, state: &str) -> StatusCode {
    match code {
        // Access denied (account, database, table, column, command).
        1044 | 1045 | 1142 | 1143 | 1227 | 1370 => StatusCode::FORBIDDEN,
        // Unknown database or table.
        1049 | 1146 => StatusCode::NOT_FOUND,
        // Duplicate key, deadlock, lock wait timeout, foreign-key conflicts.
        1062 | 1586 | 1213 | 1205 | 1451 | 1452 => StatusCode::CONFLICT,
        // No leader, read-only, outcome unknown, too many connections, shutting down.
        1290 | 1105 | 1040 | 1053 | 1927 => StatusCode::SERVICE_UNAVAILABLE,
        _ if state.starts_with("08") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A JSON body: 413 past `[api] max_body_bytes`, 400 for anything but the expected
/// JSON object.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than [api] max_body_bytes",
                    )
                } else {
                    ApiError::bad(format!("cannot read the request body: {r}"))
                }
            })?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            let code = if e.is_syntax() || e.is_eof() {
                "malformed_json"
            } else {
                "invalid_request"
            };
            ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Insert {
    pub table: String,
    #[serde(default)]
    pub values: Map<String, Json_>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub table: String,
    pub set: Map<String, Json_>,
    pub where_key: Map<String, Json_>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    pub table: String,
    pub where_key: Map<String, Json_>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upsert {
    pub table: String,
    pub values: Map<String, Json_>,
    /// The columns a duplicate key updates (from `values`); default all of `values`.
    #[serde(default)]
    pub update: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ddl {
    pub ddl: String,
}

/// One operation of `/write/batch`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Upsert(Upsert),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub operations: Vec<Operation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<Json_>,
    /// `local`, `session`, `fresh` or `linearizable`; default `[proxy] read_consistency`.
    #[serde(default)]
    pub consistency: Option<String>,
    /// A `log_index` an earlier write returned: with `session`, the read sees it.
    #[serde(default)]
    pub min_index: Option<u64>,
}

/// A statement with its parameters, and what `/write/insert` generated.
struct Planned {
    sql: String,
    params: Vec<Value>,
    generated_id: Option<u64>,
}

/// A table as the live schema spells it, with its columns.
struct Table {
    schema: String,
    name: String,
    columns: Vec<String>,
}

impl Table {
    fn quoted(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }

    /// The schema's spelling of column `name` (column names are case-insensitive).
    fn column(&self, name: &str) -> Result<&str, ApiError> {
        self.columns
            .iter()
            .find(|c| c.eq_ignore_ascii_case(name))
            .map(String::as_str)
            .ok_or_else(|| {
                ApiError::like_mariadb(
                    StatusCode::BAD_REQUEST,
                    "unknown_column",
                    1054,
                    "42S22",
                    format!(
                        "Unknown column '{name}' in table '{}.{}'",
                        self.schema, self.name
                    ),
                )
            })
    }
}

/// `` `name` `` with any backtick doubled.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A JSON value as a statement parameter. Objects and arrays are bound as their JSON
/// text (for JSON columns).
fn param(v: &Json_) -> Value {
    match v {
        Json_::Null => Value::NULL,
        Json_::Bool(b) => Value::Int(i64::from(*b)),
        Json_::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Double(n.as_f64().unwrap_or(0.0))
            }
        }
        Json_::String(s) => Value::Bytes(s.clone().into_bytes()),
        other => Value::Bytes(other.to_string().into_bytes()),
    }
}

impl Data {
    fn pool(&self) -> Result<&Pool, ApiError> {
        self.pool.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_proxy",
                "this node runs no MySQL proxy ([proxy] enabled = false); the data endpoints go through it",
            )
        })
    }

    async fn conn(&self, consistency: ReadConsistency) -> Result<Conn, ApiError> {
        let mut conn = self.pool()?.get_conn().await?;
        conn.query_drop(format!(
            "SET wolfscale_read_consistency = '{}'",
            consistency.name()
        ))
        .await?;
        Ok(conn)
    }

    /// `schema.table` or `table` (in `[database] database`).
    fn table_name<'a>(&'a self, name: &'a str) -> Result<(&'a str, &'a str), ApiError> {
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (s, t),
            None => match &self.database {
                Some(db) => (db.as_str(), name),
                None => {
                    return Err(ApiError::bad(format!(
                        "table '{name}' names no database: write it as database.table, or set [database] database"
                    )))
                }
            },
        };
        if schema.is_empty() || table.is_empty() {
            return Err(ApiError::bad(format!("'{name}' is not a table name")));
        }
        if SYSTEM_SCHEMAS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(schema))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "system_schema",
                format!("the write endpoints do not change the system schema '{schema}'"),
            ));
        }
        Ok((schema, table))
    }

    /// The live schema's record of the table. Looked up locally first; a table this
    /// node has not seen yet (created a moment ago through another node) is looked up
    /// again at the leader's commit index before it is called unknown.
    async fn table(&self, conn: &mut Conn, name: &str) -> Result<Table, ApiError> {
        let (schema, table) = self.table_name(name)?;
        if let Some(t) = lookup(conn, schema, table).await? {
            return Ok(t);
        }
        conn.query_drop("SET wolfscale_read_consistency = 'linearizable'")
            .await?;
        let found = lookup(conn, schema, table).await;
        conn.query_drop("SET wolfscale_read_consistency = 'session'")
            .await?;
        found?.ok_or_else(|| {
            ApiError::like_mariadb(
                StatusCode::NOT_FOUND,
                "unknown_table",
                1146,
                "42S02",
                format!("Table '{schema}.{table}' doesn't exist"),
            )
        })
    }

    async fn plan(&self, conn: &mut Conn, op: &Operation) -> Result<Planned, ApiError> {
        match op {
            Operation::Insert(i) => {
                let t = self.table(conn, &i.table).await?;
                let (mut cols, mut params) = columns_and_params(&t, &i.values)?;
                let mut generated_id = None;
                if let Some(idc) = &self.id_column {
                    let present = i.values.keys().any(|k| k.eq_ignore_ascii_case(idc));
                    if let (false, Ok(col)) = (present, t.column(idc)) {
                        let id = super::status::next_id(self.cluster.clone()).await?;
                        cols.push(quote(col));
                        params.push(Value::UInt(id));
                        generated_id = Some(id);
                    }
                }
                let marks = vec!["?"; params.len()].join(", ");
                Ok(Planned {
                    sql: format!(
                        "INSERT INTO {} ({}) VALUES ({marks})",
                        t.quoted(),
                        cols.join(", ")
                    ),
                    params,
                    generated_id,
                })
            }
            Operation::Upsert(u) => {
                if u.values.is_empty() {
                    return Err(ApiError::bad("values must name at least one column"));
                }
                let t = self.table(conn, &u.table).await?;
                let (cols, params) = columns_and_params(&t, &u.values)?;
                let updated: Vec<String> = match &u.update {
                    None => cols.clone(),
                    Some(names) => {
                        let mut out = Vec::new();
                        for n in names {
                            if !u.values.keys().any(|k| k.eq_ignore_ascii_case(n)) {
                                return Err(ApiError::bad(format!(
                                    "update names '{n}', which values does not give"
                                )));
                            }
                            out.push(quote(t.column(n)?));
                        }
                        out
                    }
                };
                if updated.is_empty() {
                    return Err(ApiError::bad("update must name at least one column"));
                }
                let marks = vec!["?"; params.len()].join(", ");
                let sets: Vec<String> = updated
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                Ok(Planned {
                    sql: format!(
                        "INSERT INTO {} ({}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {}",
                        t.quoted(),
                        cols.join(", "),
                        sets.join(", ")
                    ),
                    params,
                    generated_id: None,
                })
            }
            Operation::Update(u) => {
                if u.set.is_empty() {
                    return Err(ApiError::bad("set must name at least one column"));
                }
                if u.where_key.is_empty() {
                    return Err(ApiError::bad(
                        "where_key must name at least one column (an update of every row is not an API write)",
                    ));
                }
                let t = self.table(conn, &u.table).await?;
                let mut params = Vec::new();
                let mut sets = Vec::new();
                for (k, v) in &u.set {
                    sets.push(format!("{} = ?", quote(t.column(k)?)));
                    params.push(param(v));
                }
                let conds = conditions(&t, &u.where_key, &mut params)?;
                Ok(Planned {
                    sql: format!(
                        "UPDATE {} SET {} WHERE {conds}",
                        t.quoted(),
                        sets.join(", ")
                    ),
                    params,
                    generated_id: None,
                })
            }
            Operation::Delete(d) => {
                if d.where_key.is_empty() {
                    return Err(ApiError::bad(
                        "where_key must name at least one column (a delete of every row is not an API write)",
                    ));
                }
                let t = self.table(conn, &d.table).await?;
                let mut params = Vec::new();
                let conds = conditions(&t, &d.where_key, &mut params)?;
                Ok(Planned {
                    sql: format!("DELETE FROM {} WHERE {conds}", t.quoted()),
                    params,
                    generated_id: None,
                })
            }
        }
    }

    /// Run one planned statement; its counts.
    async fn run(conn: &mut Conn, p: &Planned) -> Result<Json_, ApiError> {
        conn.exec_drop(p.sql.as_str(), Params::Positional(p.params.clone()))
            .await?;
        let mut out = json!({
            "affected_rows": conn.affected_rows(),
            "last_insert_id": conn.last_insert_id().unwrap_or(0),
        });
        if let Some(id) = p.generated_id {
            out["id"] = json!(id.to_string());
        }
        Ok(out)
    }

    async fn write_one(&self, op: Operation) -> Result<Json<Json_>, ApiError> {
        let mut conn = self.conn(ReadConsistency::Session).await?;
        let planned = self.plan(&mut conn, &op).await?;
        let mut out = Data::run(&mut conn, &planned).await?;
        out["log_index"] = json!(session_index(&mut conn).await?);
        Ok(Json(out))
    }
}

/// The quoted columns of `values` in the schema's spelling, and their parameters.
fn columns_and_params(
    t: &Table,
    values: &Map<String, Json_>,
) -> Result<(Vec<String>, Vec<Value>), ApiError> {
    let mut cols = Vec::with_capacity(values.len());
    let mut params = Vec::with_capacity(values.len());
    for (k, v) in values {
        cols.push(quote(t.column(k)?));
        params.push(param(v));
    }
    Ok((cols, params))
}

/// `a = ? AND b IS NULL …` for a `where_key`.
fn conditions(
    t: &Table,
    key: &Map<String, Json_>,
    params: &mut Vec<Value>,
) -> Result<String, ApiError> {
    let mut out = Vec::new();
    for (k, v) in key {
        let col = quote(t.column(k)?);
        if v.is_null() {
            out.push(format!("{col} IS NULL"));
        } else {
            out.push(format!("{col} = ?"));
            params.push(param(v));
        }
    }
    Ok(out.join(" AND "))
}

/// The log index of the session's last write (the proxy answers it).
async fn session_index(conn: &mut Conn) -> Result<u64, ApiError> {
    Ok(conn
        .query_first::<u64, _>("SELECT @@wolfscale_session_index")
        .await?
        .unwrap_or(0))
}

/// The columns of `schema.table`, if the schema has it (exact spelling first; a
/// case-insensitive match on a server with `lower_case_table_names`).
async fn lookup(conn: &mut Conn, schema: &str, table: &str) -> Result<Option<Table>, ApiError> {
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await?;
    let exact: Vec<&(String, String, String)> = rows
        .iter()
        .filter(|(s, t, _)| s == schema && t == table)
        .collect();
    let chosen = if exact.is_empty() {
        rows.iter().collect()
    } else {
        exact
    };
    let Some(first) = chosen.first() else {
        return Ok(None);
    };
    Ok(Some(Table {
        schema: first.0.clone(),
        name: first.1.clone(),
        columns: chosen
            .iter()
            .filter(|(s, t, _)| *s == first.0 && *t == first.1)
            .map(|(_, _, c)| c.clone())
            .collect(),
    }))
}

pub async fn insert(
    State(d): State<Data>,
    Body(req): Body<Insert>,
) -> Result<Json<Json_>, ApiError> {
    d.write_one(Operation::Insert(req)).await
}

pub async fn update(
    State(d): State<Data>,
    Body(req): Body<Update>,
) -> Result<Json<Json_>, ApiError> {
    d.write_one(Operation::Update(req)).await
}

pub async fn delete(
    State(d): State<Data>,
    Body(req): Body<Delete>,
) -> Result<Json<Json_>, ApiError> {
    d.write_one(Operation::Delete(req)).await
}

pub async fn upsert(
    State(d): State<Data>,
    Body(req): Body<Upsert>,
) -> Result<Json<Json_>, ApiError> {
    d.write_one(Operation::Upsert(req)).await
}

/// `POST /write/batch`: the operations in one transaction, all or none.
pub async fn batch(State(d): State<Data>, Body(req): Body<Batch>) -> Result<Json<Json_>, ApiError> {
    if req.operations.is_empty() {
        return Err(ApiError::bad("operations must hold at least one operation"));
    }
    let mut conn = d.conn(ReadConsistency::Session).await?;
    // Plan every operation before the transaction opens: a bad name fails the batch
    // without a round trip to the leader.
    let mut planned = Vec::with_capacity(req.operations.len());
    for (i, op) in req.operations.iter().enumerate() {
        planned.push(
            d.plan(&mut conn, op)
                .await
                .map_err(|e| e.with("operation", json!(i)))?,
        );
    }
    conn.query_drop("START TRANSACTION").await?;
    let mut results = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        match Data::run(&mut conn, p).await {
            Ok(r) => results.push(r),
            Err(e) => {
                // The connection goes back to the pool clean, or not at all.
                if conn.query_drop("ROLLBACK").await.is_err() {
                    drop(conn);
                }
                return Err(e.with("operation", json!(i)));
            }
        }
    }
    conn.query_drop("COMMIT").await?;
    Ok(Json(json!({
        "results": results,
        "log_index": session_index(&mut conn).await?,
    })))
}

/// `POST /write/ddl`: one DDL statement.
pub async fn ddl(State(d): State<Data>, Body(req): Body<Ddl>) -> Result<Json<Json_>, ApiError> {
    single(
        &req.ddl,
        StatementClass::Ddl,
        "ddl",
        "a DDL statement (CREATE, ALTER, DROP, RENAME, TRUNCATE)",
    )?;
    let mut conn = d.conn(ReadConsistency::Session).await?;
    conn.query_drop(req.ddl.as_str()).await?;
    let affected = conn.affected_rows();
    Ok(Json(json!({
        "affected_rows": affected,
        "log_index": session_index(&mut conn).await?,
    })))
}

/// Refuse anything but exactly one statement of class `want`.
fn single(sql: &str, want: StatementClass, field: &str, what: &str) -> Result<(), ApiError> {
    let parts = crate::sql::classify_each(sql);
    let [one] = parts.as_slice() else {
        return Err(ApiError::bad(format!(
            "{field} must hold exactly one statement ({} found)",
            parts.len()
        )));
    };
    if one.class != want || one.fallback {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "wrong_statement",
            format!(
                "{field} must be {what}; this is a statement of class {}",
                one.class
            ),
        ));
    }
    Ok(())
}

/// Whether the SQL has an `INTO` keyword (`SELECT … INTO @v`, `INTO OUTFILE`): not a
/// plain read.
fn has_into(sql: &str) -> bool {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::MySqlDialect {};
    match Tokenizer::new(&dialect, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.keyword == Keyword::INTO)),
        Err(_) => true,
    }
}

/// `POST /query`: one parameterized read, at the requested consistency.
pub async fn query(State(d): State<Data>, Body(req): Body<Query>) -> Result<Json<Json_>, ApiError> {
    single(
        &req.sql,
        StatementClass::Read,
        "sql",
        "a read (SELECT, SHOW, …); writes go to /write/*",
    )?;
    if has_into(&req.sql) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "wrong_statement",
            "sql must be a plain read: INTO (variables, files) is not one",
        ));
    }
    let consistency = match &req.consistency {
        None => d.consistency,
        Some(name) => ReadConsistency::parse(name).ok_or_else(|| {
            ApiError::bad(format!(
                "consistency must be one of {}, not '{name}'",
                ReadConsistency::NAMES
            ))
        })?,
    };
    let mut conn = d.conn(consistency).await?;
    if let Some(n) = req.min_index {
        conn.query_drop(format!("SET wolfscale_session_index = {n}"))
            .await?;
    }
    let params: Vec<Value> = req.params.iter().map(param).collect();
    let params = if params.is_empty() {
        Params::Empty
    } else {
        Params::Positional(params)
    };
    let mut result = conn.exec_iter(req.sql.as_str(), params).await?;
    let columns = result.columns().unwrap_or_else(|| Arc::from(Vec::new()));
    let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
    let mut rows = Vec::new();
    let mut truncated = false;
    while let Some(row) = result.next().await? {
        if rows.len() == MAX_ROWS {
            truncated = true;
            continue; // drain the rest so the connection stays usable
        }
        let values: Vec<Json_> = row
            .unwrap()
            .into_iter()
            .zip(columns.iter())
            .map(|(v, c)| to_json(v, c.column_type()))
            .collect();
        rows.push(values);
    }
    drop(result);
    Ok(Json(json!({
        "columns": names,
        "rows": rows,
        "row_count": rows.len(),
        "truncated": truncated,
    })))
}

/// A result value as JSON: numbers as numbers, DECIMAL as a string (no precision
/// lost), dates and times as MariaDB writes them, text as strings, other bytes as
/// `{"hex": "…"}`.
fn to_json(v: Value, ty: mysql_async::consts::ColumnType) -> Json_ {
    use mysql_async::consts::ColumnType as T;
    match v {
        Value::NULL => Json_::Null,
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Double(f) => json!(f),
        Value::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => Json_::String(s),
            Err(e) => {
                let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                json!({ "hex": hex })
            }
        },
        Value::Date(y, mo, d, h, mi, s, us) => {
            if ty == T::MYSQL_TYPE_DATE {
                Json_::String(format!("{y:04}-{mo:02}-{d:02}"))
            } else if us > 0 {
                Json_::String(format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                ))
            } else {
                Json_::String(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let sign = if neg { "-" } else { "" };
            let hours = u64::from(days) * 24 + u64::from(h);
            if us > 0 {
                Json_::String(format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}"))
            } else {
                Json_::String(format!("{sign}{hours:02}:{mi:02}:{s:02}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_backticks_doubled() {
        assert_eq!(quote("users"), "`users`");
        assert_eq!(quote("a`b"), "`a``b`");
        assert_eq!(quote("x`; DROP TABLE t; --"), "`x``; DROP TABLE t; --`");
    }

    #[test]
    fn json_values_become_typed_parameters() {
        assert_eq!(param(&json!(null)), Value::NULL);
        assert_eq!(param(&json!(true)), Value::Int(1));
        assert_eq!(param(&json!(-5)), Value::Int(-5));
        assert_eq!(param(&json!(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(param(&json!(1.5)), Value::Double(1.5));
        assert_eq!(param(&json!("x'y")), Value::Bytes(b"x'y".to_vec()));
        assert_eq!(
            param(&json!({"a": [1]})),
            Value::Bytes(br#"{"a":[1]}"#.to_vec())
        );
    }

    #[test]
    fn only_one_statement_of_the_right_class_passes() {
        assert!(single("ALTER TABLE t ADD c INT", StatementClass::Ddl, "ddl", "").is_ok());
        assert!(single(
            "ALTER TABLE t ADD c INT; DROP TABLE u",
            StatementClass::Ddl,
            "ddl",
            ""
        )
        .is_err());
        assert!(single("DELETE FROM t", StatementClass::Ddl, "ddl", "").is_err());
        assert!(single("SELECT 1", StatementClass::Read, "sql", "").is_ok());
        assert!(single("SELECT 1; SELECT 2", StatementClass::Read, "sql", "").is_err());
        assert!(single("UPDATE t SET a = 1", StatementClass::Read, "sql", "").is_err());
        assert!(single("", StatementClass::Read, "sql", "").is_err());
    }

    #[test]
    fn into_is_not_a_plain_read() {
        assert!(has_into("SELECT a INTO @v FROM t"));
        assert!(has_into("select * from t into outfile '/tmp/x'"));
        assert!(!has_into("SELECT 'into' FROM t WHERE b = 'INTO'"));
        assert!(!has_into("SELECT `into` FROM t"));
    }

    #[test]
    fn mariadb_errors_map_to_client_or_unavailable() {
        assert_eq!(server_status(1062, "23000"), StatusCode::CONFLICT);
        assert_eq!(server_status(1146, "42S02"), StatusCode::NOT_FOUND);
        assert_eq!(server_status(1064, "42000"), StatusCode::BAD_REQUEST);
        assert_eq!(
            server_status(1290, "HY000"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            server_status(2013, "08S01"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(server_status(1142, "42000"), StatusCode::FORBIDDEN);
    }
}
