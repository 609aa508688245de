//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::Resource as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

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

/// Findings (of `lint`), one a line, indented.
pub fn show(findings: &[impl std::fmt::Display]) -> String {
    findings
        .iter()
        .map(|f| format!("    {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A kubeconfig (written under the temp dir, in a folder named after `tag`) whose server
/// is 127.0.0.1:1, where nothing listens.
pub fn dead_kubeconfig(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let dead = dir.join("dead.kubeconfig");
    std::fs::write(
        &dead,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u, namespace: default}}]\ncurrent-context: x\n",
    )
    .expect("write kubeconfig");
    dead
}

/// Creates `object`, a Cutover object (API group `cutover.dev`), with a server-side dry run
/// and strict field validation; the server's message when it rejects it.
pub async fn dry_run_create(
    client: &kube::Client,
    namespace: &str,
    mut object: Value,
) -> Result<(), String> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .expect("kind")
        .to_owned();
    let version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map(|(_, v)| v.to_owned())
        .expect("apiVersion group/version");
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("namespace");
    }
    let mut resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("cutover.dev", &version, &kind));
    let lower = kind.to_lowercase();
    resource.plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    let namespace = (kind != "ClusterAnalysisTemplate").then_some(namespace);
    let url = DynamicObject::url_path(&resource, namespace);
    // The raw JSON, not a DynamicObject: its typed ObjectMeta would drop unknown fields.
    let body = serde_json::to_vec(&object).expect("JSON");
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let mut request = kube::core::Request::new(url)
        .create(&params, body)
        .expect("a create request");
    // kube 5's PostParams has no fieldValidation: add it as kubectl sends it.
    let uri = format!("{}&fieldValidation=Strict", request.uri());
    *request.uri_mut() = uri.parse().expect("a URI");
    match client.request::<Value>(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message.clone()),
        Err(e) => panic!("creating {kind}: {e}"),
    }
}
