//! OVSDB values in their JSON wire form (RFC 7047 section 5.1): atoms,
//! `["uuid", ..]`, `["named-uuid", ..]`, `["set", [..]]` and
//! `["map", [[k, v], ..]]`. Readers are lenient (a set of one element may be
//! sent as the bare element); writers always emit the explicit forms.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// `["uuid", u]`: a reference to an existing row.
pub fn uuid(u: &str) -> Value {
    json!(["uuid", u])
}

/// `["named-uuid", n]`: a reference to a row inserted by the same
/// transaction with `uuid-name` `n`.
pub fn named_uuid(n: &str) -> Value {
    json!(["named-uuid", n])
}

/// `["set", [..]]`.
pub fn set(items: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", items.into_iter().collect::<Vec<_>>()])
}

/// The empty set (also "no value" for optional columns).
pub fn empty_set() -> Value {
    json!(["set", []])
}

/// `["map", [[k, v], ..]]` of strings (sorted: renderings are stable).
pub fn map(m: &BTreeMap<String, String>) -> Value {
    let pairs: Vec<Value> = m.iter().map(|(k, v)| json!([k, v])).collect();
    json!(["map", pairs])
}

/// Builds a string map from pairs.
pub fn string_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The UUID of a `["uuid", u]` value.
pub fn as_uuid(v: &Value) -> Option<String> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::String(u)]) if tag == "uuid" => Some(u.clone()),
        _ => None,
    }
}

/// The elements of a set (a bare atom is a set of one).
pub fn as_set(v: &Value) -> Vec<Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([tag, Value::Array(items)]) if tag == "set" => items.clone(),
        Some(_) | None => vec![v.clone()],
    }
}

/// The UUIDs of a set of references.
pub fn as_uuid_set(v: &Value) -> Vec<String> {
    as_set(v).iter().filter_map(as_uuid).collect()
}

/// A string atom, or `None` (e.g. an empty optional column).
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => as_set(v)
            .first()
            .and_then(|x| x.as_str().map(str::to_string)),
    }
}

/// The strings of a set.
pub fn as_string_set(v: &Value) -> Vec<String> {
    as_set(v)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// An integer atom or an optional integer (`["set", []]` is `None`).
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        _ => as_set(v).first().and_then(Value::as_i64),
    }
}

/// A map with atom keys and values rendered as strings.
pub fn as_map(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some([tag, Value::Array(pairs)]) = v.as_array().map(Vec::as_slice) {
        if tag == "map" {
            for p in pairs {
                if let Some([k, val]) = p.as_array().map(Vec::as_slice) {
                    out.insert(atom_text(k), atom_text(val));
                }
            }
        }
    }
    out
}

fn atom_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => as_uuid(other).unwrap_or_else(|| other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_round_trip() {
        let m = string_map([("b", "2"), ("a", "1")]);
        assert_eq!(map(&m), json!(["map", [["a", "1"], ["b", "2"]]]));
        assert_eq!(as_map(&map(&m)), m);
        assert_eq!(as_uuid(&uuid("x")), Some("x".into()));
        assert_eq!(as_uuid_set(&json!(["uuid", "y"])), vec!["y".to_string()]);
        assert_eq!(
            as_uuid_set(&json!(["set", [["uuid", "a"], ["uuid", "b"]]])),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(as_int(&json!(["set", []])), None);
        assert_eq!(as_int(&json!(7)), Some(7));
        assert_eq!(as_string(&json!(["set", []])), None);
        assert_eq!(as_string(&json!("secure")), Some("secure".into()));
        assert_eq!(as_string_set(&json!("netdev")), vec!["netdev".to_string()]);
    }
}
