//! Kubernetes Events, the same way for every kind the controller reconciles.

use cutover_api::k8s_openapi::api::core::v1::ObjectReference;
use cutover_api::kube::runtime::events::{Event, EventType, Recorder};

/// Record an Event on `object` (the note cut to 1,000 characters); a failure to record is
/// logged, never fatal.
pub async fn publish(
    recorder: &Recorder,
    object: &ObjectReference,
    action: &str,
    reason: &str,
    message: &str,
    warning: bool,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}
