//! `spec.workloadRef`: a BlueGreenDeployment adopts a Deployment the user keeps, releases
//! every change of that Deployment's template, and gives it back when deleted — against the
//! real local control plane, with the controller running as a process.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use cutover_api::{BlueGreenDeployment, Color};
use cutover_test_support::custom_metrics::{self, CustomMetrics};
use cutover_test_support::e2e::{self, ProcessNode};
use cutover_test_support::workload::adopting;
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

/// Deployment `name`'s `spec.replicas` each time it changes while `work` runs, with the
/// ready pods of the live color (`web-blue`) seen at that moment: the two come from one
/// watch of the namespace's Deployments, so each pair is one state of the API server.
async fn replicas_over_time<T>(
    ns: &TestNamespace,
    name: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, Vec<(i32, i32)>) {
    let api: Api<Deployment> = ns.api();
    let seen: Arc<Mutex<Vec<(i32, i32)>>> = Arc::default();
    let record = seen.clone();
    let name = name.to_string();
    let out = watch_while(
        &api,
        watcher::Config::default(),
        move |ds| {
            let replicas = |n: &str| {
                ds.iter()
                    .find(|d| d.metadata.name.as_deref() == Some(n))
                    .and_then(|d| d.spec.as_ref().and_then(|s| s.replicas))
            };
            let ready = ds
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some("web-blue"))
                .and_then(|d| d.status.as_ref().and_then(|s| s.ready_replicas))
                .unwrap_or(0);
            let mut seen = record.lock().expect("lock");
            if let Some(r) = replicas(&name)
                && seen.last().is_none_or(|(last, _)| *last != r)
            {
                seen.push((r, ready));
            }
        },
        // Boxed: the futures of a debug build overflow a test thread's stack otherwise.
        Box::pin(work),
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    (out, seen)
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

    // The live color runs the Deployment's template; the Deployment then goes to zero at
    // once (OnSuccess), only after the color is fully available, remembering its size.
    let ((b, d), sizes) = replicas_over_time(&ns, "shop", async {
        create(&ns, &adopting("web", "shop", 2, "OnSuccess")).await;
        let b = healthy_on(&ns, "web", Color::Blue).await;
        let d = wait_deployment(&ns, "shop", "scaled to zero", |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
        })
        .await;
        (b, d)
    })
    .await;
    assert_eq!(sizes, [(2, 0), (0, 2)], "(Deployment, ready pods of blue)");
    assert_eq!(image_of(&b, Color::Blue).as_deref(), Some("shop:1"));
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

/// A kwok Node of its own for one test, with room for `pods` pods, that only pods
/// tolerating its taint and selecting its label go to ([`TightNode::pod_spec`]); deleted
/// when dropped.
struct TightNode {
    name: String,
}

impl TightNode {
    async fn new(ns: &TestNamespace, pods: u32) -> Self {
        use k8s_openapi::api::core::v1::Node;
        // The namespace's name is unique: so is the node's.
        let name = format!("{}-tight", ns.name);
        let room = serde_json::json!({ "pods": pods.to_string(), "cpu": "32", "memory": "64Gi" });
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
                "labels": { "kubernetes.io/hostname": name, "type": "kwok", "cutover.test/tight": ns.name },
            },
            "spec": {
                "podCIDR": "10.244.250.0/24", "podCIDRs": ["10.244.250.0/24"],
                "taints": [{ "key": "cutover.test/tight", "value": ns.name, "effect": "NoSchedule" }]
            },
            // Nodes take their status when created: kwok keeps the allocatable it finds.
            "status": { "allocatable": room, "capacity": room }
        }))
        .expect("a Node");
        let nodes: Api<Node> = Api::all(ns.client.clone());
        nodes
            .create(&Default::default(), &node)
            .await
            .expect("create the tight node");
        wait_for(
            &nodes,
            &name,
            "the tight node schedulable",
            TIMEOUT,
            |n: Option<&Node>| {
                n.is_some_and(|n| {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    let tainted =
                        n.spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_some_and(|ts| {
                                ts.iter().any(|t| t.key.starts_with("node.kubernetes.io/"))
                            });
                    ready && !tainted
                })
            },
        )
        .await;
        Self { name }
    }

    /// A pod spec of `image` that runs only on this node.
    fn pod_spec(&self, ns: &TestNamespace, image: &str) -> serde_json::Value {
        serde_json::json!({
            "containers": [{ "name": "app", "image": image, "ports": [{ "containerPort": 8080 }] }],
            "nodeSelector": { "cutover.test/tight": ns.name },
            "tolerations": [{ "key": "cutover.test/tight", "operator": "Equal", "value": ns.name, "effect": "NoSchedule" }]
        })
    }
}

