//! Upstream CRDs (Gateway API, Istio, ...) installed from their official Go modules, as
//! published on the Go module proxy — never hand-written copies.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::conditions;

use crate::wait_for;

/// Gateway API, standard channel.
pub const GATEWAY_API: (&str, &str, &str) =
    ("sigs.k8s.io/gateway-api", "v1.6.3", "config/crd/standard");

/// The folder of `module@version` in the module cache (`~/.cache/cutover/gomod`, shared
/// with the control-plane build), downloading it with the ordinary `go` client if needed.
pub fn module_dir(module: &str, version: &str) -> PathBuf {
    let cache = std::env::var_os("CUTOVER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("cutover"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp/cutover-cache"));
    let out = Command::new("go")
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .env("GOMODCACHE", cache.join("gomod"))
        .env("GOFLAGS", "-mod=mod")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!("running `go mod download` for {module}: {e} (is Go installed?)")
        });
    assert!(
        out.status.success(),
        "go mod download {module}@{version} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("go mod download -json output");
    PathBuf::from(info["Dir"].as_str().expect("a module Dir"))
}

/// Install (server-side apply) every CRD in `subdir` of `module@version` and wait until
/// each is Established; other documents (e.g. admission policies) are skipped.
pub async fn install_crds(client: &Client, (module, version, subdir): (&str, &str, &str)) {
    let dir = module_dir(module, version).join(subdir);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value).expect("a CRD");
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(
                &name,
                &PatchParams::apply("cutover-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the apiserver rejected upstream CRD {name}: {e}"));
            wait_for(
                &crds,
                &name,
                "the CRD to be Established",
                Duration::from_secs(60),
                conditions::is_crd_established(),
            )
            .await;
        }
    }
}
