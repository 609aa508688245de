//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// What a run of the binary printed and how it exited.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `kubectl-cutover --kubeconfig KUBECONFIG -n NS ARGS...` as a user would, with no
/// `KUBECONFIG` from the environment.
pub fn cli(kubeconfig: &Path, ns: &str, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-cutover"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl-cutover");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