impl Drop for TightNode {
    fn drop(&mut self) {
        let name = self.name.clone();
        cutover_test_support::cleanup(move |client| async move {
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
            let _ = nodes.delete(&name, &Default::default()).await;
        });
    }
}

#[tokio::test]
async fn scale_down_progressively_gives_up_a_pod_per_ready_pod_of_the_color() {
    // Room for one pod more than the Deployment has: the color can only grow as the
    // Deployment shrinks, so each ready pod of the color is a step of its own (OnSuccess
    // would wait for a fully available color that cannot fit).
    let (ns, _ctrl) = setup("wl-progressive").await;
    let node = TightNode::new(&ns, 5).await;
    workload::deployment(&ns, "shop", 4, node.pod_spec(&ns, "shop:1")).await;
    wait_deployment(&ns, "shop", "available", |d| {
        d.status.as_ref().and_then(|s| s.available_replicas) == Some(4)
    })
    .await;
    let (b, sizes) = replicas_over_time(&ns, "shop", async {
        create(&ns, &adopting("web", "shop", 4, "Progressively")).await;
        wait_deployment(&ns, "shop", "scaled to zero", |d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
        })
        .await;
        healthy_on(&ns, "web", Color::Blue).await
    })
    .await;
    assert_eq!(
        sizes,
        [(4, 0), (3, 1), (2, 2), (1, 3), (0, 4)],
        "(Deployment, ready pods of blue): a pod given up per ready pod, never fewer than 4 serving"
    );
    assert_eq!(image_of(&b, Color::Blue).as_deref(), Some("shop:1"));
}

/// Wait until BlueGreenDeployment `web` is scaled to `n`: its spec (the scale subresource),
/// its blue color's pods, and its status.
async fn scaled_to(ns: &TestNamespace, n: i32) {
    let api: Api<BlueGreenDeployment> = ns.api();
    wait_for(
        &api,
        "web",
        &format!("scaled to {n}"),
        TIMEOUT,
        move |b: Option<&BlueGreenDeployment>| b.is_some_and(|b| b.spec.replicas == n),
    )
    .await;
    wait_deployment(ns, "web-blue", &format!("{n} pods available"), move |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(n)
            && d.status.as_ref().and_then(|s| s.available_replicas) == Some(n)
    })
    .await;
    wait_bgd(ns, "web", &format!("status.replicas {n}"), move |b| {
        b.status.as_ref().is_some_and(|s| s.replicas == n)
    })
    .await;
}

#[tokio::test]
async fn an_autoscaler_on_the_blue_green_deployment_scales_the_live_color_and_the_next_release() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let (ns, _ctrl) = setup("bgd-hpa").await;
    create(&ns, &bgd("web", "web:1", 2, serde_json::json!({}))).await;
    healthy_on(&ns, "web", Color::Blue).await;

    // kube-controller-manager's HorizontalPodAutoscaler, through the BlueGreenDeployment's
    // scale subresource, reading a custom metric of the Service `web` from an aggregated
    // custom metrics API (served by the test on a process node's bridge address; the
    // node only lends the address, no pod runs on it). Target 10 per pod: the
    // autoscaler wants ceil(value / 10) replicas.
    let bins = e2e::build(&["cutover-process-node"]);
    let _node = ProcessNode::start(&ns, &bins, 97).await;
    let metrics = CustomMetrics::register(&ns, "10.244.97.1", 40).await;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    let hpa = serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": "web" },
        "spec": {
            "scaleTargetRef": { "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment", "name": "web" },
            "minReplicas": 1, "maxReplicas": 6,
            "metrics": [{ "type": "Object", "object": {
                "describedObject": { "apiVersion": "v1", "kind": "Service", "name": "web" },
                "metric": { "name": custom_metrics::METRIC },
                "target": { "type": "AverageValue", "averageValue": "10" }
            } }],
            "behavior": { "scaleDown": { "stabilizationWindowSeconds": 0 } }
        }
    });
    hpas.patch("web", &PatchParams::apply("user"), &Patch::Apply(hpa))
        .await
        .expect("HPA on the BlueGreenDeployment");
    scaled_to(&ns, 4).await;
    metrics.set(10);
    scaled_to(&ns, 1).await;
    metrics.set(30);
    scaled_to(&ns, 3).await;
    let hpa = hpas.get("web").await.expect("the HPA");
    let current = hpa
        .status
        .and_then(|s| s.current_metrics)
        .and_then(|m| m.into_iter().next())
        .and_then(|m| m.object)
        .map(|o| o.current);
    assert!(
        current.is_some(),
        "the autoscaler read the metric: {current:?}"
    );
    // The autoscaler stays on through the release, still wanting 3.

    // A release: the new color starts at the size the autoscaler set, never at the
    // manifest's 2, and the autoscaler keeps it there.
    let api: Api<Deployment> = ns.api();
    let green: Arc<Mutex<Vec<i32>>> = Arc::default();
    let record = green.clone();
    watch_while(
        &api,
        watcher::Config::default().fields("metadata.name=web-green"),
        move |ds| {
            for d in ds {
                if let Some(r) = d.spec.as_ref().and_then(|s| s.replicas) {
                    record.lock().expect("lock").push(r);
                }
            }
        },
        async {
            set_image(&ns, "web", "web:2").await;
            healthy_on(&ns, "web", Color::Green).await;
        },
    )
    .await;
    let green = green.lock().expect("lock").clone();
    assert!(!green.is_empty(), "green was made");
    assert!(green.iter().all(|r| *r == 3), "green's sizes: {green:?}");
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

