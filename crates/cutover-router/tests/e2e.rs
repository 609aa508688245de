//! Real traffic through a real release: the demo app's pods run as processes on a
//! process-backed node, `cutover-router` serves a Gateway in front of them, the controller
//! releases, and a load generator counts every response and every failure.

use std::time::Duration;

use cutover_api::{BlueGreenDeployment, Color, Phase, requests};
use cutover_test_support::TestNamespace;
use cutover_test_support::controller::{ControllerProcess, install_crds};
use cutover_test_support::e2e::{self, ProcessNode, RouterProcess, table_backends};
use cutover_test_support::load::{Load, Report};
use cutover_test_support::release::{healthy_on, phase, request, wait_bgd};
use cutover_test_support::upstream::{self, GATEWAY_API};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Requests per measured window.
const WINDOW: u64 = 2_000;

struct Stack {
    ns: TestNamespace,
    node: ProcessNode,
    router: RouterProcess,
    _controller: ControllerProcess,
    port: u16,
}

async fn stack(prefix: &str, block: u8) -> Stack {
    let bins = e2e::build(&[
        "cutover-controller",
        "cutover-process-node",
        "cutover-demo-app",
        "cutover-router",
    ]);
    let ns = TestNamespace::new(prefix).await;
    install_crds(&ns.client).await;
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    let node = ProcessNode::start(&ns, &bins, block).await;
    let router = RouterProcess::start(&bins, &ns.name).await;
    let controller =
        ControllerProcess::start(&bins.join("cutover-controller"), &ns.name, "c1", 15).await;
    let port = e2e::free_port();
    e2e::gateway(&ns.client, &ns.name, port).await;
    Stack {
        ns,
        node,
        router,
        _controller: controller,
        port,
    }
}

fn shop(node: &ProcessNode, version: &str, extra: Value) -> BlueGreenDeployment {
    let mut spec = json!({
        "replicas": 2,
        "selector": { "matchLabels": { "app": "shop" } },
        "template": { "metadata": { "labels": { "app": "shop" } }, "spec": node.demo_pod_spec(version) },
        "service": { "port": 80, "targetPort": 8080 },
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" }, "spec": spec,
    }))
    .expect("valid BlueGreenDeployment")
}

async fn release(s: &Stack, version: &str) {
    let api: Api<BlueGreenDeployment> = s.ns.api();
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "template": { "spec": s.node.demo_pod_spec(version) } } })),
    )
    .await
    .expect("patch the template");
}

