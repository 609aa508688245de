//! Kubernetes Events, the same way for every kind the controller reconciles.

use cutover_api::k8s_openapi::api::core::v1::ObjectReference;
use cutover_api::kube::Client;
use cutover_api::kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Where Events go and who reports them.
///
/// A [`Recorder`] is made per Event, as kube-runtime intends ("created at the start of your
/// controller's reconcile fn"): one kept for the process remembers every Event it sent for
/// six minutes to count repeats, about 18 KiB per BlueGreenDeployment after a release of
/// all of them (heaptrack, `cargo xtask bench scale --count 500`). The controller sends an
/// Event per transition, so there are no repeats to count.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Record an Event on `object` (the note cut to 1,000 characters); a failure to record
    /// is logged, never fatal.
    pub async fn publish(
        &self,
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
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, object).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}
