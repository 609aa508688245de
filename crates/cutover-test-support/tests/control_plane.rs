//! The local control plane is a real Kubernetes: controllers reconcile, the scheduler binds,
//! kwok runs the pods, EndpointSlices follow readiness and CRD schemas are enforced.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_test_support::{TestNamespace, client, wait_for, wait_for_list};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::conditions;
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const TIMEOUT: Duration = Duration::from_secs(90);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "ports": [{ "containerPort": 8080 }],
                }] },
            },
        },
    }))
    .expect("valid Deployment")
}

fn ready_replicas(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

#[tokio::test]
async fn deployment_of_three_reaches_three_ready_replicas() {
    let ns = TestNamespace::new("cp-deploy").await;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .expect("create Deployment");
    let d = wait_for(
        &deployments,
        "web",
        "Deployment web to have 3 ready replicas",
        TIMEOUT,
        |d: Option<&Deployment>| d.is_some_and(|d| ready_replicas(d) == 3),
    )
    .await;
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(3));
}

#[tokio::test]
async fn service_gets_an_endpointslice_with_three_ready_endpoints() {
    let ns = TestNamespace::new("cp-svc").await;
    let deployments: Api<Deployment> = ns.api();
    deployments
        .create(&PostParams::default(), &deployment("api", 3))
        .await
        .expect("create Deployment");
    let services: Api<Service> = ns.api();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "api" },
        "spec": {
            "selector": { "app": "api" },
            "ports": [{ "port": 80, "targetPort": 8080 }],
        },
    }))
    .expect("valid Service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");

    let slices: Api<EndpointSlice> = ns.api();
    let ready = |slices: &[std::sync::Arc<EndpointSlice>]| -> Vec<String> {
        slices
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect()
    };
    let found = wait_for_list(
        &slices,
        watcher::Config::default().labels("kubernetes.io/service-name=api"),
        "3 ready endpoints behind Service api",
        TIMEOUT,
        |s| ready(s).len() == 3,
    )
    .await;
    let mut addresses = ready(&found);
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 3, "three distinct pod IPs: {addresses:?}");
    let port = found
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find_map(|p| p.port);
    assert_eq!(port, Some(8080), "the slice carries the target port");
}

/// A CRD generated from a Rust type, with an OpenAPI bound and a CEL rule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "smoke.cutover.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    validation = "self.spec.maxReplicas >= self.spec.replicas"
)]
#[serde(rename_all = "camelCase")]
struct WidgetSpec {
    /// Desired replicas.
    #[schemars(range(min = 0))]
    replicas: i32,
    /// Upper bound of replicas.
    max_replicas: i32,
    /// Free-form labels.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[tokio::test]
async fn crd_from_a_rust_type_is_served_and_enforces_its_schema() {
    let client = client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = Widget::crd();
    let crd_name = crd.metadata.name.clone().expect("CRD name");
    crds.patch(
        &crd_name,
        &PatchParams::apply("cutover-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the apiserver accepts the generated CRD (structural schema)");
    wait_for(
        &crds,
        &crd_name,
        "the Widget CRD to be Established",
        TIMEOUT,
        conditions::is_crd_established(),
    )
    .await;

    let ns = TestNamespace::new("cp-crd").await;
    let widgets: Api<Widget> = ns.api();
    let valid = Widget::new(
        "ok",
        WidgetSpec {
            replicas: 2,
            max_replicas: 3,
            labels: BTreeMap::new(),
        },
    );
    widgets
        .create(&PostParams::default(), &valid)
        .await
        .expect("a valid Widget is accepted");

    let negative = Widget::new(
        "negative",
        WidgetSpec {
            replicas: -1,
            max_replicas: 3,
            labels: BTreeMap::new(),
        },
    );
    let err = widgets
        .create(&PostParams::default(), &negative)
        .await
        .expect_err("replicas: -1 must be rejected");
    let msg = err.to_string();
    assert!(msg.contains("spec.replicas"), "names the field: {msg}");

    let inverted = Widget::new(
        "inverted",
        WidgetSpec {
            replicas: 5,
            max_replicas: 3,
            labels: BTreeMap::new(),
        },
    );
    let err = widgets
        .create(&PostParams::default(), &inverted)
        .await
        .expect_err("the CEL rule must reject replicas > maxReplicas");
    assert!(
        err.to_string()
            .contains("self.spec.maxReplicas >= self.spec.replicas"),
        "reports the CEL rule: {err}"
    );
}
