//! Builders for transaction operations (RFC 7047 section 5.2).

use serde_json::{json, Map, Value};

/// A condition `[column, function, value]` (e.g. `("name", "==", "br0")`).
pub fn cond(column: &str, function: &str, value: Value) -> Value {
    json!([column, function, value])
}

/// `column == value`.
pub fn eq(column: &str, value: Value) -> Value {
    cond(column, "==", value)
}

/// Rows by UUID.
pub fn by_uuid(u: &str) -> Vec<Value> {
    vec![eq("_uuid", crate::atom::uuid(u))]
}

/// `insert` with an optional `uuid-name` for references in the same transaction.
pub fn insert(table: &str, row: Map<String, Value>, uuid_name: Option<&str>) -> Value {
    let mut op = json!({"op": "insert", "table": table, "row": row});
    if let (Some(n), Some(o)) = (uuid_name, op.as_object_mut()) {
        o.insert("uuid-name".into(), Value::String(n.into()));
    }
    op
}

/// `update`: sets `row`'s columns in every row matching `where_`.
pub fn update(table: &str, where_: Vec<Value>, row: Map<String, Value>) -> Value {
    json!({"op": "update", "table": table, "where": where_, "row": row})
}

/// `delete` every row matching `where_`.
pub fn delete(table: &str, where_: Vec<Value>) -> Value {
    json!({"op": "delete", "table": table, "where": where_})
}

/// A mutation `[column, mutator, value]` (e.g. `("ports", "insert", set)`).
pub fn mutation(column: &str, mutator: &str, value: Value) -> Value {
    json!([column, mutator, value])
}

/// `mutate` every row matching `where_`.
pub fn mutate(table: &str, where_: Vec<Value>, mutations: Vec<Value>) -> Value {
    json!({"op": "mutate", "table": table, "where": where_, "mutations": mutations})
}

/// `select` (all columns when `columns` is `None`).
pub fn select(table: &str, where_: Vec<Value>, columns: Option<&[&str]>) -> Value {
    let mut op = json!({"op": "select", "table": table, "where": where_});
    if let (Some(c), Some(o)) = (columns, op.as_object_mut()) {
        o.insert("columns".into(), json!(c));
    }
    op
}

/// `wait` until the rows matching `where_` (projected on `columns`) are
/// (`until` "==") or are not ("!=") exactly `rows`; `timeout_ms` 0 checks once.
pub fn wait(
    table: &str,
    where_: Vec<Value>,
    columns: &[&str],
    until: &str,
    rows: Vec<Value>,
    timeout_ms: u64,
) -> Value {
    json!({"op": "wait", "table": table, "where": where_, "columns": columns,
           "until": until, "rows": rows, "timeout": timeout_ms})
}

/// `comment` (shows in the database log).
pub fn comment(text: &str) -> Value {
    json!({"op": "comment", "comment": text})
}

/// Builds a row object from pairs.
pub fn row<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
