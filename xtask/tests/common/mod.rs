//! Helpers shared by the xtask end-to-end tests: run `cargo xtask` as a user does, wait on
//! a condition with a timeout, GET over plain HTTP.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cutover_test_support::local_cluster as local;

/// How long any one wait may take.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// Run `cargo xtask ARGS` as a user would; its stdout.
pub fn xtask(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).current_dir(local::workspace_root());
    cutover_test_support::e2e::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run cargo xtask");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo xtask {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Poll `check` until it returns Some, for at most [`TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET http://addr/path; the body of a 200.
pub async fn get(addr: &str, path: &str) -> Option<String> {
    let text = cutover_test_support::e2e::http_get_at(addr.parse().ok()?, path).await?;
    text.starts_with("HTTP/1.1 200")
        .then(|| text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The local clusters the tests start with a real node (one at a time machine-wide: each
/// test stops the others' leftovers first).
const REAL_NODE_CLUSTERS: [&str; 3] = ["realnode-test", "realnode-e2e", "demo-real"];

/// Stop any real-node cluster an interrupted run left behind (it would hold the bridge).
pub fn stop_real_nodes() {
    for name in REAL_NODE_CLUSTERS {
        let _ = xtask(&["cluster", "down", "--name", name]);
    }
}

/// `cargo xtask cluster up --real-node` (no kwok node, no process node) and `cargo xtask
/// image --load`, as a user runs them: (the kubeconfig, the node's containerd socket).
pub fn start_real_node(name: &str) -> (PathBuf, PathBuf) {
    let up = xtask(&[
        "cluster",
        "up",
        "--name",
        name,
        "--real-node",
        "--nodes",
        "0",
        "--no-process-node",
    ]);
    let kubeconfig = PathBuf::from(up.lines().last().expect("the kubeconfig path").trim());
    xtask(&["image", "--debug", "--load", name]);
    let socket = local::real_node::read_state(&local::state_dir(name))
        .expect("state")
        .expect("a real node")
        .containerd_socket;
    (kubeconfig, socket)
}
