//! `spec.workloadRef`: a BlueGreenDeployment adopts a Deployment the user keeps, releases
//! every change of that Deployment's template, and gives it back when deleted — against the
//! real local control plane, with the controller running as a process.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use cutover_api::{BlueGreenDeployment, Color};
use cutover_test_support::{TestNamespace, delete_and_wait, wait_for, watch_while, workload};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

const REPLICAS_BEFORE: &str = "cutover.dev/replicas-before-adoption";

/// The user's Deployment `name`: `replicas` pods of `image`, labelled `app: name`.
async fn user_deployment(ns: &TestNamespace, name: &str, image: &str, replicas: i32) {
    let pod = serde_json::json!({ "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 8080 }] }] });
    workload::deployment(ns, name, replicas, pod).await;
    wait_deployment(ns, name, "available", move |d| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(replicas)
    })
    .await;
}

async fn wait_deployment(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    pred: impl Fn(&Deployment) -> bool + Send + 'static,
) -> Deployment {
    let api: Api<Deployment> = ns.api();
    wait_for(
        &api,
        name,
        &format!("Deployment {name} {what}"),
        TIMEOUT,
        move |d: Option<&Deployment>| d.is_some_and(&pred),
    )
    .await
}

/// A BlueGreenDeployment `name` of `replicas` pods taken from Deployment `workload`.
fn adopting(name: &str, workload: &str, replicas: i32, scale_down: &str) -> BlueGreenDeployment {
    serde_json::from_value(serde_json::json!({
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

/// Set the image of Deployment `name`'s container `app`, as `helm upgrade` would.
async fn set_workload_image(ns: &TestNamespace, name: &str, image: &str) -> Deployment {
    let api: Api<Deployment> = ns.api();
    let patch = serde_json::json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": image }] } } } });
    api.patch(
        name,
        &PatchParams::apply("helm").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
            "spec": patch["spec"].clone()
        })),
    )
    .await
    .expect("set the image")
}

fn image_of(b: &BlueGreenDeployment, color: Color) -> Option<String> {
    let st = b.status.as_ref()?;
    let c = match color {
        Color::Blue => st.blue.as_ref()?,
        Color::Green => st.green.as_ref()?,
    };
    c.image.clone()
}

#[tokio::test]
async fn a_deployment_is_adopted_released_from_its_own_template_and_given_back() {
    let (ns, _ctrl) = setup("wl-adopt").await;
    user_deployment(&ns, "shop", "shop:1", 2).await;
    create(&ns, &adopting("web", "shop", 2, "OnSuccess")).await;

    // The live color runs the Deployment's template; the Deployment then goes to zero,
    // remembering its size.
    let b = healthy_on(&ns, "web", Color::Blue).await;
    assert_eq!(image_of(&b, Color::Blue).as_deref(), Some("shop:1"));
    let d = wait_deployment(&ns, "shop", "scaled to zero", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPLICAS_BEFORE))
            .map(String::as_str),
        Some("2")
    );
    let blue = deployment(&ns, "web-blue").await;
    let labels = blue
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("shop"),
        "the colors' pods carry the Deployment's labels, so its Services select them"
    );

    // A new image on the Deployment (as Helm sets it) is a release to the idle color.
    let set = set_workload_image(&ns, "shop", "shop:2").await;
    let b = healthy_on(&ns, "web", Color::Green).await;
    assert_eq!(image_of(&b, Color::Green).as_deref(), Some("shop:2"));
    let now = deployment(&ns, "shop").await;
    assert_eq!(
        now.spec.as_ref().map(|s| &s.template),
        set.spec.as_ref().map(|s| &s.template),
        "the controller never writes the Deployment's template"
    );

    // Deleted: the Deployment gets its size back and serves before the colors go.
    let api: Api<BlueGreenDeployment> = ns.api();
    delete_and_wait(&api, "web", TIMEOUT).await;
    let d = deployment(&ns, "shop").await;
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(
        d.status.as_ref().and_then(|s| s.available_replicas),
        Some(2),
        "the finalizer lets the colors go only once the Deployment serves again"
    );
}

#[tokio::test]
async fn scale_down_never_leaves_the_deployment_and_a_missing_one_is_refused() {
    let (ns, _ctrl) = setup("wl-never").await;
    create(&ns, &adopting("late", "missing", 1, "OnSuccess")).await;
    let b = wait_bgd(&ns, "late", "Degraded for the missing Deployment", |b| {
        phase(b) == Some(cutover_api::Phase::Degraded)
    })
    .await;
    let message = b.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("spec.workloadRef") && message.contains("missing"),
        "{message}"
    );

    user_deployment(&ns, "keep", "keep:1", 2).await;
    create(&ns, &adopting("kept", "keep", 2, "Never")).await;
    let api: Api<Deployment> = ns.api();
    let seen: Arc<Mutex<Vec<Option<i32>>>> = Arc::default();
    let record = seen.clone();
    watch_while(
        &api,
        watcher::Config::default().fields("metadata.name=keep"),
        move |ds| {
            for d in ds {
                record
                    .lock()
                    .expect("lock")
                    .push(d.spec.as_ref().and_then(|s| s.replicas));
            }
        },
        async {
            // Through the first rollout and a release: many passes.
            healthy_on(&ns, "kept", Color::Blue).await;
            set_workload_image(&ns, "keep", "keep:2").await;
            healthy_on(&ns, "kept", Color::Green).await;
        },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| *r == Some(2)),
        "scaleDown: Never keeps the Deployment's size: {seen:?}"
    );
    let d = deployment(&ns, "keep").await;
    assert!(
        d.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(REPLICAS_BEFORE)),
        "nothing written on a Deployment that is never scaled"
    );
}

