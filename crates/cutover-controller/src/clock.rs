//! The controller's one clock and its time formats: core timestamps (milliseconds since the
//! epoch, what `cutover-core` decides on), API times, RFC 3339 text in statuses, and
//! durations as the schemas write them (`1s`, `250ms`, `2m`).

use std::time::Duration;

use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use cutover_api::k8s_openapi::jiff;
use cutover_core::release::Timestamp;

/// Now, as the core counts time.
pub fn now() -> Timestamp {
    Timestamp(jiff::Timestamp::now().as_millisecond())
}

/// A core timestamp as an API time.
pub fn time(t: Timestamp) -> Time {
    Time(jiff::Timestamp::from_millisecond(t.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

/// An API time as a core timestamp.
pub fn timestamp(t: &Time) -> Timestamp {
    Timestamp(t.0.as_millisecond())
}

/// RFC 3339 text of a core timestamp.
pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Core timestamp from RFC 3339 text (`None` if unparseable).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| Timestamp(t.as_millisecond()))
}

/// Parse the duration in `field`, or say which field is wrong.
pub fn duration(s: &str, field: &str) -> Result<Duration, String> {
    s.parse::<cutover_api::kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| format!("{field}: {s:?} is not a duration: {e}"))
}

/// An optional duration, `default` when absent (the schema has validated the text).
pub fn duration_or(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|t| duration(t, "").ok()).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_text_and_api_time() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(parse_time(&rfc3339(t)), Some(t));
        assert_eq!(timestamp(&time(t)), t);
    }

    #[test]
    fn durations_name_the_field_when_wrong() {
        assert_eq!(duration("250ms", "f"), Ok(Duration::from_millis(250)));
        assert!(duration("soon", "spec.x").is_err_and(|e| e.starts_with("spec.x:")));
        assert_eq!(
            duration_or(None, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }
}
