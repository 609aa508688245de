//! `gatewayAPI` traffic routing against the real Gateway API CRDs (standard channel, from
//! the `sigs.k8s.io/gateway-api` Go module), so the apiserver validates every route write.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use cutover_api::{Color, Phase, requests};
use cutover_test_support::upstream::{GATEWAY_API, install_crds};
use cutover_test_support::{TestNamespace, watch_while_with};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

fn routes(ns: &TestNamespace) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk))
}

fn user_rules() -> Value {
    json!([
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }], "backendRefs": [{ "name": "other", "port": 8080 }] },
        {
            "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
            "filters": [{ "type": "RequestHeaderModifier", "requestHeaderModifier": { "add": [{ "name": "x-user", "value": "kept" }] } }],
            "backendRefs": [{ "name": "shop-blue", "port": 80 }]
        }
    ])
}

async fn create_route(ns: &TestNamespace) {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let mut route = DynamicObject::new("shop", &ApiResource::from_gvk(&gvk));
    route.data = json!({ "spec": { "parentRefs": [{ "name": "gw" }], "hostnames": ["shop.example"], "rules": user_rules() } });
    routes(ns)
        .create(&PostParams::default(), &route)
        .await
        .expect("create HTTPRoute");
}

/// (percent on green, header rule present, mirror percent) as the route says.
fn split(route: &DynamicObject) -> (i64, bool, i64) {
    let rules = route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut green = 0;
    let mut mirror = 0;
    for r in &rules {
        for b in r["backendRefs"].as_array().into_iter().flatten() {
            if b["name"] == "shop-green"
                && !r["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("cutover-header")
            {
                green = b["weight"].as_i64().unwrap_or(1);
            }
        }
        for f in r["filters"].as_array().into_iter().flatten() {
            if f["type"] == "RequestMirror" {
                mirror = f["requestMirror"]["percent"].as_i64().unwrap_or(100);
            }
        }
    }
    let header = rules.iter().any(|r| {
        r["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cutover-header")
    });
    (green, header, mirror)
}

fn steps_spec(steps: Value) -> Value {
    json!({ "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } }, "strategy": { "steps": steps } })
}

/// Watch HTTPRoute `shop` while `action` runs: every distinct `state` it takes, in order,
/// with the instant the watch delivered it (the starting state first).
async fn route_states<T>(
    api: &Api<DynamicObject>,
    state: impl Fn(&DynamicObject) -> T + Send + 'static,
    action: impl std::future::Future<Output = ()>,
) -> Vec<(T, std::time::Instant)>
where
    T: PartialEq + Clone + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::<(T, std::time::Instant)>::new()));
    let record = seen.clone();
    watch_while_with(
        api,
        watcher::Config::default().fields("metadata.name=shop"),
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "HTTPRoute",
        )),
        move |objs| {
            if let Some(r) = objs.first() {
                let s = state(r);
                let mut v = record.lock().expect("lock");
                if v.last().map(|(last, _)| last) != Some(&s) {
                    v.push((s, std::time::Instant::now()));
                }
            }
        },
        action,
    )
    .await;
    seen.lock().expect("lock").clone()
}

