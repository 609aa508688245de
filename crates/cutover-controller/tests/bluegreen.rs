//! The blue-green lifecycle against the real local control plane, with the controller
//! running as a process.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cutover_api::{Color, Phase, requests};
use cutover_test_support::watch_while;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

/// Labels a node for the life of the test (so pods can be held Pending until it is set).
struct NodeLabel {
    node: String,
    key: String,
}

impl NodeLabel {
    async fn set(client: &kube::Client, node: &str, key: &str) -> Self {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "metadata": { "labels": { key: "yes" } } })),
            )
            .await
            .expect("label node");
        Self {
            node: node.to_string(),
            key: key.to_string(),
        }
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let (node, key) = (self.node.clone(), self.key.clone());
        cutover_test_support::cleanup(move |client| async move {
            let nodes: Api<Node> = Api::all(client);
            let patch = serde_json::json!({ "metadata": { "labels": { key: null } } });
            let _ = nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(patch))
                .await;
        });
    }
}

fn ready_endpoints(slices: &[Arc<EndpointSlice>]) -> usize {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count()
}

#[tokio::test]
async fn release_goes_live_only_when_every_new_pod_is_ready_and_the_old_color_stays_warm() {
    let (ns, _ctrl) = setup("bg-release").await;
    create(&ns, &bgd("shop", "shop:1", 3, serde_json::json!({}))).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
    assert_eq!(selected(&ns, "shop-blue").await.as_deref(), Some("blue"));
    assert_eq!(selected(&ns, "shop-green").await.as_deref(), Some("green"));

    // v2's pods can only run on a node with this label: they stay Pending until it is set.
    let pool = format!("pool-{}", ns.name);
    patch_spec(
        &ns,
        "shop",
        serde_json::json!({ "template": { "spec": {
        "nodeSelector": { &pool: "yes" },
        "containers": [{ "name": "app", "image": "shop:2", "ports": [{ "containerPort": 8080 }] }]
    } } }),
    )
    .await;
    let waiting = wait_bgd(&ns, "shop", "the release to wait for green", |b| {
        b.status
            .as_ref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.starts_with("waiting for green"))
            && b.status
                .as_ref()
                .and_then(|s| s.green.as_ref())
                .is_some_and(|g| g.replicas == 3)
    })
    .await;
    assert_eq!(phase(&waiting), Some(Phase::Progressing));
    assert_eq!(
        selected(&ns, "shop").await.as_deref(),
        Some("blue"),
        "live stays on blue"
    );
    assert_eq!(
        selected(&ns, "shop-preview").await.as_deref(),
        Some("blue"),
        "preview never points at unready green"
    );

    // Watch the live Service's endpoints through the switch: never zero ready.
    let slices: Api<EndpointSlice> = ns.api();
    let min_ready = Arc::new(Mutex::new(usize::MAX));
    let seen = min_ready.clone();
    let node_label = NodeLabel::set(&ns.client, "kwok-node-0", &pool).await;
    let done = watch_while(
        &slices,
        watcher::Config::default().labels("kubernetes.io/service-name=shop"),
        move |s| {
            let n = ready_endpoints(s);
            let mut m = seen.lock().expect("lock");
            *m = (*m).min(n);
        },
        healthy_on(&ns, "shop", Color::Green),
    )
    .await;
    drop(node_label);
    assert_eq!(
        *min_ready.lock().expect("lock"),
        3,
        "the live Service always had 3 ready endpoints"
    );
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("green"));
    assert_eq!(
        selected(&ns, "shop-preview").await.as_deref(),
        Some("green")
    );
    let st = done.status.expect("status");
    assert_eq!(
        st.green.as_ref().map(|g| (g.revision, g.ready_replicas)),
        Some((2, 3))
    );
    assert_eq!(st.standby.and_then(|s| s.color), Some(Color::Blue));
    let blue = deployment(&ns, "shop-blue").await;
    assert_eq!(
        blue.spec.and_then(|s| s.replicas),
        Some(3),
        "blue stays warm"
    );
    assert_eq!(blue.status.and_then(|s| s.ready_replicas), Some(3));
}

