//! Errors of the controller: one variant per failed action, with the object and the cause.

/// Why a reconcile failed. Each is logged, counted (`cutover_reconcile_errors_total`,
/// labelled by [`Error::kind`]) and retried; what the user must fix is a refusal with its
/// own Event and condition instead, not an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} exists and is not owned by this BlueGreenDeployment")]
    Taken { kind: &'static str, name: String },
    #[error("writing the status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {message}")]
    Remote { what: String, message: String },
    #[error("waiting for {what}")]
    Waiting { what: String },
    #[error("no ready endpoints of the {color} color to send traffic to yet")]
    NoEndpoints { color: &'static str },
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("{what} are not supported")]
    Unsupported { what: &'static str },
    #[error(
        "the watch caches have not listed yet (the controller needs list and watch on what it reads)"
    )]
    NotSynced,
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The error of a pass run through kube-runtime's `finalizer()` on object `name`.
    pub fn from_finalizer(e: kube::runtime::finalizer::Error<Error>, name: String) -> Error {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(source) | F::RemoveFinalizer(source) => Error::Apply {
                kind: "BlueGreenDeployment",
                name,
                source,
            },
            F::UnnamedObject => Error::MissingField("metadata.name"),
            F::InvalidFinalizer => Error::MissingField("a valid finalizer name"),
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Taken { .. } => "taken",
            Error::Status { .. } => "status",
            Error::Remote { .. } => "remote",
            Error::Waiting { .. } => "waiting",
            Error::NoEndpoints { .. } => "no_endpoints",
            Error::MissingField(_) => "missing_field",
            Error::Unsupported { .. } => "unsupported",
            Error::Serialize { .. } => "serialize",
            Error::NotSynced => "not_synced",
        }
    }
}
