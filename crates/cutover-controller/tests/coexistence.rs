//! Coexistence with Argo Rollouts and Flagger: their CRDs (installed from their Go modules)
//! and objects they own live in the same namespace as BlueGreenDeployments. Cutover works
//! beside them — its analysis templates are its own even where an Argo Rollouts template has
//! the same name — and never writes, adopts or deletes what they own: every such object
//! keeps its uid and no managed-fields entry of Cutover's appears on it.

mod common;

use common::*;
use cutover_api::analysis::{AnalysisPhase, AnalysisRun};
use cutover_api::{Color, Phase};
use cutover_test_support::prometheus::MetricsEndpoint;
use cutover_test_support::{TestNamespace, upstream, workload};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};

/// An object someone else owns: how to read it again, and what it was when created.
struct Foreign {
    resource: ApiResource,
    name: String,
    uid: String,
    spec: Value,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    let mut r = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    r.plural = plural.to_string();
    r
}

/// Create `body` (of `resource`) in the test namespace.
async fn make(ns: &TestNamespace, resource: &ApiResource, body: Value) -> Foreign {
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, resource);
    let object: DynamicObject = serde_json::from_value(body).expect("an object");
    let made = api
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", resource.kind, object.metadata.name));
    Foreign {
        resource: resource.clone(),
        name: made.metadata.name.clone().expect("a name"),
        uid: made.metadata.uid.clone().expect("a uid"),
        spec: made.data["spec"].clone(),
    }
}

fn owner(of: &Foreign, api_version: &str) -> Value {
    json!([{ "apiVersion": api_version, "kind": of.resource.kind, "name": of.name,
             "uid": of.uid, "controller": true, "blockOwnerDeletion": true }])
}

fn pod_template(app: &str, extra_labels: Value) -> Value {
    let mut labels = json!({ "app": app });
    if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({ "metadata": { "labels": labels },
            "spec": { "containers": [{ "name": "app", "image": format!("{app}:1") }] } })
}

/// What Argo Rollouts runs for a canary Rollout `shop`: the Rollout, its own
/// AnalysisTemplate `error-rate` (the name a Cutover template also has), the ReplicaSet it
/// owns and the two Services it manages.
async fn argo_rollouts_objects(ns: &TestNamespace) -> Vec<Foreign> {
    let rollouts = resource("argoproj.io", "v1alpha1", "Rollout", "rollouts");
    let templates = resource(
        "argoproj.io",
        "v1alpha1",
        "AnalysisTemplate",
        "analysistemplates",
    );
    let template = make(
        ns,
        &templates,
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": { "name": "error-rate" },
            "spec": { "metrics": [{
                "name": "error-rate", "successCondition": "result[0] < 0.05",
                "provider": { "prometheus": { "address": "http://127.0.0.1:9", "query": "up" } }
            }] }
        }),
    )
    .await;
    let rollout = make(
        ns,
        &rollouts,
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "shop" },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": pod_template("shop", json!({})),
                "strategy": { "canary": {
                    "canaryService": "shop-canary", "stableService": "shop-stable",
                    "steps": [{ "setWeight": 20 }, { "pause": {} },
                              { "analysis": { "templates": [{ "templateName": "error-rate" }] } }]
                } }
            }
        }),
    )
    .await;
    let hash = json!({ "rollouts-pod-template-hash": "6b7c9d" });
    let rs = make(ns, &resource("apps", "v1", "ReplicaSet", "replicasets"), json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": "shop-6b7c9d", "labels": { "app": "shop", "rollouts-pod-template-hash": "6b7c9d" },
                      "ownerReferences": owner(&rollout, "argoproj.io/v1alpha1") },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "shop", "rollouts-pod-template-hash": "6b7c9d" } },
            "template": pod_template("shop", hash.clone())
        }
    }))
    .await;
    let services = resource("", "v1", "Service", "services");
    let mut out = vec![template, rollout, rs];
    for name in ["shop-stable", "shop-canary"] {
        out.push(
            make(ns, &services, json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name,
                              "annotations": { "argo-rollouts.argoproj.io/managed-by-rollouts": "shop" } },
                "spec": { "selector": { "app": "shop", "rollouts-pod-template-hash": "6b7c9d" },
                          "ports": [{ "port": 80, "targetPort": 8080 }] }
            }))
            .await,
        );
    }
    out
}

