//! The `web` provider: an HTTP request whose answer (or a JSONPath into it) is the
//! measurement.

use std::time::Duration;

use cutover_core::analysis::Value;
use serde_json_path::JsonPath;

use super::{ProviderError, excerpt, request_error};

/// The HTTP method of a web measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `GET` (the default).
    #[default]
    Get,
    /// `POST`, usually with a body.
    Post,
}

/// One web measurement: what to ask and what to take from the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRequest {
    /// The URL to call.
    pub url: String,
    /// The HTTP method.
    pub method: Method,
    /// Extra request headers, in order.
    pub headers: Vec<(String, String)>,
    /// The request body, if any.
    pub body: Option<String>,
    /// An RFC 9535 JSONPath (e.g. `$.status`) into the JSON answer; without it the whole
    /// body is the value.
    pub json_path: Option<String>,
    /// How long the whole request may take.
    pub timeout: Duration,
}

/// Call `req.url` and turn the answer into a [`Value`].
///
/// A status other than 2xx is an error. With `json_path`, JSON keeps its types: no match
/// (or `null`) is `Empty`, a number a `Number`, a string `Text` (even if it looks like a
/// number: conditions decide), a boolean a `Bool`, an object an `Object`, an array of
/// numbers (or several numeric matches) a `List`, any other array (or several matches)
/// `Items`. Without: the trimmed body is a `Number` if it parses as one, `Text` otherwise.
pub async fn measure(client: &reqwest::Client, req: &WebRequest) -> Result<Value, ProviderError> {
    // A bad path is the spec's fault: say so before calling anything.
    let path = req
        .json_path
        .as_deref()
        .map(|p| {
            JsonPath::parse(p).map_err(|e| ProviderError::BadJsonPath {
                path: p.to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let mut request = match req.method {
        Method::Get => client.get(&req.url),
        Method::Post => client.post(&req.url),
    }
    .timeout(req.timeout);
    for (name, value) in &req.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &req.body {
        request = request.body(body.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| request_error(&req.url, &e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| request_error(&req.url, &e))?;
    if !status.is_success() {
        return Err(ProviderError::Status {
            url: req.url.clone(),
            status: status.as_u16(),
            body: excerpt(&body),
        });
    }
    match path {
        Some(path) => {
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ProviderError::BadJson {
                    url: req.url.clone(),
                    reason: e.to_string(),
                    body: excerpt(&body),
                })?;
            Ok(from_matches(&path.query(&json).all()))
        }
        None => Ok(from_body(&String::from_utf8_lossy(&body))),
    }
}

/// The value of the nodes a JSONPath selected: one node is that node's value; several are
/// a list of them.
fn from_matches(nodes: &[&serde_json::Value]) -> Value {
    match nodes {
        [] => Value::Empty,
        [one] => from_json(one),
        several => items(several.iter().copied()),
    }
}

/// The value of one JSON node, with its JSON type.
fn from_json(node: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match node {
        J::Null => Value::Empty,
        J::Number(n) => n.as_f64().map_or(Value::Empty, Value::Number),
        J::String(s) => Value::Text(s.clone()),
        J::Bool(b) => Value::Bool(*b),
        J::Array(nodes) => items(nodes.iter()),
        J::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect(),
        ),
    }
}

/// A list of nodes: numbers only are a [`Value::List`], anything else [`Value::Items`].
fn items<'a>(nodes: impl Iterator<Item = &'a serde_json::Value> + Clone) -> Value {
    match nodes.clone().map(serde_json::Value::as_f64).collect() {
        Some(numbers) => Value::List(numbers),
        None => Value::Items(nodes.map(from_json).collect()),
    }
}

/// The value of a body taken whole.
fn from_body(body: &str) -> Value {
    let text = body.trim();
    match text.parse::<f64>() {
        Ok(n) => Value::Number(n),
        Err(_) => Value::Text(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(path: &str, doc: &serde_json::Value) -> Value {
        let path = JsonPath::parse(path).expect("a valid path");
        from_matches(&path.query(doc).all())
    }

    #[test]
    fn json_paths_select_typed_values() {
        let doc = json!({
            "status": "ok", "ratio": 0.25, "count": "12", "healthy": true, "gone": null,
            "latencies": [1, 2.5, 3], "pods": [{"ready": 1}, {"ready": 0}], "mixed": [1, "a"],
            "nested": {"a": 1}
        });
        assert_eq!(at("$.status", &doc), Value::Text("ok".into()));
        assert_eq!(at("$.ratio", &doc), Value::Number(0.25));
        assert_eq!(at("$.count", &doc), Value::Text("12".into()));
        assert_eq!(at("$.healthy", &doc), Value::Bool(true));
        assert_eq!(at("$.gone", &doc), Value::Empty);
        assert_eq!(at("$.missing", &doc), Value::Empty);
        assert_eq!(at("$.latencies", &doc), Value::List(vec![1.0, 2.5, 3.0]));
        assert_eq!(at("$.pods[*].ready", &doc), Value::List(vec![1.0, 0.0]));
        let mixed = Value::Items(vec![Value::Number(1.0), Value::Text("a".into())]);
        assert_eq!(at("$.mixed", &doc), mixed);
        assert_eq!(at("$.mixed[*]", &doc), mixed);
        assert_eq!(
            at("$.nested", &doc),
            Value::Object([("a".to_string(), Value::Number(1.0))].into())
        );
        assert_eq!(
            at("$.pods", &doc),
            Value::Items(vec![
                Value::Object([("ready".to_string(), Value::Number(1.0))].into()),
                Value::Object([("ready".to_string(), Value::Number(0.0))].into()),
            ])
        );
    }

    #[test]
    fn whole_bodies_are_numbers_when_they_parse() {
        assert_eq!(from_body(" 0.5\n"), Value::Number(0.5));
        assert_eq!(from_body("ok\n"), Value::Text("ok".into()));
        assert_eq!(from_body(""), Value::Text(String::new()));
        assert!(from_body("").is_missing());
    }
}