/// Let at least `WINDOW` requests pass and return what they saw.
async fn window(load: &Load) -> Report {
    let before = load.snapshot().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let now = load.snapshot().await;
        if now.total - before.total >= WINDOW {
            return now.since(&before);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load stalled: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn weight_of(routes: &Value, service: &str) -> u64 {
    table_backends(routes)
        .iter()
        .filter(|(name, _, _)| name.contains(&format!("/{service}:")))
        .map(|(_, w, _)| *w)
        .sum()
}

#[tokio::test]
async fn a_weighted_release_splits_real_traffic_by_its_steps_and_fails_no_request() {
    let s = stack("rt-weights", 81).await;
    e2e::blue_route(&s.ns.client, &s.ns.name, "shop").await;
    let steps = json!({
        "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
        "strategy": { "steps": [{ "setWeight": 10 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }] }
    });
    let api: Api<BlueGreenDeployment> = s.ns.api();
    api.create(&PostParams::default(), &shop(&s.node, "v1", steps))
        .await
        .expect("create");
    healthy_on(&s.ns, "shop", Color::Blue).await;
    s.router
        .wait_routes("two ready blue endpoints", Duration::from_secs(60), |r| {
            table_backends(r)
                .iter()
                .any(|(n, _, eps)| n.ends_with("/shop-blue:80") && eps.len() == 2)
        })
        .await;

    let load = Load::start(
        &format!("http://127.0.0.1:{}/", s.port),
        8,
        Duration::from_secs(10),
        Duration::from_secs(900),
    );
    let before = window(&load).await;
    assert_eq!(before.percent_of("v1"), 100.0, "{before:?}");

    release(&s, "v2").await;
    let mut shares = Vec::new();
    for (step, weight) in [(1, 10u64), (3, 50)] {
        wait_bgd(
            &s.ns,
            "shop",
            &format!("the pause at step {step}"),
            move |b| {
                phase(b) == Some(Phase::Paused)
                    && b.status.as_ref().and_then(|st| st.current_step_index) == Some(step)
            },
        )
        .await;
        s.router
            .wait_routes(
                &format!("green at {weight}%"),
                Duration::from_secs(30),
                |r| {
                    weight_of(r, "shop-green") == weight
                        && weight_of(r, "shop-blue") == 100 - weight
                },
            )
            .await;
        let w = window(&load).await;
        let share = w.percent_of("v2");
        eprintln!(
            "step {step}: weight {weight}%, v2 answered {share:.2}% of {} requests",
            w.total
        );
        assert!(
            (share - weight as f64).abs() <= 3.0,
            "at {weight}% v2 answered {share:.2}%: {w:?}"
        );
        shares.push((weight, share));
        request(&s.ns, "shop", requests::PROMOTE).await;
    }
    healthy_on(&s.ns, "shop", Color::Green).await;
    s.router
        .wait_routes("green at 100%", Duration::from_secs(30), |r| {
            weight_of(r, "shop-green") == 100 && weight_of(r, "shop-blue") == 0
        })
        .await;
    let after = window(&load).await;
    assert_eq!(after.percent_of("v2"), 100.0, "{after:?}");
    let report = load.stop().await;
    eprintln!("whole release: {report:?}; shares {shares:?}");
    assert_eq!(
        report.failed(),
        0,
        "failed requests across the release and the switch: {report:?}"
    );
}

/// v1 Healthy on blue, served through an HTTPRoute to the live Service `shop` (whose
/// selector the controller switches between the colors), both endpoints in the router.
async fn behind_the_live_service(s: &Stack) {
    e2e::http_route(
        &s.ns.client,
        &s.ns.name,
        "front",
        json!({ "rules": [{ "backendRefs": [{ "name": "shop", "port": 80 }] }] }),
    )
    .await;
    let api: Api<BlueGreenDeployment> = s.ns.api();
    api.create(&PostParams::default(), &shop(&s.node, "v1", json!({})))
        .await
        .expect("create");
    healthy_on(&s.ns, "shop", Color::Blue).await;
    s.router
        .wait_routes(
            "two ready endpoints behind shop",
            Duration::from_secs(60),
            |r| {
                table_backends(r)
                    .iter()
                    .any(|(n, _, eps)| n.ends_with("/shop:80") && eps.len() == 2)
            },
        )
        .await;
}

#[tokio::test]
async fn service_routing_survives_twenty_switches_under_load_without_a_failed_request() {
    let s = stack("rt-switch", 82).await;
    behind_the_live_service(&s).await;
    let load = Load::start(
        &format!("http://127.0.0.1:{}/", s.port),
        8,
        Duration::from_secs(10),
        Duration::from_secs(900),
    );
    let mut color = Color::Blue;
    for i in 0..20 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        release(&s, version).await;
        color = if color == Color::Blue {
            Color::Green
        } else {
            Color::Blue
        };
        healthy_on(&s.ns, "shop", color).await;
        // Traffic follows: the router's endpoints are the new color's, and answers say so.
        let before = load.snapshot().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let w = load.snapshot().await.since(&before);
            if w.ok_by_version.get(version).copied().unwrap_or(0) >= 50 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "switch {i}: no answers from {version}: {w:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = load.stop().await;
    eprintln!("20 switches: {report:?}");
    assert!(report.ok() > 0);
    assert_eq!(
        report.failed(),
        0,
        "failed requests across 20 switches: {report:?}"
    );
}

/// The sum of every sample of metric `name` in a /metrics text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_killed_pod_process_leaves_the_endpoints_and_the_router_losing_at_most_its_in_flight_requests()
 {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::watcher;

    let s = stack("rt-kill", 83).await;
    behind_the_live_service(&s).await;
    const WORKERS: usize = 8;
    let load = Load::start(
        &format!("http://127.0.0.1:{}/", s.port),
        WORKERS,
        Duration::from_secs(10),
        Duration::from_secs(600),
    );
    window(&load).await;

    // SIGKILL one live pod's process (its container ID is `process://<pid>`).
    let pods: Api<Pod> = s.ns.api();
    let victim = pods
        .list(&kube::api::ListParams::default().labels("cutover.dev/color=blue"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("a blue pod");
    let status = victim.status.clone().expect("status");
    let ip = status.pod_ip.clone().expect("pod IP");
    let pid: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| {
            c.container_id
                .as_deref()?
                .strip_prefix("process://")?
                .parse()
                .ok()
        })
        .expect("a process container ID");
    let errors_before = metric_sum(
        &s.router.metrics().await,
        "cutover_router_upstream_errors_total",
    );
    let at_kill = load.snapshot().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pod's process");

    // Readiness fails, so the endpoint is no longer ready in the Service's slice...
    let slices: Api<EndpointSlice> = s.ns.api();
    cutover_test_support::wait_for_list(
        &slices,
        watcher::Config::default().labels("kubernetes.io/service-name=shop"),
        "the killed pod's endpoint not ready",
        Duration::from_secs(60),
        |list: &[std::sync::Arc<EndpointSlice>]| {
            list.iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.addresses.contains(&ip))
                .all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(false))
        },
    )
    .await;
    // ...and the router's table drops it.
    let endpoint = format!("{ip}:8080");
    s.router
        .wait_routes("the killed endpoint gone", Duration::from_secs(30), |r| {
            table_backends(r)
                .iter()
                .filter(|(n, _, _)| n.ends_with("/shop:80"))
                .all(|(_, _, eps)| !eps.contains(&endpoint) && !eps.is_empty())
        })
        .await;
    let errors_at_removal = metric_sum(
        &s.router.metrics().await,
        "cutover_router_upstream_errors_total",
    );
    // From now on nothing is sent to it: no further connection errors.
    let after = window(&load).await;
    let errors_later = metric_sum(
        &s.router.metrics().await,
        "cutover_router_upstream_errors_total",
    );
    let report = load.stop().await;
    let since_kill = report.since(&at_kill);
    let retries = metric_sum(&s.router.metrics().await, "cutover_router_retries_total");
    eprintln!(
        "killed pod {ip}: {} requests since the kill, {} failed (bound: {WORKERS} in flight), \
         router saw {} connection errors and retried {retries} requests",
        since_kill.total,
        since_kill.failed(),
        errors_at_removal - errors_before,
    );
    assert_eq!(after.failed(), 0, "{after:?}");
    assert_eq!(
        errors_later, errors_at_removal,
        "requests still went to the killed endpoint"
    );
    assert!(
        since_kill.failed() <= WORKERS as u64,
        "more requests lost than were in flight: {since_kill:?}"
    );
}

/// A plain Deployment `shop` (2 pods, v1) and its Service `shop`, served through the
/// router by HTTPRoute `front`, with a load running through it.
async fn a_served_deployment(s: &Stack) -> Load {
    use cutover_test_support::workload;
    workload::deployment(&s.ns, "shop", 2, s.node.demo_pod_spec("v1")).await;
    workload::service(&s.ns, "shop").await;
    e2e::http_route(
        &s.ns.client,
        &s.ns.name,
        "front",
        json!({ "rules": [{ "backendRefs": [{ "name": "shop", "port": 80 }] }] }),
    )
    .await;
    the_deployment_serves_alone(s).await;
    let load = Load::start(
        &format!("http://127.0.0.1:{}/", s.port),
        8,
        Duration::from_secs(10),
        Duration::from_secs(900),
    );
    window(&load).await;
    load
}

/// The router sends `shop` to two pods (the Deployment's, before adoption and after it).
async fn the_deployment_serves_alone(s: &Stack) {
    s.router
        .wait_routes(
            "the Deployment's two pods behind shop",
            Duration::from_secs(120),
            |r| {
                table_backends(r)
                    .iter()
                    .any(|(n, _, eps)| n.ends_with("/shop:80") && eps.len() == 2)
            },
        )
        .await;
}

/// A BlueGreenDeployment `shop` adopting Deployment `shop`, with `extra` in its spec.
fn adopting(extra: Value) -> BlueGreenDeployment {
    let mut spec = json!({
        "replicas": 2,
        "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop" },
        "service": { "port": 80, "targetPort": 8080 },
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" }, "spec": spec,
    }))
    .expect("valid BlueGreenDeployment")
}

