//! What a provider measured.

/// A provider's result, before it is judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One number (a Prometheus scalar, a one-element vector, a JSON number).
    Number(f64),
    /// Several numbers (a Prometheus vector with several series, a JSON array).
    List(Vec<f64>),
    /// Text (a JSON string, a non-numeric body).
    Text(String),
    /// Nothing came back (an empty vector, a missing JSON path).
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
            Value::Empty => true,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::List(l) => {
                let parts: Vec<String> = l.iter().map(|n| n.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Value::Text(t) => write!(f, "{t:?}"),
            Value::Empty => f.write_str("(no data)"),
        }
    }
}