/// What Flagger runs for a Canary `api`: the user's Deployment `api` (scaled to zero by
/// Flagger), the Canary, its MetricTemplate, and the primary Deployment and three Services
/// the Canary owns.
async fn flagger_objects(ns: &TestNamespace) -> Vec<Foreign> {
    let deployments = resource("apps", "v1", "Deployment", "deployments");
    let target = make(
        ns,
        &deployments,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
            "spec": { "replicas": 0, "selector": { "matchLabels": { "app": "api" } },
                      "template": pod_template("api", json!({})) }
        }),
    )
    .await;
    let metric = make(
        ns,
        &resource(
            "flagger.app",
            "v1beta1",
            "MetricTemplate",
            "metrictemplates",
        ),
        json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": { "name": "error-rate" },
            "spec": { "provider": { "type": "prometheus", "address": "http://127.0.0.1:9" },
                      "query": "sum(rate(http_requests_total{status=~\"5..\"}[1m]))" }
        }),
    )
    .await;
    let canary = make(
        ns,
        &resource("flagger.app", "v1beta1", "Canary", "canaries"),
        json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": { "name": "api" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "api" },
                "service": { "port": 80, "targetPort": 8080 },
                "analysis": { "interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10,
                              "metrics": [{ "name": "errors", "interval": "1m",
                                            "templateRef": { "name": "error-rate" },
                                            "thresholdRange": { "max": 1 } }] }
            }
        }),
    )
    .await;
    let primary = make(ns, &deployments, json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "api-primary", "ownerReferences": owner(&canary, "flagger.app/v1beta1") },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "api-primary" } },
                  "template": pod_template("api-primary", json!({})) }
    }))
    .await;
    let services = resource("", "v1", "Service", "services");
    let mut out = vec![target, metric, primary];
    for (name, app) in [
        ("api", "api-primary"),
        ("api-primary", "api-primary"),
        ("api-canary", "api"),
    ] {
        out.push(
            make(ns, &services, json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "ownerReferences": owner(&canary, "flagger.app/v1beta1") },
                "spec": { "selector": { "app": app }, "ports": [{ "port": 80, "targetPort": 8080 }] }
            }))
            .await,
        );
    }
    out.push(canary);
    out
}

/// Each foreign object still exists as created (same uid, same spec where the test wrote
/// it and no controller of theirs runs) and carries no field manager of Cutover's.
async fn untouched(ns: &TestNamespace, foreign: &[Foreign]) {
    for f in foreign {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ns.client.clone(), &ns.name, &f.resource);
        let now = api
            .get(&f.name)
            .await
            .unwrap_or_else(|e| panic!("{} {} is gone: {e}", f.resource.kind, f.name));
        assert_eq!(
            now.metadata.uid.as_deref(),
            Some(f.uid.as_str()),
            "{} {} was replaced",
            f.resource.kind,
            f.name
        );
        let managers: Vec<String> = now
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(
            managers.iter().all(|m| !m.starts_with("cutover")),
            "{} {} was written by Cutover: {managers:?}",
            f.resource.kind,
            f.name
        );
        // kube-controller-manager scales ReplicaSets and Deployments (their spec is theirs
        // to keep); Services and the other projects' resources have no controller here.
        if !matches!(f.resource.kind.as_str(), "ReplicaSet") {
            let mut spec = now.data["spec"].clone();
            let mut was = f.spec.clone();
            if f.resource.kind == "Service" {
                // Defaulted by the API server when created: the same on both sides.
                for s in [&mut spec, &mut was] {
                    if let Some(o) = s.as_object_mut() {
                        o.retain(|k, _| k == "selector" || k == "ports");
                    }
                }
            }
            assert_eq!(spec, was, "{} {}'s spec changed", f.resource.kind, f.name);
        }
    }
}