/// Adopt: Healthy on blue, the Deployment scaled to zero.
async fn adopt(s: &Stack, bgd: &BlueGreenDeployment) {
    use k8s_openapi::api::apps::v1::Deployment;
    let bgds: Api<BlueGreenDeployment> = s.ns.api();
    bgds.create(&PostParams::default(), bgd)
        .await
        .expect("create BlueGreenDeployment");
    healthy_on(&s.ns, "shop", Color::Blue).await;
    cutover_test_support::wait_for(
        &s.ns.api::<Deployment>(),
        "shop",
        "the Deployment scaled down",
        Duration::from_secs(120),
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
                    && d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
            })
        },
    )
    .await;
}

/// Set image v2 on Deployment `shop` as Helm sets it (its own field manager); the
/// Deployment as written.
async fn helm_sets_v2(s: &Stack) -> k8s_openapi::api::apps::v1::Deployment {
    use k8s_openapi::api::apps::v1::Deployment;
    let deployments: Api<Deployment> = s.ns.api();
    let mut template = deployments
        .get("shop")
        .await
        .expect("get")
        .spec
        .expect("spec")
        .template;
    template.spec = Some(serde_json::from_value(s.node.demo_pod_spec("v2")).expect("pod spec"));
    deployments
        .patch(
            "shop",
            &PatchParams::apply("helm").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop" },
                "spec": { "template": template }
            })),
        )
        .await
        .expect("set the new image")
}

