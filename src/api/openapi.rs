//! `GET /openapi.json`: the API as it is implemented, in OpenAPI 3.0. The data
//! endpoints' request schemas mirror the handlers' serde types (unknown members are
//! refused there, so `additionalProperties: false` here); `tests/api.rs` runs
//! schemathesis against a live cluster with this document.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A JSON request body of schema `r`, with the errors a data endpoint gives.
fn data_operation(summary: &str, request: &str, ok: Value) -> Value {
    json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{request}")}}}
        },
        "responses": {
            "200": ok,
            "400": error_response("Malformed JSON, a request the schema does not allow, an unknown column, a statement of the wrong class, or a MariaDB error (errno and sqlstate kept)"),
            "401": error_response("A token is set and the request did not present it"),
            "403": error_response("No token is set and the client is not on this host; a system schema; or MariaDB denied access"),
            "404": error_response("Unknown table or database"),
            "409": error_response("Duplicate key, deadlock, lock wait timeout or foreign-key conflict"),
            "413": error_response("The body is larger than [api] max_body_bytes"),
            "503": error_response("No leader (within failover_wait_ms), the outcome of a commit is unknown, or the database is unreachable"),
        }
    })
}

fn read_operation(summary: &str, ok: Value) -> Value {
    json!({"summary": summary, "responses": {"200": ok}})
}

fn admin_operation(summary: &str, extra: Value) -> Value {
    let mut op = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": ok_json("Done", json!({"type": "object"})),
            "401": error_response("A token is set and the request did not present it"),
            "403": error_response("No token is set and the client is not on this host"),
            "409": error_response("Not possible on this node now (not the leader, not a voter, refused by the preferred-leader rules)"),
            "503": error_response("The cluster could not do it in time"),
        }
    });
    if let (Some(op), Some(extra)) = (op.as_object_mut(), extra.as_object()) {
        op.extend(extra.clone());
    }
    op
}

