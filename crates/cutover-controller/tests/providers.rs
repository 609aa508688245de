//! The `prometheus` and `web` measurement providers against real servers: a real
//! Prometheus scraping an endpoint whose metrics the test sets, and an HTTP endpoint whose
//! answers the test sets. No Kubernetes cluster needed.

use std::time::{Duration, SystemTime};

use cutover_controller::providers::web::{Method, WebRequest, measure};
use cutover_controller::providers::{ProviderError, http_client, prometheus};
use cutover_core::analysis::Value;
use cutover_test_support::prometheus::{MetricsEndpoint, Prometheus};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    http_client(Duration::from_secs(10)).expect("an HTTP client")
}

/// Set `name{labels}` to `value` and wait until Prometheus has scraped it.
async fn scraped(
    prom: &Prometheus,
    endpoint: &MetricsEndpoint,
    name: &str,
    labels: &[(&str, &str)],
    value: f64,
) {
    endpoint.set_counter(name, labels, value);
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let query = format!("{name}{{{}}}", selector.join(","));
    prom.wait_for_value(&query, |v| v == value, TIMEOUT).await;
}

#[tokio::test]
async fn prometheus_measures_a_rising_counter() {
    let endpoint = MetricsEndpoint::start();
    let labels = [("service", "shop"), ("code", "500")];
    endpoint.set_counter("http_requests_total", &labels, 10.0);
    let prom = Prometheus::start(&[endpoint.addr()]).await;
    let client = client();
    let start = SystemTime::now();

    // Two samples in the window make a rate.
    scraped(&prom, &endpoint, "http_requests_total", &labels, 10.0).await;
    scraped(&prom, &endpoint, "http_requests_total", &labels, 20.0).await;
    let rate = r#"sum(rate(http_requests_total{service="shop"}[1m]))"#;
    prom.wait_for_value(rate, |v| v > 0.0, TIMEOUT).await;
    let value = prometheus::query(&client, &prom.url(), rate)
        .await
        .expect("a measurement");
    assert!(
        matches!(value, Value::Number(n) if n > 0.0),
        "the rate of a rising counter is a positive number, got {value:?}"
    );

    // Several series: a list in label order, whatever order Prometheus answers in.
    scraped(
        &prom,
        &endpoint,
        "http_requests_total",
        &[("service", "shop"), ("code", "200")],
        7.0,
    )
    .await;
    let value = prometheus::query(&client, &format!("{}/", prom.url()), "http_requests_total")
        .await
        .expect("a measurement");
    assert_eq!(value, Value::List(vec![7.0, 20.0]));

    // A scalar expression.
    let value = prometheus::query(&client, &prom.url(), "scalar(vector(0.25))")
        .await
        .expect("a measurement");
    assert_eq!(value, Value::Number(0.25));

    // A range: every sample of the 500s series, each 10 or 20.
    let samples = prometheus::query_range(
        &client,
        &prom.url(),
        r#"http_requests_total{code="500"}"#,
        start,
        SystemTime::now(),
        Duration::from_secs(1),
    )
    .await
    .expect("samples");
    assert!(!samples.is_empty(), "a range over scraped data has samples");
    assert!(
        samples.iter().all(|v| *v == 10.0 || *v == 20.0),
        "samples of the series only: {samples:?}"
    );
    assert!(samples.contains(&20.0), "{samples:?}");
}

