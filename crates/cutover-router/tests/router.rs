//! `cutover-router` against the real API server and real backends: status written back,
//! header matches and mirroring on real requests, per-backend metrics, and a broken
//! backend reference answered with 500 and reported.

use std::time::Duration;

use cutover_test_support::e2e::{self, ProcessNode, RouterProcess, table_backends};
use cutover_test_support::upstream::{self, GATEWAY_API};
use cutover_test_support::{TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

async fn app(ns: &TestNamespace, node: &ProcessNode, name: &str, version: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": node.demo_pod_spec(version) } }
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
    }))
    .expect("service");
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
}

/// Send a GET through the router; (status, body).
async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut req = client.get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("the router answers");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

fn our_parent(route: &DynamicObject) -> Option<Value> {
    route.data["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == "cutover.dev/router")
        .cloned()
}

fn cond(parent: &Value, type_: &str) -> (String, String) {
    parent["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn routes_matches_mirrors_counts_and_reports_status() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bins = e2e::build(&["cutover-process-node", "cutover-demo-app", "cutover-router"]);
    let ns = TestNamespace::new("rt-basics").await;
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    let node = ProcessNode::start(&ns, &bins, 84).await;
    let router = RouterProcess::start(&bins, &ns.name).await;
    let port = e2e::free_port();
    e2e::gateway(&ns.client, &ns.name, port).await;
    app(&ns, &node, "blue", "v1").await;
    app(&ns, &node, "green", "v2").await;
    e2e::http_route(&ns.client, &ns.name,
        "shop",
        json!({ "rules": [
            { "matches": [{ "headers": [{ "name": "x-beta", "value": "1" }] }],
              "backendRefs": [{ "name": "green", "port": 80 }] },
            { "filters": [{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "green", "port": 80 }, "percent": 100 } }],
              "backendRefs": [{ "name": "blue", "port": 80 }] }
        ] }),
    )
    .await;
    let routes = e2e::http_routes(&ns);
    let accepted = wait_for(
        &routes,
        "shop",
        "the route Accepted with its references resolved",
        Duration::from_secs(60),
        |r: Option<&DynamicObject>| {
            r.and_then(our_parent).is_some_and(|p| {
                cond(&p, "Accepted").0 == "True" && cond(&p, "ResolvedRefs").0 == "True"
            })
        },
    )
    .await;
    assert_eq!(
        our_parent(&accepted).expect("status")["parentRef"]["name"],
        "gw"
    );
    router
        .wait_routes(
            "both backends with a ready endpoint",
            Duration::from_secs(60),
            |r| {
                let b = table_backends(r);
                ["/blue:80", "/green:80"]
                    .iter()
                    .all(|s| b.iter().any(|(n, _, eps)| n.ends_with(s) && eps.len() == 1))
            },
        )
        .await;
    let green_ip = table_backends(&router.routes().await)
        .into_iter()
        .find(|(n, _, _)| n.ends_with("/green:80"))
        .and_then(|(_, _, eps)| eps.first().cloned())
        .expect("green endpoint");

    // Header match: x-beta goes to green; the rest to blue, copied to green.
    for _ in 0..20 {
        let (status, body) = get(port, "/", &[("x-beta", "1")]).await;
        assert_eq!(status, 200);
        assert!(body.contains("\"version\":\"v2\""), "{body}");
        let (status, body) = get(port, "/", &[]).await;
        assert_eq!(status, 200);
        assert!(body.contains("\"version\":\"v1\""), "{body}");
    }
    // Green received 20 direct requests and 20 copies (copies are sent without waiting:
    // wait for them to arrive).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("http://{green_ip}/metrics"))
            .send()
            .await
            .expect("green's metrics")
            .text()
            .await
            .unwrap_or_default();
        let served: f64 = text
            .lines()
            .filter(|l| l.starts_with("demo_http_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if served >= 40.0 {
            assert_eq!(served, 40.0, "green served more than asked");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "green served {served} of 40"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = router.metrics().await;
    let line = |backend: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("cutover_router_requests_total")
                    && l.contains(&format!("backend=\"{}/{backend}:80\"", ns.name))
                    && l.contains("code=\"2xx\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(line("blue"), Some(20.0), "{metrics}");
    assert_eq!(line("green"), Some(20.0), "{metrics}");
    assert!(metrics.contains("cutover_router_request_duration_seconds_bucket"));
    assert!(
        metrics.contains(&format!(
            "cutover_router_mirrored_requests_total{{backend=\"{}/green:80\"}} 20",
            ns.name
        )),
        "{metrics}"
    );

    // A reference to a Service that does not exist: 500, and the status says why.
    e2e::http_route(
        &ns.client,
        &ns.name,
        "broken",
        json!({ "rules": [{ "matches": [{ "path": { "type": "PathPrefix", "value": "/broken" } }],
            "backendRefs": [{ "name": "nowhere", "port": 80 }] }] }),
    )
    .await;
    wait_for(
        &routes,
        "broken",
        "ResolvedRefs False with BackendNotFound",
        Duration::from_secs(60),
        |r: Option<&DynamicObject>| {
            r.and_then(our_parent).is_some_and(|p| {
                cond(&p, "ResolvedRefs") == ("False".into(), "BackendNotFound".into())
            })
        },
    )
    .await;
    router
        .wait_routes("the broken route", Duration::from_secs(30), |r| {
            r.to_string().contains("broken")
        })
        .await;
    assert_eq!(get(port, "/broken", &[]).await.0, 500);
    assert_eq!(
        get(port, "/", &[]).await.0,
        200,
        "the other route still serves"
    );

    // The Gateway is Programmed, its listener counting both routes.
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "gateway.networking.k8s.io",
            "v1",
            "Gateway",
        )),
    );
    wait_for(
        &gateways,
        "gw",
        "the Gateway Programmed with 2 attached routes",
        Duration::from_secs(30),
        |g: Option<&DynamicObject>| {
            g.is_some_and(|g| {
                let st = &g.data["status"];
                st["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Programmed" && c["status"] == "True")
                    && st["listeners"][0]["attachedRoutes"] == 2
            })
        },
    )
    .await;
}