/// Wait until v2 answers alone.
async fn v2_serves_alone(load: &Load) {
    let before = load.snapshot().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let w = load.snapshot().await.since(&before);
        if w.ok_by_version.get("v2").copied().unwrap_or(0) >= 200
            && w.ok_by_version.get("v1").copied().unwrap_or(0) == 0
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "v2 does not serve alone: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delete the BlueGreenDeployment; the Deployment serves alone again. Then stop the load,
/// and check that no request failed and the Deployment is as `set` left it, at its size.
async fn give_back(
    s: &Stack,
    load: Load,
    set: &k8s_openapi::api::apps::v1::Deployment,
    what: &str,
) {
    use k8s_openapi::api::apps::v1::Deployment;
    let bgds: Api<BlueGreenDeployment> = s.ns.api();
    cutover_test_support::delete_and_wait(&bgds, "shop", Duration::from_secs(180)).await;
    the_deployment_serves_alone(s).await;
    window(&load).await;
    let report = load.stop().await;
    eprintln!("{what}: {report:?}");
    assert!(report.ok() > 0);
    assert_eq!(
        report.failed(),
        0,
        "failed requests across {what}: {report:?}"
    );
    let now = s.ns.api::<Deployment>().get("shop").await.expect("get");
    assert_eq!(
        now.spec.as_ref().map(|s| &s.template),
        set.spec.as_ref().map(|s| &s.template),
        "the Deployment's template is the user's"
    );
    assert_eq!(now.spec.as_ref().and_then(|s| s.replicas), Some(2));
}

/// Adoption (`spec.workloadRef`) under load: a plain Deployment and its Service serve
/// through the router; a BlueGreenDeployment of the Service's name adopts the Deployment,
/// a new image set on the Deployment (as Helm sets it) is released, and deleting the
/// BlueGreenDeployment gives the traffic back to the Deployment — with no failed request,
/// and the Deployment's template never written by Cutover.
#[tokio::test]
async fn an_adopted_deployment_is_released_and_given_back_under_load_without_a_failed_request() {
    let s = stack("rt-adopt", 85).await;
    let load = a_served_deployment(&s).await;
    // The preview Service through the router on a host name of its own, for the analysis:
    // the new version must answer there before the switch.
    e2e::http_route(
        &s.ns.client,
        &s.ns.name,
        "preview",
        json!({ "hostnames": ["preview.shop.test"],
                "rules": [{ "backendRefs": [{ "name": "shop-preview", "port": 80 }] }] }),
    )
    .await;
    let templates: Api<cutover_api::analysis::AnalysisTemplate> = s.ns.api();
    templates
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": { "name": "preview-serves-v2" },
                "spec": { "metrics": [{
                    "name": "version", "count": 3, "interval": "1s", "failureLimit": 0,
                    "successCondition": "result == \"v2\"",
                    "provider": { "web": {
                        "url": format!("http://127.0.0.1:{}/", s.port),
                        "headers": [{ "key": "Host", "value": "preview.shop.test" }],
                        "jsonPath": "$.version"
                    } }
                }] }
            }))
            .expect("a template"),
        )
        .await
        .expect("create the AnalysisTemplate");

    // Adopt. Releases go through steps: an analysis of the preview, then a pause.
    adopt(
        &s,
        &adopting(json!({ "strategy": { "steps": [
            { "analysis": { "templates": [{ "templateName": "preview-serves-v2" }] } },
            { "pause": { "duration": "1s" } }
        ] } })),
    )
    .await;
    window(&load).await;

    // A new image on the Deployment, as Helm sets it: released to green.
    let set = helm_sets_v2(&s).await;
    healthy_on(&s.ns, "shop", Color::Green).await;
    let runs: Api<cutover_api::analysis::AnalysisRun> = s.ns.api();
    let runs = runs.list(&Default::default()).await.expect("runs").items;
    assert_eq!(runs.len(), 1, "the release's analysis step ran once");
    let status = runs[0].status.clone().expect("run status");
    assert_eq!(
        status.phase,
        Some(cutover_api::analysis::AnalysisPhase::Successful),
        "{status:?}"
    );
    let values: Vec<Option<String>> = status.metric_results[0]
        .measurements
        .iter()
        .map(|m| m.value.clone())
        .collect();
    assert_eq!(
        values,
        vec![Some("\"v2\"".to_string()); 3],
        "the preview answered with the new version, through the router"
    );
    v2_serves_alone(&load).await;

    // Delete: the Deployment serves again before the colors go.
    give_back(&s, load, &set, "adopt, release, give back").await;
}

