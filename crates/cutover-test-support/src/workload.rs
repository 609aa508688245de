//! A user's own workload, as a team runs it before adopting Cutover (`spec.workloadRef`):
//! a plain Deployment and the Service that selects its pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::TestNamespace;

/// Create Deployment `name`: `replicas` pods of `pod_spec`, labelled `app: name`.
pub async fn deployment(ns: &TestNamespace, name: &str, replicas: i32, pod_spec: Value) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "team": name } },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": pod_spec }
        }
    }))
    .expect("valid Deployment");
    let api: Api<Deployment> = ns.api();
    api.create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
}

/// Create Service `name` selecting `app: name`, port 80 to the pods' 8080.
pub async fn service(ns: &TestNamespace, name: &str) {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .expect("valid Service");
    let api: Api<Service> = ns.api();
    api.create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

/// A BlueGreenDeployment `name` of `replicas` pods taken from Deployment `workload`
/// (`spec.workloadRef` with `scale_down`), serving port 80 from the pods' 8080.
pub fn adopting(
    name: &str,
    workload: &str,
    replicas: i32,
    scale_down: &str,
) -> cutover_api::BlueGreenDeployment {
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": workload, "scaleDown": scale_down },
            "service": { "port": 80, "targetPort": 8080 }
        }
    }))
    .expect("valid BlueGreenDeployment")
}
