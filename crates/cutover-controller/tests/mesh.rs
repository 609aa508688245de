//! `istio` and `smi` traffic routing against the real upstream CRDs from their Go modules
//! (Istio's `istio.io/api`; SMI's `smi-sdk-go`, whose `v1beta1` CRD is converted to `v1`,
//! otherwise unchanged), so the apiserver validates every write.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use cutover_api::{Color, Phase, requests};
use cutover_test_support::upstream::{ISTIO, SMI, install_crds};
use cutover_test_support::{TestNamespace, watch_while_with};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::watcher;
use serde_json::json;

type Split = (i64, bool, i64);

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// Release v2 of `shop` (already Healthy on blue), promoting at each of `pauses` pauses,
/// and return every distinct state of the route object `route` as `split` reads it.
async fn release_recording(
    ns: &TestNamespace,
    ar: &ApiResource,
    route: &str,
    pauses: usize,
    split: fn(&DynamicObject) -> Split,
) -> Vec<Split> {
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, ar);
    let seen = Arc::new(Mutex::new(Vec::<Split>::new()));
    let record = seen.clone();
    watch_while_with(
        &api,
        watcher::Config::default().fields(&format!("metadata.name={route}")),
        ar.clone(),
        move |objs| {
            if let Some(r) = objs.first() {
                let s = split(r);
                let mut v = record.lock().expect("lock");
                if v.last() != Some(&s) {
                    v.push(s);
                }
            }
        },
        async move {
            set_image(ns, "shop", "shop:2").await;
            for n in 0..pauses {
                wait_bgd(ns, "shop", &format!("pause {n}"), move |b| {
                    phase(b) == Some(Phase::Paused)
                        && b.status
                            .as_ref()
                            .and_then(|s| s.message.as_deref())
                            .is_some_and(|m| m.contains("paused until"))
                        && b.status
                            .as_ref()
                            .and_then(|s| s.handled_requests.get(requests::PROMOTE))
                            .map(String::len)
                            .unwrap_or(0)
                            >= n
                })
                .await;
                request(ns, "shop", requests::PROMOTE).await;
                wait_bgd(ns, "shop", "the promote to be taken", |b| {
                    b.status
                        .as_ref()
                        .is_some_and(|s| s.handled_requests.contains_key(requests::PROMOTE))
                })
                .await;
            }
            healthy_on(ns, "shop", Color::Green).await;
        },
    )
    .await;
    seen.lock().expect("lock").clone()
}

fn vs_split(vs: &DynamicObject) -> Split {
    let http = vs.data["spec"]["http"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (mut green, mut mirror) = (0, 0);
    for r in http.iter().filter(|r| {
        !r["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cutover-header")
    }) {
        for d in r["route"].as_array().into_iter().flatten() {
            if d["destination"]["host"] == "shop-green" {
                green = d["weight"].as_i64().unwrap_or(0);
            }
        }
        if r["mirror"]["host"] == "shop-green" {
            mirror = r["mirrorPercentage"]["value"]
                .as_f64()
                .unwrap_or(100.0)
                .round() as i64;
        }
    }
    let header = http.iter().any(|r| {
        r["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cutover-header")
    });
    (green, header, mirror)
}

#[tokio::test]
async fn istio_weights_header_route_and_mirror_follow_the_steps_on_a_virtualservice() {
    let (ns, _ctrl) = setup("mesh-istio").await;
    install_crds(&ns.client, ISTIO).await;
    let ar = resource("networking.istio.io", "v1", "VirtualService");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let mut vs = DynamicObject::new("shop", &ar);
    vs.data = json!({ "spec": {
        "hosts": ["shop"],
        "http": [
            { "name": "other", "match": [{ "uri": { "prefix": "/other" } }], "route": [{ "destination": { "host": "other" } }] },
            { "name": "primary", "headers": { "request": { "add": { "x-user": "kept" } } },
              "route": [{ "destination": { "host": "shop-blue", "port": { "number": 80 } }, "weight": 100 }] }
        ]
    } });
    api.create(&PostParams::default(), &vs)
        .await
        .expect("create VirtualService");
    let original = api.get("shop").await.expect("get");
    let spec = json!({
        "trafficRouting": { "istio": { "virtualService": { "name": "shop", "routes": ["primary"] } } },
        "strategy": { "steps": [
            { "setWeight": 10 }, { "pause": {} }, { "setWeight": 50 },
            { "setHeaderRoute": { "match": [{ "headerName": "X-Beta", "headerValue": { "exact": "1" } }] } },
            { "setMirror": { "percent": 20 } }, { "pause": {} },
            { "setHeaderRoute": { "match": [] } }, { "setMirror": { "percent": 0 } }
        ] }
    });
    create(&ns, &bgd("shop", "shop:1", 1, spec)).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let seen = release_recording(&ns, &ar, "shop", 2, vs_split).await;
    assert_eq!(
        seen,
        [
            (0, false, 0),
            (10, false, 0),
            (50, false, 0),
            (50, true, 0),
            (50, true, 20),
            (50, false, 20),
            (50, false, 0),
            (100, false, 0)
        ]
    );
    let after = api.get("shop").await.expect("get");
    let http = after.data["spec"]["http"]
        .as_array()
        .cloned()
        .expect("http");
    assert_eq!(
        http[0], original.data["spec"]["http"][0],
        "the user's other route is untouched"
    );
    assert_eq!(
        http[1]["headers"], original.data["spec"]["http"][1]["headers"],
        "the user's header rewrite stays"
    );
    assert_eq!(after.data["spec"]["hosts"], json!(["shop"]));
}

fn ts_split(ts: &DynamicObject) -> Split {
    let green = ts.data["spec"]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["service"] == "shop-green")
        .and_then(|b| b["weight"].as_i64())
        .unwrap_or(0);
    (green, false, 0)
}