fn table_op(props: Value, required: &[&str]) -> Value {
    let mut properties =
        json!({"table": {"type": "string", "description": "table or database.table"}});
    if let (Some(p), Some(more)) = (properties.as_object_mut(), props.as_object()) {
        p.extend(more.clone());
    }
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

fn columns() -> Value {
    json!({"type": "object", "additionalProperties": {}, "description": "column name to value; objects and arrays are stored as JSON text"})
}

fn key() -> Value {
    json!({"type": "object", "minProperties": 1, "additionalProperties": {}, "description": "column name to value; null matches NULL"})
}

fn insert() -> Value {
    table_op(json!({"values": columns()}), &["table"])
}

fn update() -> Value {
    table_op(
        json!({"set": {"type": "object", "minProperties": 1, "additionalProperties": {}}, "where_key": key()}),
        &["table", "set", "where_key"],
    )
}

fn delete() -> Value {
    table_op(json!({"where_key": key()}), &["table", "where_key"])
}

fn upsert() -> Value {
    table_op(
        json!({
            "values": {"type": "object", "minProperties": 1, "additionalProperties": {}},
            "update": {"type": "array", "minItems": 1, "items": {"type": "string"}}
        }),
        &["table", "values"],
    )
}

/// The document.
pub fn document() -> Value {
    let write_result = json!({
        "type": "object",
        "required": ["affected_rows", "last_insert_id", "log_index"],
        "properties": {
            "affected_rows": {"type": "integer", "minimum": 0},
            "last_insert_id": {"type": "integer", "minimum": 0},
            "log_index": {"type": "integer", "minimum": 0, "description": "pass as min_index to /query for read-your-writes"},
            "id": {"type": "string", "description": "the Snowflake id filled into [api] id_column"}
        }
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "WolfScale HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A node's state, its cluster, Snowflake ids, metrics, admin operations, and data writes and reads that take the same path as the MySQL proxy's (leader, log, quorum, replay)."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "[api] token; without one set, these endpoints accept only clients on the node's host"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "errno": {"type": "integer", "description": "MariaDB error number"},
                            "sqlstate": {"type": "string"},
                            "operation": {"type": "integer", "description": "/write/batch: the failed operation"}
                        }
                    }}
                },
                "Insert": insert(),
                "Update": update(),
                "Delete": delete(),
                "Upsert": upsert(),
                "Ddl": {"type": "object", "additionalProperties": false, "required": ["ddl"], "properties": {"ddl": {"type": "string", "description": "one DDL statement"}}},
                "Batch": {
                    "type": "object", "additionalProperties": false, "required": ["operations"],
                    // One item schema for the four operations (a oneOf here is what each
                    // must hold; the handler answers 400 naming a missing member).
                    "properties": {"operations": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": false, "required": ["op", "table"],
                        "properties": {
                            "op": {"type": "string", "enum": ["insert", "update", "delete", "upsert"]},
                            "table": {"type": "string"},
                            "values": columns(),
                            "set": {"type": "object", "additionalProperties": {}},
                            "where_key": {"type": "object", "additionalProperties": {}},
                            "update": {"type": "array", "items": {"type": "string"}}
                        },
                        "description": "insert: values; update: set and where_key; delete: where_key; upsert: values and update"
                    }}}
                },
                "Query": {
                    "type": "object", "additionalProperties": false, "required": ["sql"],
                    "properties": {
                        "sql": {"type": "string", "description": "one read; ? marks the params"},
                        "params": {"type": "array", "items": {}},
                        "consistency": {"type": "string", "enum": ["local", "session", "fresh", "linearizable"]},
                        "min_index": {"type": "integer", "minimum": 0, "maximum": 9_007_199_254_740_991_u64}
                    }
                },
                "WriteResult": write_result,
            }
        },
        "paths": {
            "/health": {"get": {"summary": "200 when this node can serve", "responses": {
                "200": ok_json("Serving", json!({"type": "object", "required": ["status", "role"]})),
                "503": ok_json("Not serving", json!({"type": "object", "required": ["status", "role"]}))
            }}},
            "/status": {"get": read_operation("This node's status", ok_json("Status", json!({"type": "object", "required": ["node_id", "role", "status"]})))},
            "/cluster": {"get": read_operation("Every member as this node sees it", ok_json("Cluster", json!({"type": "object", "required": ["members"]})))},
            "/cluster/nodes": {"get": read_operation("The members", ok_json("Members", json!({"type": "array", "items": {"type": "object"}})))},
            "/cluster/overview": {"get": read_operation("Members with their own indexes and recent history (the status page's data)", ok_json("Overview", json!({"type": "object", "required": ["members", "history"]})))},
            "/id": {"get": {"summary": "A Snowflake id", "responses": {
                "200": ok_json("An id", json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}})),
                "503": error_response("The clock stepped back beyond the bound")
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "The text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/": {"get": {"summary": "The status page", "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": read_operation("This document", ok_json("OpenAPI", json!({"type": "object"})))},
            "/write/insert": {"post": data_operation("Insert a row", "Insert", ok_json("Inserted", json!({"$ref": "#/components/schemas/WriteResult"})))},
            "/write/update": {"post": data_operation("Update the rows matching where_key", "Update", ok_json("Updated", json!({"$ref": "#/components/schemas/WriteResult"})))},
            "/write/delete": {"post": data_operation("Delete the rows matching where_key", "Delete", ok_json("Deleted", json!({"$ref": "#/components/schemas/WriteResult"})))},
            "/write/upsert": {"post": data_operation("Insert, or update on a duplicate key", "Upsert", ok_json("Upserted", json!({"$ref": "#/components/schemas/WriteResult"})))},
            "/write/ddl": {"post": data_operation("Run one DDL statement", "Ddl", ok_json("Done", json!({"type": "object", "required": ["affected_rows", "log_index"]})))},
            "/write/batch": {"post": data_operation("Several operations in one transaction", "Batch", ok_json("Committed", json!({"type": "object", "required": ["results", "log_index"], "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/WriteResult"}}, "log_index": {"type": "integer"}}})))},
            "/query": {"post": data_operation("One parameterized read", "Query", ok_json("Rows", json!({
                "type": "object", "required": ["columns", "rows", "row_count", "truncated"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "rows": {"type": "array", "items": {"type": "array", "items": {}}},
                    "row_count": {"type": "integer"},
                    "truncated": {"type": "boolean"}
                }
            })))},
            "/cluster/promote": {"post": admin_operation("Make this node the leader", json!({}))},
            "/cluster/demote": {"post": admin_operation("Hand leadership to another voter", json!({}))},
            "/cluster/nodes/{node_id}": {"delete": admin_operation("Remove a node", json!({"parameters": [{"name": "node_id", "in": "path", "required": true, "schema": {"type": "string"}}]}))},
            "/cluster/migrate": {
                "post": admin_operation("Re-provision this node from a donor's snapshot", json!({"parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "string"}, "description": "the donor's API, HOST:PORT"}]})),
                "get": admin_operation("The migration's progress", json!({}))
            },
            "/snapshot": {"get": admin_operation("Stream a snapshot (donor side of a migration)", json!({"parameters": [{"name": "min_index", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}}]}))}
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for path in [
            "/health",
            "/status",
            "/cluster",
            "/cluster/nodes",
            "/id",
            "/metrics",
            "/",
            "/write/insert",
            "/write/update",
            "/write/delete",
            "/write/upsert",
            "/write/ddl",
            "/write/batch",
            "/query",
            "/cluster/promote",
            "/cluster/demote",
            "/cluster/nodes/{node_id}",
            "/cluster/migrate",
            "/snapshot",
            "/openapi.json",
            "/cluster/overview",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }
}
