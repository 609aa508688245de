//! The `prometheus` provider: an instant query (a metric's measurement) or a range query
//! (the samples a `compare` analysis feeds to its statistical test), over Prometheus' HTTP
//! API (`/api/v1/query`, `/api/v1/query_range`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_core::analysis::Value;
use serde::Deserialize;
use tracing::debug;

use super::{ProviderError, excerpt, request_error};

/// Run `query` as an instant query at `address` (e.g. `http://prometheus:9090`).
///
/// A scalar is a `Number`; a vector is `Empty` with no series, a `Number` with one and a
/// `List` ordered by label set with several; a matrix is the `List` of each series' last
/// value (`Empty` with no series); a string is `Text`. `NaN` stays `NaN`, so the verdict
/// sees it as missing data.
pub async fn query(
    client: &reqwest::Client,
    address: &str,
    query: &str,
) -> Result<Value, ProviderError> {
    let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
    let (status, body) = get(client, &url, &[("query", query.to_string())]).await?;
    let data = decode(&url, address, query, status, &body)?;
    instant_value(&url, data)
}

/// Run `query` as a range query from `start` to `end` every `step` and return every
/// sample of every series (series ordered by label set, samples in time order), `NaN`
/// included: the statistical test decides what to do with them.
pub async fn query_range(
    client: &reqwest::Client,
    address: &str,
    query: &str,
    start: SystemTime,
    end: SystemTime,
    step: Duration,
) -> Result<Vec<f64>, ProviderError> {
    let url = format!("{}/api/v1/query_range", address.trim_end_matches('/'));
    let params = [
        ("query", query.to_string()),
        ("start", unix_seconds(start)),
        ("end", unix_seconds(end)),
        ("step", step.as_secs_f64().to_string()),
    ];
    let (status, body) = get(client, &url, &params).await?;
    let data = decode(&url, address, query, status, &body)?;
    range_values(&url, data)
}

/// GET `url` with `params`; the status and the whole body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, String)],
) -> Result<(u16, Vec<u8>), ProviderError> {
    let response = client
        .get(url)
        .query(params)
        .send()
        .await
        .map_err(|e| request_error(url, &e))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| request_error(url, &e))?;
    Ok((status, body.to_vec()))
}

/// A time as Prometheus takes it: Unix seconds with milliseconds.
fn unix_seconds(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    format!("{secs:.3}")
}

/// The envelope of every Prometheus API answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// A query result, by `resultType`.
#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar(Sample),
    String(Sample),
    Vector(Vec<InstantSeries>),
    Matrix(Vec<RangeSeries>),
}

/// `[unix seconds, "value"]`: Prometheus sends values as strings ("NaN" and "+Inf" included).
type Sample = (f64, String);

/// One series of a vector.
#[derive(Debug, Deserialize)]
struct InstantSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Absent when the series holds a native histogram instead.
    #[serde(default)]
    value: Option<Sample>,
}

/// One series of a matrix.
#[derive(Debug, Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Empty when the series holds native histograms instead.
    #[serde(default)]
    values: Vec<Sample>,
}

/// The result of a Prometheus answer, or the error it reports.
fn decode(
    url: &str,
    address: &str,
    query: &str,
    status: u16,
    body: &[u8],
) -> Result<Data, ProviderError> {
    let envelope = match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) => envelope,
        // Not Prometheus' JSON: a proxy's error page, or the wrong address.
        Err(_) if !(200..300).contains(&status) => {
            return Err(ProviderError::Status {
                url: url.to_string(),
                status,
                body: excerpt(body),
            });
        }
        Err(e) => {
            return Err(ProviderError::BadJson {
                url: url.to_string(),
                reason: e.to_string(),
                body: excerpt(body),
            });
        }
    };
    if !envelope.warnings.is_empty() {
        debug!(address, query, warnings = ?envelope.warnings, "Prometheus answered with warnings");
    }
    // Prometheus reports bad queries with 400/422/503 and this envelope.
    if envelope.status != "success" {
        return Err(ProviderError::Query {
            address: address.to_string(),
            query: query.to_string(),
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".to_string()),
            error: envelope
                .error
                .unwrap_or_else(|| format!("status {:?}", envelope.status)),
        });
    }
    if !(200..300).contains(&status) {
        return Err(ProviderError::Status {
            url: url.to_string(),
            status,
            body: excerpt(body),
        });
    }
    envelope
        .data
        .ok_or_else(|| ProviderError::UnexpectedResponse {
            url: url.to_string(),
            reason: "status success without data".to_string(),
        })
}