#[tokio::test]
async fn smi_trafficsplit_weights_follow_the_steps() {
    let (ns, _ctrl) = setup("mesh-smi").await;
    install_crds(&ns.client, SMI).await;
    let spec = json!({
        "trafficRouting": { "smi": { "trafficSplitName": "shop" } },
        "strategy": { "steps": [{ "setWeight": 10 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }] }
    });
    create(&ns, &bgd("shop", "shop:1", 1, spec)).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let ar = resource("split.smi-spec.io", "v1alpha4", "TrafficSplit");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let ts = api
        .get("shop")
        .await
        .expect("the TrafficSplit Cutover owns");
    assert_eq!(ts.data["spec"]["service"], "shop", "the apex Service");
    assert!(
        ts.metadata
            .owner_references
            .is_some_and(|o| o.iter().any(|o| o.kind == "BlueGreenDeployment"))
    );
    let seen = release_recording(&ns, &ar, "shop", 2, ts_split).await;
    assert_eq!(
        seen,
        [
            (0, false, 0),
            (10, false, 0),
            (50, false, 0),
            (100, false, 0)
        ]
    );
}

/// Abort at 50 % with `split` reading the route: every state the route passes through
/// from the abort on.
async fn abort_at_fifty(
    ns: &TestNamespace,
    ar: &ApiResource,
    split: fn(&DynamicObject) -> Split,
) -> Vec<Split> {
    set_image(ns, "shop", "shop:2").await;
    wait_bgd(ns, "shop", "the pause at 50%", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, ar);
    let versions = Arc::new(Mutex::new(Vec::<(String, Split)>::new()));
    let record = versions.clone();
    watch_while_with(
        &api,
        watcher::Config::default().fields("metadata.name=shop"),
        ar.clone(),
        move |objs| {
            if let Some(r) = objs.first() {
                let rv = r.metadata.resource_version.clone().unwrap_or_default();
                let mut v = record.lock().expect("lock");
                if v.last().map(|(x, _)| x) != Some(&rv) {
                    v.push((rv, split(r)));
                }
            }
        },
        async move {
            request(ns, "shop", requests::ABORT).await;
            wait_bgd(ns, "shop", "Degraded after abort", |b| {
                phase(b) == Some(Phase::Degraded)
            })
            .await;
        },
    )
    .await;
    versions
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, s)| *s)
        .collect()
}

#[tokio::test]
async fn istio_abort_at_fifty_percent_in_one_write() {
    let (ns, _ctrl) = setup("mesh-abort").await;
    install_crds(&ns.client, ISTIO).await;
    let vs_ar = resource("networking.istio.io", "v1", "VirtualService");
    let vss: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &vs_ar);
    let mut vs = DynamicObject::new("shop", &vs_ar);
    vs.data = json!({ "spec": { "hosts": ["shop"], "http": [{ "name": "primary", "route": [{ "destination": { "host": "shop-blue" } }] }] } });
    vss.create(&PostParams::default(), &vs)
        .await
        .expect("create VirtualService");
    let steps = json!([{ "setWeight": 10 }, { "setWeight": 50 }, { "setHeaderRoute": { "match": [{ "headerName": "x-beta", "headerValue": { "exact": "1" } }] } }, { "pause": {} }]);
    create(
        &ns,
        &bgd(
            "shop",
            "shop:1",
            1,
            json!({
                "trafficRouting": { "istio": { "virtualService": { "name": "shop" } } },
                "strategy": { "steps": steps }
            }),
        ),
    )
    .await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let states = abort_at_fifty(&ns, &vs_ar, vs_split).await;
    assert_eq!(
        states,
        [(50, true, 0), (0, false, 0)],
        "istio: one write back to blue"
    );
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn smi_abort_at_fifty_percent_in_one_write() {
    let (ns, _ctrl) = setup("mesh-smi-abort").await;
    install_crds(&ns.client, SMI).await;
    create(
        &ns,
        &bgd(
            "shop",
            "shop:1",
            1,
            json!({
                "trafficRouting": { "smi": { "trafficSplitName": "shop" } },
                "strategy": { "steps": [{ "setWeight": 10 }, { "setWeight": 50 }, { "pause": {} }] }
            }),
        ),
    )
    .await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let ar = resource("split.smi-spec.io", "v1alpha4", "TrafficSplit");
    let states = abort_at_fifty(&ns, &ar, ts_split).await;
    assert_eq!(
        states,
        [(50, false, 0), (0, false, 0)],
        "smi: one write back to blue"
    );
}

