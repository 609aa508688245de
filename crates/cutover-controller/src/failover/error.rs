//! Why a FailoverPolicy pass failed: one variant per failed action, with the object and the
//! cause. Why a member is unhealthy, or why a fence, promotion or move failed, is not here:
//! those are observations, reported in status and Events, and the pass goes on.

use cutover_api::kube;

/// A failed FailoverPolicy pass. Logged, and counted by the metric labelled [`Error::kind`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing through the shared object plumbing (the policy's status).
    #[error(transparent)]
    Object(#[from] crate::error::Error),
    /// Applying a member's mirror (its Service `<policy>-<member>` or EndpointSlice).
    #[error("applying {kind} {name}, the mirror of member {member}: {source}")]
    Mirror {
        member: String,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading the entry HTTPRoute.
    #[error("reading HTTPRoute {name}: {source}")]
    ReadRoute {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing a drill report ConfigMap.
    #[error("writing the drill report ConfigMap {name}: {source}")]
    Report {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Listing the drill report ConfigMaps (to keep the newest).
    #[error("listing the drill reports of FailoverPolicy {policy}: {source}")]
    ListReports {
        policy: String,
        #[source]
        source: kube::Error,
    },
    /// Deleting an old drill report ConfigMap.
    #[error("deleting the drill report ConfigMap {name}: {source}")]
    PruneReport {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Serializing what is written.
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The policy lacks a field the API server always sets.
    #[error("the FailoverPolicy has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short label for the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Object(e) => e.kind(),
            Error::Mirror { .. } => "mirror",
            Error::ReadRoute { .. } => "read_route",
            Error::Report { .. } => "report",
            Error::ListReports { .. } => "list_reports",
            Error::PruneReport { .. } => "prune_report",
            Error::Serialize { .. } => "serialize",
            Error::MissingField(_) => "missing_field",
        }
    }
}