/// What an instant query measured.
fn instant_value(url: &str, data: Data) -> Result<Value, ProviderError> {
    match data {
        Data::Scalar((_, v)) => Ok(Value::Number(number(url, &v)?)),
        Data::String((_, s)) => Ok(Value::Text(s)),
        Data::Vector(mut series) => {
            series.sort_by(|a, b| a.metric.cmp(&b.metric));
            let values = series
                .iter()
                .map(|s| match &s.value {
                    Some((_, v)) => number(url, v),
                    None => Err(histogram_error(url, &s.metric)),
                })
                .collect::<Result<Vec<f64>, _>>()?;
            Ok(match values.as_slice() {
                [] => Value::Empty,
                [one] => Value::Number(*one),
                _ => Value::List(values),
            })
        }
        Data::Matrix(mut series) => {
            if series.is_empty() {
                return Ok(Value::Empty);
            }
            series.sort_by(|a, b| a.metric.cmp(&b.metric));
            let values = series
                .iter()
                .map(|s| match s.values.last() {
                    Some((_, v)) => number(url, v),
                    None => Err(histogram_error(url, &s.metric)),
                })
                .collect::<Result<Vec<f64>, _>>()?;
            Ok(Value::List(values))
        }
    }
}

/// Every sample of a range query, series by series.
fn range_values(url: &str, data: Data) -> Result<Vec<f64>, ProviderError> {
    let Data::Matrix(mut series) = data else {
        return Err(ProviderError::UnexpectedResponse {
            url: url.to_string(),
            reason: "a range query answered with a result that is not a matrix".to_string(),
        });
    };
    series.sort_by(|a, b| a.metric.cmp(&b.metric));
    let mut out = Vec::new();
    for s in &series {
        if s.values.is_empty() {
            return Err(histogram_error(url, &s.metric));
        }
        for (_, v) in &s.values {
            out.push(number(url, v)?);
        }
    }
    Ok(out)
}

/// A sample value: a float as Go prints it, `NaN`, `+Inf` or `-Inf`.
fn number(url: &str, text: &str) -> Result<f64, ProviderError> {
    // Rust's parser takes "NaN", "+Inf" and "-Inf" (case-insensitive) as Go writes them.
    text.parse::<f64>()
        .map_err(|_| ProviderError::UnexpectedResponse {
            url: url.to_string(),
            reason: format!("sample value {text:?} is not a number"),
        })
}

