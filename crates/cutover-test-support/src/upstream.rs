//! Upstream CRDs (Gateway API, Istio, ...) installed from their official Go modules, as
//! published on the Go module proxy — never hand-written copies.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;

/// Gateway API, standard channel.
pub const GATEWAY_API: (&str, &str, &str) =
    ("sigs.k8s.io/gateway-api", "v1.6.3", "config/crd/standard");
/// Istio's CRDs (`customresourcedefinitions.gen.yaml`).
pub const ISTIO: (&str, &str, &str) = ("istio.io/api", "v1.32.0", "kubernetes");
/// SMI's TrafficSplit CRD, published as `apiextensions.k8s.io/v1beta1`.
pub const SMI: (&str, &str, &str) = (
    "github.com/servicemeshinterface/smi-sdk-go",
    "v0.5.0",
    "crds/split.yaml",
);

/// Argo Rollouts' CRDs (Rollout, AnalysisTemplate, AnalysisRun, Experiment, ...), for the
/// tests of coexistence with it.
pub const ARGO_ROLLOUTS: (&str, &str, &str) = (
    "github.com/argoproj/argo-rollouts",
    // v1.10.2 requires Go 1.26.10; the machines have 1.26.8.
    "v1.10.1",
    "manifests/crds",
);
/// Flagger's CRDs (Canary, MetricTemplate, AlertProvider), one file.
pub const FLAGGER: (&str, &str, &str) = (
    "github.com/fluxcd/flagger",
    "v1.36.1",
    "artifacts/flagger/crd.yaml",
);

/// ExternalDNS' DNSEndpoint CRD, what a regional FailoverPolicy's DNS entry also writes.
pub const EXTERNAL_DNS: (&str, &str, &str) = (
    "sigs.k8s.io/external-dns",
    // v0.23.0 requires Go 1.27; the machines have 1.26.8.
    "v0.22.0",
    "config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml",
);

/// An `apiextensions.k8s.io/v1beta1` CRD as `v1` (which is all a current apiserver
/// accepts): the same group, names, served/storage versions, schema and printer columns,
/// moved to where `v1` keeps them. SMI's module publishes only the `v1beta1` form.
pub fn v1beta1_to_v1(old: &serde_yaml::Value) -> serde_yaml::Value {
    use serde_yaml::Value as Y;
    let spec = &old["spec"];
    let mut schema = spec["validation"]["openAPIV3Schema"].clone();
    if let Y::Mapping(m) = &mut schema {
        m.entry(Y::from("type")).or_insert(Y::from("object"));
    }
    let columns: Vec<Y> = spec["additionalPrinterColumns"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut c = c.clone();
            if let Y::Mapping(m) = &mut c
                && let Some(path) = m.remove(Y::from("JSONPath"))
            {
                m.insert(Y::from("jsonPath"), path);
            }
            c
        })
        .collect();
    let versions: Vec<Y> = spec["versions"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() == Some(true))
        .map(|v| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("name".into(), v["name"].clone());
            m.insert("served".into(), true.into());
            m.insert("storage".into(), v["storage"].clone());
            let mut s = serde_yaml::Mapping::new();
            s.insert("openAPIV3Schema".into(), schema.clone());
            m.insert("schema".into(), Y::Mapping(s));
            if !columns.is_empty() {
                m.insert(
                    "additionalPrinterColumns".into(),
                    Y::Sequence(columns.clone()),
                );
            }
            Y::Mapping(m)
        })
        .collect();
    let mut new_spec = serde_yaml::Mapping::new();
    for key in ["group", "scope", "names"] {
        new_spec.insert(key.into(), spec[key].clone());
    }
    new_spec.insert("versions".into(), Y::Sequence(versions));
    let mut metadata = serde_yaml::Mapping::new();
    metadata.insert("name".into(), old["metadata"]["name"].clone());
    let mut out = serde_yaml::Mapping::new();
    out.insert("apiVersion".into(), "apiextensions.k8s.io/v1".into());
    out.insert("kind".into(), "CustomResourceDefinition".into());
    out.insert("metadata".into(), Y::Mapping(metadata));
    out.insert("spec".into(), Y::Mapping(new_spec));
    Y::Mapping(out)
}

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
    // `subdir` is a folder of CRD files, or one file.
    let mut files: Vec<PathBuf> = if dir.is_file() {
        vec![dir.clone()]
    } else {
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect()
    };
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
            let value = if value.get("apiVersion").and_then(|v| v.as_str())
                == Some("apiextensions.k8s.io/v1beta1")
            {
                v1beta1_to_v1(&value)
            } else {
                value
            };
            let crd: CustomResourceDefinition = serde_yaml::from_value(value).expect("a CRD");
            crate::controller::apply_crd(client, &crd).await;
        }
    }
}
