//! Helpers shared by the controller's integration tests.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeSet;

use cutover_api::{BlueGreenDeployment, COLOR_LABEL};
use cutover_test_support::TestNamespace;
use cutover_test_support::controller::{ControllerProcess, install_crds};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

pub use cutover_test_support::release::{
    TIMEOUT, active, condition, healthy_on, phase, request, wait_bgd,
};

/// A namespace with the CRDs installed and a controller watching it.
pub async fn setup(prefix: &str) -> (TestNamespace, ControllerProcess) {
    let ns = TestNamespace::new(prefix).await;
    install_crds(&ns.client).await;
    let ctrl = start_controller(&ns, "c1").await;
    (ns, ctrl)
}

pub async fn start_controller(ns: &TestNamespace, identity: &str) -> ControllerProcess {
    ControllerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_cutover-controller")),
        &ns.name,
        identity,
        4,
    )
    .await
}

/// A BlueGreenDeployment `name` running `image`, merged with `extra_spec`.
pub fn bgd(
    name: &str,
    image: &str,
    replicas: i32,
    extra_spec: serde_json::Value,
) -> BlueGreenDeployment {
    let mut spec = serde_json::json!({
        "replicas": replicas,
        "selector": { "matchLabels": { "app": name } },
        "template": {
            "metadata": { "labels": { "app": name } },
            "spec": { "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 8080 }] }] }
        },
        "service": { "port": 80, "targetPort": 8080 }
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "BlueGreenDeployment",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("valid BlueGreenDeployment")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

pub async fn create(ns: &TestNamespace, b: &BlueGreenDeployment) {
    let api: Api<BlueGreenDeployment> = ns.api();
    api.create(&PostParams::default(), b)
        .await
        .expect("create BlueGreenDeployment");
}

/// Set the image of the first container (a new revision).
pub async fn set_image(ns: &TestNamespace, name: &str, image: &str) {
    patch_spec(ns, name, serde_json::json!({ "template": { "spec": { "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 8080 }] }] } } })).await;
}

pub async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) {
    let api: Api<BlueGreenDeployment> = ns.api();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await
    .expect("patch spec");
}

/// Write a request annotation (`cutover.dev/promote`, ...) with a fresh token.
/// The color a Service selects.
pub async fn selected(ns: &TestNamespace, svc: &str) -> Option<String> {
    let api: Api<Service> = ns.api();
    api.get_opt(svc)
        .await
        .expect("get Service")?
        .spec?
        .selector?
        .get(COLOR_LABEL)
        .cloned()
}

pub async fn deployment(ns: &TestNamespace, name: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    api.get(name).await.expect("get Deployment")
}

/// UIDs of every pod in the namespace.
pub async fn pod_uids(ns: &TestNamespace) -> BTreeSet<String> {
    let api: Api<Pod> = ns.api();
    api.list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect()
}

/// The notes of the Events (events.k8s.io) with `reason` in namespace `ns`.
pub async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}