/// The error for a series that carries native histograms rather than numbers.
fn histogram_error(url: &str, labels: &BTreeMap<String, String>) -> ProviderError {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    ProviderError::UnexpectedResponse {
        url: url.to_string(),
        reason: format!(
            "series {{{}}} holds native histograms, not numbers; reduce them in the query \
             (e.g. histogram_quantile or histogram_sum)",
            labels.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://prom:9090/api/v1/query";

    fn instant(status: u16, body: &str) -> Result<Value, ProviderError> {
        let data = decode(URL, "http://prom:9090", "q", status, body.as_bytes())?;
        instant_value(URL, data)
    }

    fn range(status: u16, body: &str) -> Result<Vec<f64>, ProviderError> {
        let data = decode(URL, "http://prom:9090", "q", status, body.as_bytes())?;
        range_values(URL, data)
    }

    #[test]
    fn scalar_is_a_number() {
        let body = r#"{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"0.25"]}}"#;
        assert_eq!(instant(200, body).expect("a value"), Value::Number(0.25));
    }

    #[test]
    fn string_is_text() {
        let body = r#"{"status":"success","data":{"resultType":"string","result":[1435781451.781,"blue"]}}"#;
        assert_eq!(
            instant(200, body).expect("a value"),
            Value::Text("blue".to_string())
        );
    }

    #[test]
    fn empty_vector_is_empty_not_an_error() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(instant(200, body).expect("a value"), Value::Empty);
    }

    #[test]
    fn one_series_vector_is_a_number() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1435781451.781,"0.0042"]}]}}"#;
        assert_eq!(instant(200, body).expect("a value"), Value::Number(0.0042));
    }

    #[test]
    fn several_series_are_a_list_ordered_by_labels() {
        // As in the Prometheus HTTP API docs, in an order the server chose.
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"node","instance":"localhost:9100"},"value":[1435781451.781,"0"]},
            {"metric":{"__name__":"up","job":"prometheus","instance":"localhost:9090"},"value":[1435781451.781,"1"]}]}}"#;
        assert_eq!(
            instant(200, body).expect("a value"),
            Value::List(vec![1.0, 0.0])
        );
    }

    #[test]
    fn nan_and_infinities_are_parsed() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"NaN"]},
            {"metric":{"a":"2"},"value":[1,"+Inf"]},
            {"metric":{"a":"3"},"value":[1,"-Inf"]},
            {"metric":{"a":"4"},"value":[1,"1e-3"]}]}}"#;
        let Value::List(values) = instant(200, body).expect("a value") else {
            panic!("not a list")
        };
        assert!(values[0].is_nan());
        assert_eq!(values[1..], [f64::INFINITY, f64::NEG_INFINITY, 0.001]);
        let nan = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        let value = instant(200, nan).expect("a value");
        assert!(matches!(value, Value::Number(n) if n.is_nan()));
        assert!(
            value.is_missing(),
            "NaN must be missing data, never a success"
        );
    }

    #[test]
    fn matrix_is_the_last_value_of_each_series() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","job":"node","instance":"localhost:9091"},
             "values":[[1435781430.781,"0"],[1435781445.781,"0"],[1435781460.781,"0.5"]]},
            {"metric":{"__name__":"up","job":"prometheus","instance":"localhost:9090"},
             "values":[[1435781430.781,"1"],[1435781445.781,"1"],[1435781460.781,"1"]]}]}}"#;
        assert_eq!(
            instant(200, body).expect("a value"),
            Value::List(vec![1.0, 0.5])
        );
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(instant(200, empty).expect("a value"), Value::Empty);
    }

    #[test]
    fn range_flattens_every_sample_of_every_series() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"instance":"b"},"values":[[1,"4"],[2,"5"]]},
            {"metric":{"instance":"a"},"values":[[1,"1"],[2,"2"],[3,"NaN"]]}]}}"#;
        let values = range(200, body).expect("a value");
        assert_eq!(values.len(), 5);
        assert_eq!(values[..2], [1.0, 2.0]);
        assert!(values[2].is_nan());
        assert_eq!(values[3..], [4.0, 5.0]);
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(
            range(200, vector),
            Err(ProviderError::UnexpectedResponse { .. })
        ));
    }

    #[test]
    fn prometheus_errors_name_type_and_message() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:6: parse error: unexpected end of input"}"#;
        let err = instant(400, body).expect_err("an error");
        let ProviderError::Query {
            error_type, error, ..
        } = &err
        else {
            panic!("not a query error: {err:?}")
        };
        assert_eq!(error_type, "bad_data");
        assert!(error.contains("parse error"), "{error}");
        assert!(err.to_string().contains("bad_data"), "{err}");
        let timeout = r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#;
        assert!(matches!(
            instant(503, timeout),
            Err(ProviderError::Query { error_type, .. }) if error_type == "timeout"
        ));
    }

    #[test]
    fn warnings_do_not_fail_a_query() {
        let body = r#"{"status":"success","warnings":["PromQL info: metric might not be a counter"],
            "data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]}}"#;
        assert_eq!(instant(200, body).expect("a value"), Value::Number(3.0));
    }

    #[test]
    fn not_prometheus_json_is_a_status_or_json_error() {
        let html = "<html><body>502 Bad Gateway</body></html>";
        let err = instant(502, html).expect_err("an error");
        assert!(
            matches!(&err, ProviderError::Status { status: 502, body, .. } if body.contains("Bad Gateway")),
            "{err:?}"
        );
        assert!(matches!(
            instant(200, "OK"),
            Err(ProviderError::BadJson { .. })
        ));
        let unknown = r#"{"status":"success","data":{"resultType":"tensor","result":[]}}"#;
        assert!(matches!(
            instant(200, unknown),
            Err(ProviderError::BadJson { .. })
        ));
        let bad_value =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"many"]}}"#;
        assert!(matches!(
            instant(200, bad_value),
            Err(ProviderError::UnexpectedResponse { .. })
        ));
    }

    #[test]
    fn native_histograms_are_an_error_naming_the_series() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"latency"},"histogram":[1,{"count":"2","sum":"3","buckets":[]}]}]}}"#;
        let err = instant(200, body).expect_err("an error");
        assert!(err.to_string().contains("latency"), "{err}");
    }

    #[test]
    fn times_are_unix_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(unix_seconds(t), "1700000000.123");
    }
}