/// The first moment a watch of `api` (narrowed by `config`) holds a state where `done`
/// is true, as an `Instant`; `None` if not within [`TIMEOUT`].
async fn first_seen<K>(
    api: Api<K>,
    config: watcher::Config,
    done: impl Fn(&[Arc<K>]) -> bool,
) -> Option<std::time::Instant>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt as _;
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = kube::runtime::reflector(writer, watcher(api, config));
    let mut stream = std::pin::pin!(stream);
    tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = stream.next().await {
            if matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)
            ) && done(&reader.state())
            {
                return Some(std::time::Instant::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Deployment `name` has `n` pods, all ready and of its current generation.
fn all_ready(ds: &[Arc<Deployment>], name: &str, n: i32) -> bool {
    ds.iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .is_some_and(|d| {
            let st = d.status.clone().unwrap_or_default();
            st.observed_generation == d.metadata.generation
                && st.ready_replicas == Some(n)
                && st.updated_replicas == Some(n)
                && st.replicas == Some(n)
        })
}

/// The ready endpoints of Service `svc`'s slices are exactly `n` pods of Deployment
/// `color` (their names start with it).
fn serves_only(
    slices: &[Arc<k8s_openapi::api::discovery::v1::EndpointSlice>],
    color: &str,
    n: usize,
) -> bool {
    let ready: Vec<String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect();
    ready.len() == n && ready.iter().all(|p| p.starts_with(&format!("{color}-")))
}

/// From a color's pods all ready to the Service its traffic goes through serving only them:
/// for an adoption (the user's Service, from the Deployment's pods to the first color) and
/// for a plain release (the live Service, from blue to green), alternately in one run.
/// `cargo xtask bench adoption` (`CUTOVER_BENCH_RUNS`, default 10).
#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench adoption"]
async fn adoption_switch_benchmark() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let runs = cutover_test_support::bench::runs();
    let (ns, _ctrl) = setup("wl-bench").await;
    let deployments: Api<Deployment> = ns.api();
    let slices: Api<EndpointSlice> = ns.api();
    // Time from `ready` (the color's Deployment all ready) to `serving` (the Service on
    // it), while `act` runs.
    let switch =
        async |color: String,
               service: String,
               act: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>| {
            let ready_color = color.clone();
            let (ready, serving, ()) = tokio::join!(
                first_seen(deployments.clone(), watcher::Config::default(), move |ds| {
                    all_ready(ds, &ready_color, 2)
                }),
                first_seen(
                    slices.clone(),
                    watcher::Config::default()
                        .labels(&format!("kubernetes.io/service-name={service}")),
                    move |s| serves_only(s, &color, 2)
                ),
                act,
            );
            let (ready, serving) = (
                ready.expect("the color ready"),
                serving.expect("the Service on it"),
            );
            serving.saturating_duration_since(ready).as_secs_f64() * 1000.0
        };
    let (mut adoption, mut release) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        // Adoption: a Deployment and its Service serve; the BlueGreenDeployment of the
        // Service's name adopts both.
        let name = format!("shop-{run}");
        user_deployment(&ns, &name, "shop:1", 2).await;
        workload::service(&ns, &name).await;
        let b = adopting(&name, &name, 2, "OnSuccess");
        adoption.push(
            switch(
                format!("{name}-blue"),
                name.clone(),
                Box::pin(async { create(&ns, &b).await }),
            )
            .await,
        );
        healthy_on(&ns, &name, Color::Blue).await;

        // The baseline: a plain release of a BlueGreenDeployment of its own.
        let plain = format!("plain-{run}");
        create(&ns, &bgd(&plain, "plain:1", 2, serde_json::json!({}))).await;
        healthy_on(&ns, &plain, Color::Blue).await;
        release.push(
            switch(
                format!("{plain}-green"),
                plain.clone(),
                Box::pin(async { set_image(&ns, &plain, "plain:2").await }),
            )
            .await,
        );
        healthy_on(&ns, &plain, Color::Green).await;
    }
    let (am, ap, amin, amax) = cutover_test_support::bench::summary(&adoption);
    let (rm, rp, rmin, rmax) = cutover_test_support::bench::summary(&release);
    println!("color all ready → its Service serving only it, {runs} runs each:");
    println!("| {runs} runs | median | p90 | min | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: a plain release (live Service, blue → green) | {rm:.1} ms | {rp:.1} ms | {rmin:.1} ms | {rmax:.1} ms |"
    );
    println!(
        "| adoption (the user's Service, Deployment's pods → blue) | {am:.1} ms | {ap:.1} ms | {amin:.1} ms | {amax:.1} ms |"
    );
    println!("| ratio (medians) | {:.2} | | | |", am / rm);
}