#[tokio::test]
async fn cutover_works_beside_argo_rollouts_and_flagger_and_never_touches_their_objects() {
    let (ns, _ctrl) = setup("coexist").await;
    upstream::install_crds(&ns.client, upstream::ARGO_ROLLOUTS).await;
    upstream::install_crds(&ns.client, upstream::FLAGGER).await;
    let mut foreign = argo_rollouts_objects(&ns).await;
    foreign.extend(flagger_objects(&ns).await);

    // Cutover's own AnalysisTemplate `error-rate`, beside Argo Rollouts' of the same name.
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json("/verdict.json", &json!({ "ok": true }));
    let templates: Api<cutover_api::analysis::AnalysisTemplate> = ns.api();
    templates
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": { "name": "error-rate" },
                "spec": { "metrics": [{
                    "name": "verdict", "count": 1, "successCondition": "result == true",
                    "provider": { "web": { "url": format!("{}/verdict.json", endpoint.url()), "jsonPath": "$.ok" } }
                }] }
            }))
            .expect("a template"),
        )
        .await
        .expect("create the AnalysisTemplate");

    // A BlueGreenDeployment released with that template, in the same namespace.
    let analysed = json!({ "strategy": { "prePromotionAnalysis": { "templates": [{ "templateName": "error-rate" }] } } });
    create(&ns, &bgd("web", "web:1", 1, analysed)).await;
    // One named like Flagger's Canary: its live Service `api` is the Canary's.
    create(&ns, &bgd("api", "api:1", 1, json!({}))).await;
    // One adopting the Deployment Flagger runs for that Canary.
    create(
        &ns,
        &workload::adopting("api-adopted", "api-primary", 1, "OnSuccess"),
    )
    .await;

    healthy_on(&ns, "web", Color::Blue).await;
    set_image(&ns, "web", "web:2").await;
    healthy_on(&ns, "web", Color::Green).await;
    let runs: Api<AnalysisRun> = ns.api();
    let runs = runs.list(&ListParams::default()).await.expect("runs").items;
    assert_eq!(runs.len(), 1, "one pre-promotion run");
    let status = runs[0].status.clone().expect("run status");
    assert_eq!(
        status.phase,
        Some(AnalysisPhase::Successful),
        "Cutover's template was run, not Argo Rollouts' (whose Prometheus does not exist): {status:?}"
    );

    let refused = wait_bgd(&ns, "api", "refused for Flagger's Service", |b| {
        phase(b) == Some(Phase::Degraded)
    })
    .await;
    let message = refused.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("Service api") && message.contains("not owned"),
        "{message}"
    );
    let refused = wait_bgd(
        &ns,
        "api-adopted",
        "refused for Flagger's Deployment",
        |b| phase(b) == Some(Phase::Degraded),
    )
    .await;
    let message = refused.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("spec.workloadRef") && message.contains("Canary api"),
        "{message}"
    );

    untouched(&ns, &foreign).await;
    // Nothing of Cutover's was made for the refused ones, and Flagger's scale is kept.
    let services: Api<Service> = ns.api();
    for name in ["api-blue", "api-green", "api-adopted-blue"] {
        assert!(
            services.get_opt(name).await.expect("read").is_none(),
            "{name} was made"
        );
    }
    let deployments: Api<Deployment> = ns.api();
    let primary = deployments.get("api-primary").await.expect("api-primary");
    assert_eq!(primary.spec.and_then(|s| s.replicas), Some(1));
    let target = deployments.get("api").await.expect("api");
    assert_eq!(target.spec.and_then(|s| s.replicas), Some(0));
    // Argo Rollouts' ReplicaSet still has its owner and its pods.
    let sets: Api<ReplicaSet> = ns.api();
    let rs = sets
        .get("shop-6b7c9d")
        .await
        .expect("the Rollout's ReplicaSet");
    assert_eq!(
        rs.metadata
            .owner_references
            .map(|o| o[0].kind.clone())
            .as_deref(),
        Some("Rollout")
    );
}