#[tokio::test]
async fn with_auto_promotion_off_the_release_waits_paused_until_promoted() {
    let (ns, _ctrl) = setup("bg-manual").await;
    create(
        &ns,
        &bgd(
            "api",
            "api:1",
            2,
            serde_json::json!({ "strategy": { "autoPromotion": { "enabled": false } } }),
        ),
    )
    .await;
    healthy_on(&ns, "api", Color::Blue).await;
    set_image(&ns, "api", "api:2").await;
    let paused = wait_bgd(&ns, "api", "Paused", |b| phase(b) == Some(Phase::Paused)).await;
    let cond = condition(&paused, "Paused").expect("Paused condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "WaitingForPromotion")
    );
    assert_eq!(selected(&ns, "api").await.as_deref(), Some("blue"));
    assert_eq!(selected(&ns, "api-preview").await.as_deref(), Some("green"));
    request(&ns, "api", requests::PROMOTE).await;
    healthy_on(&ns, "api", Color::Green).await;
    assert_eq!(selected(&ns, "api").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn abort_mid_release_returns_traffic_and_scales_the_new_color_down() {
    let (ns, _ctrl) = setup("bg-abort").await;
    create(
        &ns,
        &bgd(
            "cart",
            "cart:1",
            2,
            serde_json::json!({ "strategy": { "autoPromotion": { "enabled": false } } }),
        ),
    )
    .await;
    healthy_on(&ns, "cart", Color::Blue).await;
    set_image(&ns, "cart", "cart:2").await;
    wait_bgd(&ns, "cart", "Paused", |b| phase(b) == Some(Phase::Paused)).await;
    request(&ns, "cart", requests::ABORT).await;
    let aborted = wait_bgd(&ns, "cart", "Degraded after abort", |b| {
        phase(b) == Some(Phase::Degraded) && b.status.as_ref().is_some_and(|s| s.abort)
    })
    .await;
    assert_eq!(
        condition(&aborted, "Degraded").map(|c| c.reason.as_str()),
        Some("Aborted")
    );
    assert_eq!(selected(&ns, "cart").await.as_deref(), Some("blue"));
    assert_eq!(selected(&ns, "cart-preview").await.as_deref(), Some("blue"));
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    cutover_test_support::wait_for(
        &deployments,
        "cart-green",
        "green scaled to zero",
        TIMEOUT,
        |d: Option<&k8s_openapi::api::apps::v1::Deployment>| {
            d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(0)
        },
    )
    .await;

    // Retry runs the same revision again; promote finishes it.
    request(&ns, "cart", requests::RETRY).await;
    wait_bgd(&ns, "cart", "Paused again after retry", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    request(&ns, "cart", requests::PROMOTE).await;
    healthy_on(&ns, "cart", Color::Green).await;
}

#[tokio::test]
async fn undo_to_the_warm_standby_switches_back_without_creating_pods() {
    let (ns, _ctrl) = setup("bg-undo").await;
    create(&ns, &bgd("web", "web:1", 3, serde_json::json!({}))).await;
    healthy_on(&ns, "web", Color::Blue).await;
    set_image(&ns, "web", "web:2").await;
    healthy_on(&ns, "web", Color::Green).await;
    let before = pod_uids(&ns).await;
    assert_eq!(before.len(), 6, "both colors at full size");

    set_image(&ns, "web", "web:1").await;
    let back = healthy_on(&ns, "web", Color::Blue).await;
    assert_eq!(selected(&ns, "web").await.as_deref(), Some("blue"));
    assert_eq!(pod_uids(&ns).await, before, "no pod created or deleted");
    let st = back.status.expect("status");
    assert_eq!(st.blue.map(|b| b.revision), Some(1));
    assert_eq!(st.latest_revision, 2, "an undo reuses the revision");

    // The history an undo --to-revision reads: one ControllerRevision per revision.
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> = ns.api();
    let mut found: Vec<(i64, String)> = revisions
        .list(&kube::api::ListParams::default().labels("cutover.dev/bluegreendeployment=web"))
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|r| {
            let image = r
                .data
                .as_ref()
                .and_then(|d| d.0.pointer("/template/spec/containers/0/image"))
                .and_then(|i| i.as_str())
                .unwrap_or_default()
                .to_string();
            (r.revision, image)
        })
        .collect();
    found.sort();
    assert_eq!(found, [(1, "web:1".to_string()), (2, "web:2".to_string())]);
}

#[tokio::test]
async fn invalid_specs_are_rejected_naming_the_field() {
    let ns = cutover_test_support::TestNamespace::new("bg-invalid").await;
    cutover_test_support::controller::install_crds(&ns.client).await;
    let api: Api<cutover_api::BlueGreenDeployment> = ns.api();

    let err = api
        .create(
            &PostParams::default(),
            &bgd("neg", "x:1", -1, serde_json::json!({})),
        )
        .await
        .expect_err("replicas: -1 is rejected");
    assert!(err.to_string().contains("spec.replicas"), "{err}");

    let steps = bgd(
        "weights",
        "x:1",
        1,
        serde_json::json!({ "strategy": { "steps": [{ "setWeight": 10 }] } }),
    );
    let err = api
        .create(&PostParams::default(), &steps)
        .await
        .expect_err("setWeight with service routing is rejected");
    assert!(err.to_string().contains("spec.strategy.steps"), "{err}");

    let two = bgd(
        "two",
        "x:1",
        1,
        serde_json::json!({ "strategy": { "steps": [{ "setWeight": 10, "pause": {} }] }, "trafficRouting": { "gatewayAPI": { "httpRoute": "r" } } }),
    );
    let err = api
        .create(&PostParams::default(), &two)
        .await
        .expect_err("a step with two actions is rejected");
    assert!(err.to_string().contains("spec.strategy.steps[0]"), "{err}");
}

#[tokio::test]
async fn objects_it_does_not_own_are_never_overwritten() {
    let (ns, _ctrl) = setup("bg-owner").await;
    let services: Api<Service> = ns.api();
    let foreign: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "pay" },
        "spec": { "selector": { "app": "someone-else" }, "ports": [{ "port": 9 }] }
    }))
    .expect("valid");
    services
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign Service");
    create(&ns, &bgd("pay", "pay:1", 1, serde_json::json!({}))).await;
    let b = wait_bgd(&ns, "pay", "an OwnershipConflict", |b| {
        condition(b, "InvalidSpec")
            .is_some_and(|c| c.status == "True" && c.reason == "OwnershipConflict")
    })
    .await;
    assert_eq!(phase(&b), Some(Phase::Degraded));
    let svc = services.get("pay").await.expect("get");
    assert_eq!(
        svc.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.get("app").cloned())
            .as_deref(),
        Some("someone-else"),
        "the foreign Service is untouched"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    assert!(
        deployments
            .get_opt("pay-blue")
            .await
            .expect("get")
            .is_none(),
        "nothing deployed"
    );
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn a_config_change_releases_a_new_revision_and_the_live_color_keeps_the_old_config() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (ns, _ctrl) = setup("bg-config").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let cm = |v: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "shop-config" },
            "data": { "MODE": v }
        }))
        .expect("valid")
    };
    config_maps
        .create(&PostParams::default(), &cm("one"))
        .await
        .expect("create ConfigMap");
    create(
        &ns,
        &bgd(
            "shop",
            "shop:1",
            1,
            serde_json::json!({ "template": { "spec": { "containers": [{
        "name": "app", "image": "shop:1", "envFrom": [{ "configMapRef": { "name": "shop-config" } }]
    }] } } }),
        ),
    )
    .await;
    healthy_on(&ns, "shop", Color::Blue).await;

    let mut edited = config_maps.get("shop-config").await.expect("get");
    edited.data = Some([("MODE".to_string(), "two".to_string())].into());
    config_maps
        .replace("shop-config", &PostParams::default(), &edited)
        .await
        .expect("edit ConfigMap");
    let b = healthy_on(&ns, "shop", Color::Green).await;
    assert_eq!(
        b.status.as_ref().map(|s| s.latest_revision),
        Some(2),
        "the edit is a new revision"
    );

    let config_of = |d: k8s_openapi::api::apps::v1::Deployment| -> String {
        d.spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers[0].env_from.clone())
            .and_then(|e| e[0].config_map_ref.as_ref().map(|r| r.name.clone()))
            .expect("envFrom")
    };
    let blue_cm = config_of(deployment(&ns, "shop-blue").await);
    let green_cm = config_of(deployment(&ns, "shop-green").await);
    assert_ne!(blue_cm, green_cm, "each color has its own snapshot");
    let data = |c: ConfigMap| c.data.and_then(|d| d.get("MODE").cloned());
    assert_eq!(
        data(config_maps.get(&blue_cm).await.expect("blue snapshot")).as_deref(),
        Some("one"),
        "live keeps the old config"
    );
    assert_eq!(
        data(config_maps.get(&green_cm).await.expect("green snapshot")).as_deref(),
        Some("two")
    );
    assert_eq!(
        config_maps
            .get(&green_cm)
            .await
            .expect("snapshot")
            .immutable,
        Some(true)
    );
}

