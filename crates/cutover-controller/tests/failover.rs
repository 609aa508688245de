//! FailoverPolicy in one cluster with a database known only by its replication lag, read
//! from a real Prometheus: the data gate applies, and nothing is fenced or promoted.

mod common;

use common::*;
use cutover_api::FailoverPolicy;
use cutover_test_support::prometheus::{MetricsEndpoint, Prometheus};
use cutover_test_support::upstream::{self, GATEWAY_API};
use cutover_test_support::{TestNamespace, e2e, wait_for};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

async fn routed_to(ns: &TestNamespace) -> Vec<String> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let api: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let route = api.get("entry").await.expect("the entry route");
    route.data["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect()
}

async fn wait_policy(
    ns: &TestNamespace,
    what: &str,
    cond: impl Fn(&FailoverPolicy) -> bool + Send + 'static,
) -> FailoverPolicy {
    let api: Api<FailoverPolicy> = ns.api();
    wait_for(
        &api,
        "dr",
        what,
        TIMEOUT,
        move |p: Option<&FailoverPolicy>| p.is_some_and(&cond),
    )
    .await
}

#[tokio::test]
async fn a_lag_read_from_prometheus_gates_the_failover_and_nothing_is_fenced() {
    let (ns, _ctrl) = setup("fp-prom").await;
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    // The members' health URLs and the lag gauge, scraped by a real Prometheus.
    let ep = MetricsEndpoint::start();
    ep.set_response("/east", 200, "text/plain", "ok");
    ep.set_response("/west", 200, "text/plain", "ok");
    ep.set_gauge("replica_lag_seconds", &[("member", "west")], 30.0);
    let prom = Prometheus::start(&[ep.addr()]).await;
    create(&ns, &bgd("east-shop", "shop:1", 1, json!({}))).await;
    create(&ns, &bgd("west-shop", "shop:1", 1, json!({}))).await;
    healthy_on(&ns, "east-shop", cutover_api::Color::Blue).await;
    healthy_on(&ns, "west-shop", cutover_api::Color::Blue).await;
    e2e::http_route(
        &ns.client,
        &ns.name,
        "entry",
        json!({ "rules": [{ "backendRefs": [{ "name": "dr-east", "port": 80 }] }] }),
    )
    .await;
    let policy: FailoverPolicy = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
        "metadata": { "name": "dr" },
        "spec": {
            "members": [
                { "name": "east", "blueGreenDeployment": "east-shop",
                  "healthCheckUrl": format!("{}/east", ep.url()) },
                { "name": "west", "blueGreenDeployment": "west-shop",
                  "healthCheckUrl": format!("{}/west", ep.url()),
                  "database": { "prometheus": { "address": prom.url(),
                      "lagSecondsQuery": "replica_lag_seconds{member=\"west\"}" } } },
            ],
            "entry": { "httpRoute": { "name": "entry" } },
            "healthCheck": { "interval": "200ms", "timeout": "500ms",
                             "failureThreshold": 3, "successThreshold": 2 },
            "minHoldSeconds": 0,
            "dataGate": { "maxDataLossSeconds": 5 },
        }
    }))
    .expect("a valid FailoverPolicy");
    ns.api::<FailoverPolicy>()
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the FailoverPolicy");
    wait_policy(&ns, "both healthy, west's lag read from Prometheus", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.members.len() == 2
                && s.members.iter().all(|m| m.healthy && m.seen_up)
                && s.members.iter().any(|m| {
                    m.name == "west"
                        && m.database_role.as_deref() == Some("external")
                        && m.lag_seconds == Some(30.0)
                })
        })
    })
    .await;
    assert_eq!(routed_to(&ns).await, ["dr-east"]);

    // East fails while west lags 30 s: refused.
    ep.set_response("/east", 503, "text/plain", "down");
    wait_policy(&ns, "the failover refused", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Degraded")
                && s.message.as_deref().is_some_and(|m| m.contains("refused"))
        })
    })
    .await;
    let refused = events(&ns.client, &ns.name, "FailoverRefused").await;
    assert!(
        refused.iter().any(|m| m.contains("maxDataLossSeconds")),
        "{refused:?}"
    );
    assert_eq!(routed_to(&ns).await, ["dr-east"]);

    // West catches up: the failover goes ahead, with no fencing or promotion to do.
    ep.set_gauge("replica_lag_seconds", &[("member", "west")], 1.0);
    let p = wait_policy(&ns, "failed over to west", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.active_member.as_deref() == Some("west") && s.moving.is_none())
    })
    .await;
    assert_eq!(
        p.status.and_then(|s| s.phase).as_deref(),
        Some("FailedOver")
    );
    assert_eq!(routed_to(&ns).await, ["dr-west"]);
    let steps: Vec<String> = events(&ns.client, &ns.name, "FailoverStarted").await;
    assert_eq!(steps.len(), 1, "{steps:?}");
    // A fence or promotion would have needed a PostgreSQL connection and failed the step.
    let failed = events(&ns.client, &ns.name, "FailoverStepFailed").await;
    assert!(failed.is_empty(), "{failed:?}");
    let done = events(&ns.client, &ns.name, "FailoverDone").await;
    assert_eq!(done.len(), 1, "{done:?}");
}
