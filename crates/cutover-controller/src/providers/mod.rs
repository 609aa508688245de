//! Measurement providers: where a value to judge comes from — an analysis metric, or a
//! FailoverPolicy member's replication lag (shared by both features, so it lives below them).
//!
//! Each provider returns a [`Value`](cutover_core::analysis::Value) or a [`ProviderError`].
//! The difference matters: an error (Prometheus down, a 500, a bad query) counts toward the
//! metric's `consecutiveErrorLimit`, while a successful measurement that found no data is
//! `Value::Empty`, which the verdict treats as inconclusive.

use std::time::Duration;

pub mod prometheus;
pub mod web;

/// Why a provider could not take a measurement.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client for measurements: {reason}")]
    Client {
        /// What the client builder said.
        reason: String,
    },
    /// The request could not be built (a malformed URL or header).
    #[error("invalid request to {url} (check the provider's address, url and headers): {reason}")]
    InvalidRequest {
        /// The URL asked for.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// Nothing answered at the address.
    #[error("cannot reach {url} (is the address right and the server up?): {reason}")]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// The underlying connection error.
        reason: String,
    },
    /// The server did not answer within the timeout.
    #[error("{url} did not answer within the timeout")]
    Timeout {
        /// The URL asked for.
        url: String,
    },
    /// The connection broke while sending the request or reading the answer.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL asked for.
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// The server answered with a status other than 2xx.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The body was not the JSON expected.
    #[error("{url} did not answer valid JSON ({reason}): {body}")]
    BadJson {
        /// The URL asked for.
        url: String,
        /// What the JSON parser said.
        reason: String,
        /// The start of the response body.
        body: String,
    },
    /// Prometheus rejected or failed the query.
    #[error("Prometheus at {address} rejected query {query:?}: {error_type}: {error}")]
    Query {
        /// The Prometheus address.
        address: String,
        /// The query as sent.
        query: String,
        /// Prometheus' `errorType` (`bad_data`, `execution`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error` message.
        error: String,
    },
    /// The answer was JSON of an unexpected shape.
    #[error("unexpected answer from {url}: {reason}")]
    UnexpectedResponse {
        /// The URL asked for.
        url: String,
        /// What was unexpected.
        reason: String,
    },
    /// The `jsonPath` is not a valid RFC 9535 JSONPath.
    #[error("invalid jsonPath {path:?} (RFC 9535 syntax, e.g. `$.status`): {reason}")]
    BadJsonPath {
        /// The path as written.
        path: String,
        /// What the parser said.
        reason: String,
    },
}

/// The HTTP client providers share, with an overall `timeout` per request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    // reqwest is built without a crypto provider of its own (its default would pull in
    // aws-lc-rs); the workspace uses ring. Err means one is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        // Measurements are seconds apart: a kept-alive connection the server (or a load
        // balancer) closed meanwhile would fail the next one for nothing.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| ProviderError::Client {
            reason: error_chain(&e),
        })
}

/// Map a reqwest error to the provider error that says what failed.
pub(crate) fn request_error(url: &str, e: &reqwest::Error) -> ProviderError {
    let url = url.to_string();
    let reason = error_chain(e);
    if e.is_timeout() {
        ProviderError::Timeout { url }
    } else if e.is_builder() {
        ProviderError::InvalidRequest { url, reason }
    } else if e.is_connect() {
        ProviderError::Unreachable { url, reason }
    } else {
        ProviderError::Transport { url, reason }
    }
}

/// An error and its causes as one line: reqwest's own message omits the cause (e.g.
/// "connection refused"), which is what a user needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// At most the first 200 characters of a response body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_long_bodies_on_a_char_boundary() {
        let body = "é".repeat(300);
        let cut = excerpt(body.as_bytes());
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(b"  short\n"), "short");
    }
}