/// `spec.workloadRef` with `istio` routing: the user's VirtualService sends to the user's
/// Service `shop`. Adopting leaves it as written (the adopted Service carries the live
/// color); a weight replaces the `shop` destination with the two colors; deleting the
/// BlueGreenDeployment sends it to `shop` again, the user's other route untouched.
#[tokio::test]
async fn istio_an_adopted_workloads_virtualservice_is_split_and_given_back() {
    use cutover_test_support::workload;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let (ns, _ctrl) = setup("mesh-adopt").await;
    install_crds(&ns.client, ISTIO).await;
    let pod = json!({ "containers": [{ "name": "app", "image": "shop:1", "ports": [{ "containerPort": 8080 }] }] });
    workload::deployment(&ns, "shop", 2, pod).await;
    workload::service(&ns, "shop").await;
    let ar = resource("networking.istio.io", "v1", "VirtualService");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let mut vs = DynamicObject::new("front", &ar);
    vs.data = json!({ "spec": {
        "hosts": ["shop.example"],
        "http": [
            { "name": "other", "match": [{ "uri": { "prefix": "/other" } }], "route": [{ "destination": { "host": "other" } }] },
            { "name": "main", "route": [{ "destination": { "host": "shop", "port": { "number": 80 } } }] }
        ]
    } });
    api.create(&PostParams::default(), &vs)
        .await
        .expect("create VirtualService");
    let original = api.get("front").await.expect("get");
    let hosts = |vs: &DynamicObject| -> Vec<(String, i64)> {
        vs.data["spec"]["http"][1]["route"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["destination"]["host"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d["weight"].as_i64().unwrap_or(100),
                )
            })
            .collect()
    };

    let mut b = cutover_test_support::workload::adopting("shop", "shop", 2, "OnSuccess");
    b.spec.traffic_routing =
        serde_json::from_value(json!({ "istio": { "virtualService": { "name": "front" } } }))
            .expect("routing");
    b.spec.strategy.steps =
        serde_json::from_value(json!([{ "setWeight": 30 }, { "pause": {} }])).expect("steps");
    create(&ns, &b).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    assert_eq!(
        api.get("front").await.expect("get").data["spec"],
        original.data["spec"],
        "adoption writes nothing to the route"
    );

    let deployments: Api<Deployment> = ns.api();
    deployments
        .patch(
            "shop",
            &PatchParams::apply("helm").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop" },
                "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "shop:2" }] } } }
            })),
        )
        .await
        .expect("set the image");
    wait_bgd(&ns, "shop", "the pause after 30 %", |b| {
        phase(b) == Some(Phase::Paused)
            && b.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
    })
    .await;
    assert_eq!(
        hosts(&api.get("front").await.expect("get")),
        [
            ("shop-blue".to_string(), 70),
            ("shop-green".to_string(), 30)
        ]
    );
    request(&ns, "shop", requests::PROMOTE).await;
    healthy_on(&ns, "shop", Color::Green).await;
    assert_eq!(
        hosts(&api.get("front").await.expect("get")),
        [
            ("shop-green".to_string(), 100),
            ("shop-blue".to_string(), 0)
        ]
    );

    let bgds: Api<cutover_api::BlueGreenDeployment> = ns.api();
    cutover_test_support::delete_and_wait(&bgds, "shop", TIMEOUT).await;
    let back = api.get("front").await.expect("get");
    assert_eq!(hosts(&back), [("shop".to_string(), 100)]);
    assert_eq!(
        back.data["spec"]["http"][0], original.data["spec"]["http"][0],
        "the user's other route is untouched"
    );
}