#[tokio::test]
async fn weighted_steps_header_route_and_mirror_follow_the_steps_on_an_httproute() {
    let (ns, _ctrl) = setup("gw-steps").await;
    install_crds(&ns.client, GATEWAY_API).await;
    create_route(&ns).await;
    let steps = json!([
        { "setWeight": 10 },
        { "pause": {} },
        { "setWeight": 50 },
        { "setHeaderRoute": { "match": [{ "headerName": "x-beta", "headerValue": { "exact": "1" } }] } },
        { "setMirror": { "percent": 20 } },
        { "pause": {} },
        { "setHeaderRoute": { "match": [] } },
        { "setMirror": { "percent": 0 } }
    ]);
    create(&ns, &bgd("shop", "shop:1", 2, steps_spec(steps))).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let api = routes(&ns);
    // As stored (with the apiserver's defaults), before the release.
    let original = api.get("shop").await.expect("route");
    assert_eq!(split(&original), (0, false, 0));

    let ns_ref = &ns;
    let seen = route_states(&api, split, async move {
        set_image(ns_ref, "shop", "shop:2").await;
        wait_bgd(ns_ref, "shop", "the first pause", |b| {
            phase(b) == Some(Phase::Paused)
                && b.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
        })
        .await;
        request(ns_ref, "shop", requests::PROMOTE).await;
        wait_bgd(ns_ref, "shop", "the second pause", |b| {
            phase(b) == Some(Phase::Paused)
                && b.status.as_ref().and_then(|s| s.current_step_index) == Some(5)
        })
        .await;
        request(ns_ref, "shop", requests::PROMOTE).await;
        healthy_on(ns_ref, "shop", Color::Green).await;
    })
    .await;
    let seen: Vec<_> = seen.into_iter().map(|(s, _)| s).collect();
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
        ],
        "each step is one route change, in order"
    );
    let route = api.get("shop").await.expect("route");
    let rules = route.data["spec"]["rules"]
        .as_array()
        .cloned()
        .expect("rules");
    assert_eq!(
        rules[0], original.data["spec"]["rules"][0],
        "the user's other rule is untouched"
    );
    assert_eq!(
        rules[1]["filters"], original.data["spec"]["rules"][1]["filters"],
        "the user's filter is untouched"
    );
    assert_eq!(
        route.data["spec"]["parentRefs"],
        original.data["spec"]["parentRefs"]
    );
    assert_eq!(route.data["spec"]["hostnames"], json!(["shop.example"]));
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn a_pause_after_a_weight_past_half_holds_its_full_duration() {
    // The acceptance run's exact steps: at 60 % the new color holds the larger share of
    // the route, and the controller once took that for a promotion and skipped the last
    // pause (60 % for 17 ms instead of 4 s).
    let (ns, _ctrl) = setup("gw-pause").await;
    install_crds(&ns.client, GATEWAY_API).await;
    create_route(&ns).await;
    let steps = json!([
        { "setWeight": 20 },
        { "pause": { "duration": "4s" } },
        { "setWeight": 60 },
        { "pause": { "duration": "4s" } }
    ]);
    let mut spec = steps_spec(steps);
    spec["strategy"]["autoPromotion"] = json!({ "enabled": true });
    create(&ns, &bgd("shop", "shop:v1", 1, spec)).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    let api = routes(&ns);

    // Each route state with the instant the watch delivered it.
    let ns_ref = &ns;
    let seen = route_states(&api, |r| split(r).0, async move {
        set_image(ns_ref, "shop", "shop:v2").await;
        wait_bgd(ns_ref, "shop", "the pause after 60 %", |b| {
            phase(b) == Some(Phase::Paused)
                && b.status.as_ref().and_then(|s| s.current_step_index) == Some(3)
        })
        .await;
        healthy_on(ns_ref, "shop", Color::Green).await;
    })
    .await;
    let weights: Vec<i64> = seen.iter().map(|(g, _)| *g).collect();
    assert_eq!(weights, [0, 20, 60, 100], "blue, 20 %, 60 %, green");
    // Each pause starts on the pass after its weight is written and lasts 4 s; the
    // margin covers only the watch's delivery jitter (the defect held 60 % for 17 ms).
    for (from, to) in [(1, 2), (2, 3)] {
        let held = seen[to].1 - seen[from].1;
        assert!(
            held >= std::time::Duration::from_millis(3500),
            "{}% held for {held:?}, not the pause's 4s",
            seen[from].0
        );
    }
}