#[tokio::test]
async fn a_spec_change_racing_the_status_write_still_gets_the_next_revision() {
    // The live Service switches before the status that records it is written; a spec
    // change landing in between must not reuse revision 1 or treat blue as undeployed.
    let (ns, _ctrl) = setup("bg-race").await;
    create(&ns, &bgd("fast", "fast:1", 1, serde_json::json!({}))).await;
    let services: Api<Service> = ns.api();
    cutover_test_support::wait_for(
        &services,
        "fast",
        "the live Service on blue",
        TIMEOUT,
        |s: Option<&Service>| {
            s.and_then(|s| {
                s.spec
                    .as_ref()?
                    .selector
                    .as_ref()?
                    .get(cutover_api::COLOR_LABEL)
                    .cloned()
            })
            .as_deref()
                == Some("blue")
        },
    )
    .await;
    set_image(&ns, "fast", "fast:2").await;
    let b = healthy_on(&ns, "fast", Color::Green).await;
    let st = b.status.expect("status");
    assert_eq!(st.green.map(|g| g.revision), Some(2));
    assert_eq!(
        st.blue.map(|g| (g.revision, g.image)),
        Some((1, Some("fast:1".to_string()))),
        "the live color was never redeployed"
    );
    assert_eq!(st.latest_revision, 2);
}