/// GitOps without the ignore-differences settings: Argo CD (or Flux) re-applies the
/// Deployment and the Service as they are in git — the Deployment's `replicas` and the
/// Service's selector without the color. The live traffic is not broken: the Service never
/// loses its endpoints, the controller narrows the selector to the live color again and
/// scales the Deployment back down, and no release starts (the template is the same).
#[tokio::test]
async fn a_gitops_resync_of_the_original_manifests_leaves_traffic_on_the_live_color() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let (ns, _ctrl) = setup("wl-gitops").await;
    user_deployment(&ns, "shop", "shop:1", 2).await;
    workload::service(&ns, "shop").await;
    create(&ns, &adopting("shop", "shop", 2, "OnSuccess")).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    set_workload_image(&ns, "shop", "shop:2").await;
    let before = healthy_on(&ns, "shop", Color::Green).await;
    wait_deployment(&ns, "shop", "scaled to zero", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;
    let revision = |b: &BlueGreenDeployment| b.status.as_ref().map(|s| s.latest_revision);

    // Ready endpoints of the Service at every state, while the sync happens and is undone.
    let slices: Api<EndpointSlice> = ns.api();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let record = seen.clone();
    let ns_ref = &ns;
    watch_while(
        &slices,
        watcher::Config::default().labels("kubernetes.io/service-name=shop"),
        move |objs| {
            let n = objs
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .count();
            let mut v = record.lock().expect("lock");
            if v.last() != Some(&n) {
                v.push(n);
            }
        },
        async move {
            let argocd = PatchParams::apply("argocd-controller").force();
            ns_ref
                .api::<Deployment>()
                .patch(
                    "shop",
                    &argocd,
                    &Patch::Apply(serde_json::json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": { "name": "shop", "labels": { "team": "shop" } },
                        "spec": {
                            "replicas": 2,
                            "selector": { "matchLabels": { "app": "shop" } },
                            "template": { "metadata": { "labels": { "app": "shop" } },
                                "spec": { "containers": [{ "name": "app", "image": "shop:2", "ports": [{ "containerPort": 8080 }] }] } }
                        }
                    })),
                )
                .await
                .expect("re-apply the Deployment");
            ns_ref
                .api::<Service>()
                .patch(
                    "shop",
                    &argocd,
                    &Patch::Apply(serde_json::json!({
                        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "shop" },
                        "spec": { "selector": { "app": "shop" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
                    })),
                )
                .await
                .expect("re-apply the Service");
            wait_for(
                &ns_ref.api::<Service>(),
                "shop",
                "the Service narrowed to green again",
                TIMEOUT,
                |s: Option<&Service>| {
                    s.and_then(|s| s.spec.as_ref())
                        .and_then(|s| s.selector.as_ref())
                        .and_then(|s| s.get(cutover_api::COLOR_LABEL))
                        .is_some_and(|c| c == "green")
                },
            )
            .await;
            wait_deployment(ns_ref, "shop", "scaled to zero again", |d| {
                d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
                    && d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
            })
            .await;
        },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    eprintln!("ready endpoints of the Service during the sync: {seen:?}");
    assert!(
        seen.iter().all(|n| *n > 0),
        "the Service had no ready endpoint at some point: {seen:?}"
    );
    let after = healthy_on(&ns, "shop", Color::Green).await;
    assert_eq!(revision(&after), revision(&before), "no release started");
    assert_eq!(image_of(&after, Color::Green).as_deref(), Some("shop:2"));
}