#[tokio::test]
async fn an_autoscaler_left_on_the_deployment_is_reported_and_not_fought() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let (ns, _ctrl) = setup("wl-hpa").await;
    user_deployment(&ns, "shop", "shop:1", 2).await;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    let hpa = |kind: &str, api_version: &str, name: &str| {
        serde_json::json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "shop-hpa" },
            "spec": {
                "scaleTargetRef": { "apiVersion": api_version, "kind": kind, "name": name },
                "minReplicas": 2, "maxReplicas": 4,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 80 } } }]
            }
        })
    };
    hpas.patch(
        "shop-hpa",
        &PatchParams::apply("user"),
        &Patch::Apply(hpa("Deployment", "apps/v1", "shop")),
    )
    .await
    .expect("HPA on the Deployment");
    create(&ns, &adopting("web", "shop", 2, "OnSuccess")).await;

    let b = wait_bgd(&ns, "web", "Healthy and WorkloadAutoscaled", |b| {
        phase(b) == Some(cutover_api::Phase::Healthy)
            && condition(b, "WorkloadAutoscaled").is_some_and(|c| c.status == "True")
    })
    .await;
    let message = condition(&b, "WorkloadAutoscaled")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("shop-hpa") && message.contains("kind: BlueGreenDeployment, name: web"),
        "the condition names the autoscaler and the change to make: {message}"
    );
    assert!(
        !events(&ns.client, &ns.name, "AutoscalerTargetsWorkload")
            .await
            .is_empty(),
        "a Warning Event says it too"
    );
    let d = deployment(&ns, "shop").await;
    assert!(
        d.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(REPLICAS_BEFORE)),
        "the Deployment is not scaled while an autoscaler scales it"
    );

    // The one-line change: the autoscaler targets the BlueGreenDeployment instead.
    hpas.patch(
        "shop-hpa",
        &PatchParams::apply("user"),
        &Patch::Apply(hpa("BlueGreenDeployment", "cutover.dev/v1alpha1", "web")),
    )
    .await
    .expect("HPA on the BlueGreenDeployment");
    wait_bgd(&ns, "web", "WorkloadAutoscaled false", |b| {
        condition(b, "WorkloadAutoscaled").is_some_and(|c| c.status == "False")
    })
    .await;
    wait_deployment(&ns, "shop", "scaled to zero", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
}

#[tokio::test]
async fn the_users_service_is_switched_between_colors_and_given_back() {
    use k8s_openapi::api::core::v1::Service;
    let (ns, _ctrl) = setup("wl-svc").await;
    user_deployment(&ns, "shop", "shop:1", 2).await;
    workload::service(&ns, "shop").await;
    let services: Api<Service> = ns.api();
    let selector = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default()
    };
    let app_only = std::collections::BTreeMap::from([("app".to_string(), "shop".to_string())]);

    // A BlueGreenDeployment named like the Service switches it without owning it.
    create(&ns, &adopting("shop", "shop", 2, "OnSuccess")).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
    let adopted = services.get("shop").await.expect("get");
    assert!(
        adopted.metadata.owner_references.is_none(),
        "the user's Service gets no owner reference (it must outlive the BlueGreenDeployment)"
    );
    let mut blue = app_only.clone();
    blue.insert(cutover_api::COLOR_LABEL.to_string(), "blue".to_string());
    assert_eq!(selector(&adopted), blue, "its own selector, plus the color");

    set_workload_image(&ns, "shop", "shop:2").await;
    healthy_on(&ns, "shop", Color::Green).await;
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("green"));

    // Deleted: the Service selects by its own selector again, and stays.
    let api: Api<BlueGreenDeployment> = ns.api();
    delete_and_wait(&api, "shop", TIMEOUT).await;
    let back = services.get("shop").await.expect("the Service stays");
    assert_eq!(selector(&back), app_only);
    assert!(
        back.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.keys().any(|k| k.starts_with("cutover.dev/"))),
        "no annotation of the controller's is left: {:?}",
        back.metadata.annotations
    );
    assert!(
        back.metadata
            .labels
            .as_ref()
            .is_none_or(|l| !l.contains_key(cutover_api::MANAGED_BY_LABEL)),
        "nor its label: {:?}",
        back.metadata.labels
    );
}
