//! What a provider measured.

use std::collections::BTreeMap;

/// A provider's result, before it is judged. JSON answers keep their types: a boolean is a
/// [`Value::Bool`], an object a [`Value::Object`], so a condition reads them as the
/// expression language defines them (`result == true`, `result.status == "ok"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One number (a Prometheus scalar, a one-element vector, a JSON number).
    Number(f64),
    /// Several numbers (a Prometheus vector with several series, a JSON array of numbers).
    List(Vec<f64>),
    /// Text (a JSON string, a non-numeric body).
    Text(String),
    /// A boolean (a JSON `true` or `false`).
    Bool(bool),
    /// Values of any kind, in order (a JSON array that does not hold only numbers).
    Items(Vec<Value>),
    /// Named values (a JSON object).
    Object(BTreeMap<String, Value>),
    /// Nothing came back (an empty vector, a missing JSON path, a JSON `null`).
    Empty,
}

impl Value {
    /// Whether the value carries nothing to judge: empty, NaN, or a list that is empty or
    /// holds a NaN. Such a value is inconclusive, never a success.
    pub fn is_missing(&self) -> bool {
        match self {
            Value::Number(n) => n.is_nan(),
            Value::List(l) => l.is_empty() || l.iter().any(|n| n.is_nan()),
            Value::Text(t) => t.is_empty(),
            Value::Items(items) => items.is_empty(),
            Value::Bool(_) | Value::Object(_) => false,
            Value::Empty => true,
        }
    }
}

impl std::fmt::Display for Value {
    /// JSON-like: a string is quoted, so `"true"` (text) and `true` (a boolean) differ.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::List(l) => {
                let parts: Vec<String> = l.iter().map(|n| n.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Items(items) => {
                let parts: Vec<String> = items.iter().map(Value::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Object(fields) => {
                let parts: Vec<String> =
                    fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
            Value::Empty => f.write_str("(no data)"),
        }
    }
}
