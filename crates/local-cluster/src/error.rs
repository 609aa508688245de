use std::path::PathBuf;

/// Everything that can go wrong while building, starting or stopping a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the `go` command was not found on PATH; install Go 1.26 (it builds the control plane once) and retry"
    )]
    GoMissing,
    #[error("building the control-plane binaries failed (exit {code:?}); see the output above")]
    Build { code: Option<i32> },
    #[error("could not run {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{component} could not bind 127.0.0.1:{port}: the port is taken; free it or retry (ports are picked at random)\n--- last lines of {log} ---\n{tail}"
    )]
    PortTaken {
        component: String,
        port: u16,
        log: PathBuf,
        tail: String,
    },
    #[error("{component} failed to start: {reason}\n--- last lines of {log} ---\n{tail}")]
    ComponentFailed {
        component: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },
    #[error("cluster {name}: {what} did not happen within {seconds}s")]
    Timeout {
        name: String,
        what: String,
        seconds: u64,
    },
    #[error("generating the cluster's certificates failed: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is unreadable: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("talking to the cluster's API server: {0}")]
    Kube(#[from] kube::Error),
    #[error("reading the cluster's kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("invalid cluster name {0:?}: use lowercase letters, digits and '-'")]
    InvalidName(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("this machine cannot run a real node: {0}")]
    RealNodeUnsupported(String),
    #[error(
        "cluster {0} already runs the real node (one at a time: it owns the bridge and the node name); stop it with `cargo xtask cluster down --name {0}`"
    )]
    RealNodeBusy(String),
}

/// Attach a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, Error>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