#[tokio::test]
async fn abort_at_fifty_percent_returns_all_traffic_in_one_route_write() {
    let (ns, _ctrl) = setup("gw-abort").await;
    install_crds(&ns.client, GATEWAY_API).await;
    create_route(&ns).await;
    let steps = json!([
        { "setWeight": 10 },
        { "setWeight": 50 },
        { "setHeaderRoute": { "match": [{ "cookieName": "beta", "headerValue": { "exact": "yes" } }] } },
        { "pause": {} }
    ]);
    create(&ns, &bgd("shop", "shop:1", 1, steps_spec(steps))).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    set_image(&ns, "shop", "shop:2").await;
    wait_bgd(&ns, "shop", "the pause at 50%", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    let api = routes(&ns);
    assert_eq!(split(&api.get("shop").await.expect("route")), (50, true, 0));

    // Each stored version of the route (by resourceVersion) and the split it holds.
    let ns_ref = &ns;
    let versions = route_states(
        &api,
        |r| {
            (
                r.metadata.resource_version.clone().unwrap_or_default(),
                split(r),
            )
        },
        async move {
            request(ns_ref, "shop", requests::ABORT).await;
            wait_bgd(ns_ref, "shop", "Degraded after abort", |b| {
                phase(b) == Some(Phase::Degraded)
            })
            .await;
        },
    )
    .await;
    let states: Vec<_> = versions.iter().map(|((_, s), _)| *s).collect();
    assert_eq!(
        states,
        [(50, true, 0), (0, false, 0)],
        "one write from 50% + header route to all on blue"
    );
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_missing_route_is_reported_and_no_traffic_moves() {
    let (ns, _ctrl) = setup("gw-missing").await;
    install_crds(&ns.client, GATEWAY_API).await;
    create(
        &ns,
        &bgd(
            "shop",
            "shop:1",
            1,
            steps_spec(json!([{ "setWeight": 50 }])),
        ),
    )
    .await;
    let b = wait_bgd(&ns, "shop", "MissingRoute", |b| {
        condition(b, "InvalidSpec")
            .is_some_and(|c| c.reason == "MissingRoute" && c.message.contains("HTTPRoute shop"))
    })
    .await;
    assert_eq!(phase(&b), Some(Phase::Degraded));
    assert_eq!(selected(&ns, "shop").await, None, "nothing routed");
}

#[tokio::test]
async fn an_analysis_step_gates_the_next_weight_and_its_failure_aborts() {
    use cutover_api::analysis::AnalysisTemplate;
    use cutover_test_support::prometheus::MetricsEndpoint;
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json("/health", &json!({ "status": "degraded" }));
    let (ns, _ctrl) = setup("gw-analysis").await;
    install_crds(&ns.client, GATEWAY_API).await;
    create_route(&ns).await;
    let templates: Api<AnalysisTemplate> = ns.api();
    let t: AnalysisTemplate = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": { "name": "health" },
        "spec": { "metrics": [{
            "name": "health", "count": 1, "successCondition": "result == 'ok'",
            "provider": { "web": { "url": format!("{}/health", endpoint.url()), "jsonPath": "$.status" } }
        }] }
    }))
    .expect("valid");
    templates
        .create(&PostParams::default(), &t)
        .await
        .expect("create template");
    let steps = json!([
        { "setWeight": 10 },
        { "analysis": { "templates": [{ "templateName": "health" }] } },
        { "setWeight": 50 }
    ]);
    create(&ns, &bgd("shop", "shop:1", 1, steps_spec(steps))).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    set_image(&ns, "shop", "shop:2").await;
    let b = wait_bgd(&ns, "shop", "the step analysis to fail", |b| {
        phase(b) == Some(Phase::Degraded)
    })
    .await;
    let msg = b
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("step 1 analysis failed") && msg.contains("degraded"),
        "{msg}"
    );
    let route = routes(&ns).get("shop").await.expect("route");
    assert_eq!(
        split(&route),
        (0, false, 0),
        "traffic back on blue; 50% never reached"
    );
    let runs: Api<cutover_api::analysis::AnalysisRun> = ns.api();
    assert!(
        runs.get_opt("shop-2-0-step-1")
            .await
            .expect("get")
            .is_some(),
        "the step's own run"
    );
}