/// Adoption with a weighted provider: the user's own HTTPRoute, which sends to the user's
/// Service `shop`, is the BlueGreenDeployment's `gatewayAPI` route. Adopting writes nothing
/// to it (the adopted Service carries the live color); the first weight step replaces its
/// `shop` backend with the two colors; deleting the BlueGreenDeployment sends it to `shop`
/// again. Real traffic through the router, no failed request.
#[tokio::test]
async fn an_adopted_deployment_behind_its_own_httproute_is_released_by_weight_and_given_back_without_a_failed_request()
 {
    let s = stack("rt-adopt-w", 86).await;
    let routes =
        cutover_test_support::e2e::gateway_api(&s.ns.client, Some(&s.ns.name), "HTTPRoute");
    let load = a_served_deployment(&s).await;
    let written = routes.get("front").await.expect("the user's route");
    adopt(
        &s,
        &adopting(json!({
            "trafficRouting": { "gatewayAPI": { "httpRoute": "front" } },
            "strategy": { "steps": [{ "setWeight": 25 }, { "pause": {} }] }
        })),
    )
    .await;
    window(&load).await;
    let adopted = routes.get("front").await.expect("the route");
    assert_eq!(
        adopted.data["spec"]["rules"], written.data["spec"]["rules"],
        "adoption sends through the user's Service: the route is not written"
    );

    let set = helm_sets_v2(&s).await;
    wait_bgd(&s.ns, "shop", "the pause after 25 %", |b| {
        phase(b) == Some(Phase::Paused)
            && b.status.as_ref().and_then(|st| st.current_step_index) == Some(1)
    })
    .await;
    s.router
        .wait_routes("green at 25%", Duration::from_secs(30), |r| {
            weight_of(r, "shop-green") == 25 && weight_of(r, "shop-blue") == 75
        })
        .await;
    let w = window(&load).await;
    let share = w.percent_of("v2");
    eprintln!("at 25 %, v2 answered {share:.2}% of {} requests", w.total);
    assert!((share - 25.0).abs() <= 3.0, "{w:?}");
    request(&s.ns, "shop", requests::PROMOTE).await;
    healthy_on(&s.ns, "shop", Color::Green).await;
    v2_serves_alone(&load).await;

    give_back(&s, load, &set, "adopt, weighted release, give back").await;
    let back = routes.get("front").await.expect("the route");
    let refs: Vec<(Value, Value)> = back.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| (b["name"].clone(), b["port"].clone()))
        .collect();
    assert_eq!(
        refs,
        [(json!("shop"), json!(80))],
        "the route sends to the user's Service again: {back:?}"
    );
}