#[tokio::test]
async fn prometheus_no_data_is_empty_and_a_bad_query_is_an_error() {
    let endpoint = MetricsEndpoint::start();
    let prom = Prometheus::start(&[endpoint.addr()]).await;
    let client = client();

    let value = prometheus::query(&client, &prom.url(), r#"no_such_metric{service="shop"}"#)
        .await
        .expect("no data is a measurement, not an error");
    assert_eq!(value, Value::Empty);

    let err = prometheus::query(&client, &prom.url(), "sum(rate(http_requests_total[1m]")
        .await
        .expect_err("a syntax error is a provider error");
    let ProviderError::Query {
        error_type, error, ..
    } = &err
    else {
        panic!("expected Prometheus' own error, got {err:?}")
    };
    assert_eq!(error_type, "bad_data", "{err}");
    assert!(error.contains("parse error"), "{err}");

    let err = prometheus::query_range(
        &client,
        &prom.url(),
        "up",
        SystemTime::now(),
        SystemTime::now(),
        Duration::ZERO,
    )
    .await
    .expect_err("a zero step is rejected");
    assert!(matches!(err, ProviderError::Query { .. }), "{err:?}");
}

#[tokio::test]
async fn prometheus_down_is_an_error_not_a_value() {
    let endpoint = MetricsEndpoint::start();
    let mut prom = Prometheus::start(&[endpoint.addr()]).await;
    let client = client();
    let value = prometheus::query(&client, &prom.url(), "up")
        .await
        .expect("Prometheus is up");
    assert_eq!(value, Value::Number(1.0));

    prom.stop();
    let err = prometheus::query(&client, &prom.url(), "up")
        .await
        .expect_err("no measurement while Prometheus is down");
    assert!(
        matches!(err, ProviderError::Unreachable { .. }),
        "expected unreachable, got {err:?}"
    );
    assert!(err.to_string().contains(&prom.url()), "{err}");
}

fn get(url: String) -> WebRequest {
    WebRequest {
        url,
        method: Method::Get,
        headers: Vec::new(),
        body: None,
        json_path: None,
        timeout: Duration::from_secs(10),
    }
}

fn at(url: String, path: &str) -> WebRequest {
    WebRequest {
        json_path: Some(path.to_string()),
        ..get(url)
    }
}

#[tokio::test]
async fn web_extracts_json_paths() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json(
        "/status",
        &json!({"status": "ok", "errorRate": 0.02, "version": "2", "pods": [{"ready": 1}, {"ready": 0}]}),
    );
    let url = format!("{}/status", endpoint.url());
    let client = client();
    let cases = [
        ("$.status", Value::Text("ok".into())),
        ("$.errorRate", Value::Number(0.02)),
        ("$.version", Value::Text("2".into())),
        ("$.pods[*].ready", Value::List(vec![1.0, 0.0])),
        ("$.missing", Value::Empty),
    ];
    for (path, want) in cases {
        let got = measure(&client, &at(url.clone(), path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got, want, "{path}");
    }

    endpoint.set_response("/plain", 200, "text/plain", "0.5\n");
    let got = measure(&client, &get(format!("{}/plain", endpoint.url())))
        .await
        .expect("a measurement");
    assert_eq!(got, Value::Number(0.5));
}

#[tokio::test]
async fn web_sends_method_headers_and_body() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json("/check", &json!({"passed": true}));
    let req = WebRequest {
        method: Method::Post,
        headers: vec![("X-Release".into(), "shop-7".into())],
        body: Some(r#"{"color":"green"}"#.into()),
        ..at(format!("{}/check?smoke=1", endpoint.url()), "$.passed")
    };
    let got = measure(&client(), &req).await.expect("a measurement");
    assert_eq!(got, Value::Bool(true));
    let seen = endpoint.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/check?smoke=1");
    assert!(
        seen[0]
            .headers
            .contains(&("x-release".to_string(), "shop-7".to_string())),
        "{seen:?}"
    );
    assert_eq!(seen[0].body, r#"{"color":"green"}"#);
}

#[tokio::test]
async fn web_failures_are_errors() {
    let endpoint = MetricsEndpoint::start();
    let client = client();

    endpoint.set_response("/broken", 500, "text/plain", "database on fire");
    let err = measure(&client, &at(format!("{}/broken", endpoint.url()), "$.x"))
        .await
        .expect_err("a 500 is an error");
    assert!(
        matches!(&err, ProviderError::Status { status: 500, body, .. } if body.contains("on fire")),
        "{err:?}"
    );
    assert!(err.to_string().contains("500"), "{err}");

    endpoint.set_response("/html", 200, "text/html", "<html>maintenance</html>");
    let err = measure(&client, &at(format!("{}/html", endpoint.url()), "$.x"))
        .await
        .expect_err("not JSON");
    assert!(matches!(err, ProviderError::BadJson { .. }), "{err:?}");

    endpoint.set_hanging("/slow");
    let req = WebRequest {
        timeout: Duration::from_millis(300),
        ..get(format!("{}/slow", endpoint.url()))
    };
    let started = std::time::Instant::now();
    let err = measure(&client, &req)
        .await
        .expect_err("no answer is an error");
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the request's own timeout applies, took {:?}",
        started.elapsed()
    );

    let err = measure(&client, &at(format!("{}/never", endpoint.url()), "$[?"))
        .await
        .expect_err("a bad path is an error");
    assert!(matches!(err, ProviderError::BadJsonPath { .. }), "{err:?}");
    assert!(
        endpoint.requests().iter().all(|r| r.path != "/never"),
        "a bad path is reported before any request"
    );

    // A port nothing listens on: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let err = measure(&client, &get(format!("http://{closed}/")))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err:?}");
}
