//! The manifests under `deploy/router/` and `deploy/controller/` are accepted by a real API
//! server (server-side dry run; the Gateway API CRDs installed for the GatewayClass).

use cutover_test_support::TestNamespace;
use cutover_test_support::upstream::{self, GATEWAY_API};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde::Deserialize as _;

#[tokio::test]
async fn deploy_manifests_pass_server_side_validation() {
    let ns = TestNamespace::new("manifests").await;
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    // The namespaced objects live in cutover-system, which must exist for a dry run.
    let system = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "cutover-system" } });
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            "cutover-system",
            &PatchParams::apply("cutover-tests"),
            &Patch::Apply(&system),
        )
        .await
        .expect("namespace cutover-system");
    let root = cutover_test_support::local_cluster::workspace_root().join("deploy");
    let mut checked = 0;
    for dir in ["router", "controller"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("deploy folder")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read manifest");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc).expect("YAML");
                if value.is_null() {
                    continue;
                }
                let obj: DynamicObject = serde_yaml::from_value(value).expect("an object");
                let types = obj.types.clone().expect("apiVersion and kind");
                let (group, version) = types
                    .api_version
                    .split_once('/')
                    .unwrap_or(("", &types.api_version));
                let gvk = GroupVersionKind::gvk(group, version, &types.kind);
                let (ar, caps) = kube::discovery::pinned_kind(&ns.client, &gvk)
                    .await
                    .unwrap_or_else(|e| panic!("{}: unknown kind {gvk:?}: {e}", file.display()));
                let name = obj.metadata.name.clone().expect("name");
                let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref())
                {
                    (kube::discovery::Scope::Namespaced, Some(n)) => {
                        Api::namespaced_with(ns.client.clone(), n, &ar)
                    }
                    (kube::discovery::Scope::Namespaced, None) => {
                        Api::namespaced_with(ns.client.clone(), &ns.name, &ar)
                    }
                    (kube::discovery::Scope::Cluster, _) => Api::all_with(ns.client.clone(), &ar),
                };
                api.patch(
                    &name,
                    &PatchParams::apply("cutover-tests").dry_run(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!("{}: {} {name} rejected: {e}", file.display(), types.kind)
                });
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} objects found");
}
