//! The controller as a real process, for tests that kill it, restart it, or run two.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cutover_api::k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use cutover_local_cluster::process::{self, Stopped};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::conditions;

use crate::netns::{self, Region};
use crate::{kubeconfig, wait_for};

/// Install (server-side apply) every Cutover CRD and wait until each is Established.
pub async fn install_crds(client: &Client) {
    for crd in cutover_api::crds() {
        apply_crd(client, &crd).await;
    }
}

/// Server-side apply `crd` and wait until it is Established; panics naming the CRD when
/// the apiserver rejects it.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("cutover-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("the apiserver rejected CRD {name}: {e}"));
    wait_for(
        &crds,
        &name,
        "the CRD to be Established",
        Duration::from_secs(60),
        conditions::is_crd_established(),
    )
    .await;
}

/// A running `cutover-controller` scoped to one namespace. Killed when dropped.
#[derive(Debug)]
pub struct ControllerProcess {
    child: Child,
    /// Its identity in the leader Lease.
    pub identity: String,
    /// Port of its /metrics, /healthz, /readyz on 127.0.0.1.
    pub http_port: u16,
    /// Where its output goes.
    pub log: PathBuf,
}

impl ControllerProcess {
    /// Start `bin` watching `namespace`, holding Lease `cutover-controller` there with a
    /// lease of `lease_seconds`.
    pub async fn start(bin: &Path, namespace: &str, identity: &str, lease_seconds: u64) -> Self {
        Self::start_with(bin, &kubeconfig().await, namespace, identity, lease_seconds)
    }

    /// The same on the cluster of `kubeconfig`.
    pub fn start_with(
        bin: &Path,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        lease_seconds: u64,
    ) -> Self {
        Self::start_with_args(bin, kubeconfig, namespace, identity, lease_seconds, &[])
    }

    /// The same with more flags (`--region east`, say).
    pub fn start_with_args(
        bin: &Path,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        lease_seconds: u64,
        extra: &[&str],
    ) -> Self {
        Self::spawn(
            bin,
            kubeconfig,
            namespace,
            identity,
            lease_seconds,
            extra,
            None,
        )
    }

    /// [`Self::start_with_args`] in `region`'s network namespace (its `/metrics` on the
    /// region's loopback; `kubeconfig` must reach the API server from there, see
    /// [`crate::netns::kubeconfig_for_regions`]).
    pub fn start_in(
        region: &Region,
        bin: &Path,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        lease_seconds: u64,
        extra: &[&str],
    ) -> Self {
        Self::spawn(
            bin,
            kubeconfig,
            namespace,
            identity,
            lease_seconds,
            extra,
            Some(region),
        )
    }

    fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        lease_seconds: u64,
        extra: &[&str],
        region: Option<&Region>,
    ) -> Self {
        let http_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = cutover_local_cluster::workspace_root()
            .join("target")
            .join("test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{namespace}-{identity}.log"));
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--namespace",
            namespace,
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--identity",
            identity,
            "--lease-duration-seconds",
            &lease_seconds.to_string(),
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,cutover_controller=debug,kube_client=warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        let child = netns::within(region, || cmd.spawn()).expect("start cutover-controller");
        Self {
            child,
            identity: identity.to_string(),
            http_port,
            log,
        }
    }

    /// SIGKILL: no chance to clean up, as in a node failure.
    pub fn kill(&mut self) {
        let _ = process::stop(&mut self.child, Duration::ZERO);
    }

    /// SIGTERM and wait for a graceful exit (or SIGKILL after `grace`); the status of a
    /// graceful exit, `None` when it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        match process::stop(&mut self.child, grace) {
            Ok(Stopped::Exited(status)) => Some(status),
            Ok(Stopped::Killed(_)) | Err(_) => None,
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET `path` from its HTTP endpoint; the body.
    pub async fn http_get(&self, path: &str) -> Option<String> {
        crate::e2e::http_get(self.http_port, path).await
    }

    /// The value of an un-labelled (or first matching) sample of metric `name`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.http_get("/metrics").await?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.split(['{', ' ']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
