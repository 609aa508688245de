//! The routing table without I/O: weights, match precedence, endpoint readiness, status.

use std::collections::BTreeMap;

use cutover_router::model::{Gateway, HTTPRoute};
use cutover_router::table::{self, Inputs, Pick, RequestView, schedule};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proptest::prelude::*;
use serde_json::json;

fn gateway(ns: &str, from: &str) -> Gateway {
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "gw", "namespace": ns },
        "spec": { "gatewayClassName": "cutover", "listeners": [
            { "name": "http", "port": 8000, "protocol": "HTTP", "allowedRoutes": { "namespaces": { "from": from } } }
        ] }
    }))
    .expect("gateway")
}

fn route(ns: &str, name: &str, spec: serde_json::Value) -> HTTPRoute {
    let mut spec = spec;
    spec["parentRefs"] = json!([{ "name": "gw", "namespace": "apps" }]);
    serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z" },
        "spec": spec,
    }))
    .expect("route")
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "apps" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
    }))
    .expect("service")
}

/// A slice of `name` with `(address, ready)` endpoints on port 8080.
fn slice(name: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
    let eps: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(a, r)| json!({ "addresses": [a], "conditions": { "ready": r } }))
        .collect();
    serde_json::from_value(json!({
        "metadata": { "name": format!("{name}-x"), "namespace": "apps",
            "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": eps,
    }))
    .expect("slice")
}

struct World {
    gateways: Vec<Gateway>,
    routes: Vec<HTTPRoute>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

impl World {
    fn new(routes: Vec<HTTPRoute>) -> World {
        World {
            gateways: vec![gateway("apps", "Same")],
            routes,
            services: vec![service("blue"), service("green")],
            slices: vec![
                slice(
                    "blue",
                    &[
                        ("10.0.0.1", Some(true)),
                        ("10.0.0.2", None),
                        ("10.0.0.3", Some(false)),
                    ],
                ),
                slice("green", &[("10.0.1.1", Some(true))]),
            ],
        }
    }
    fn build(&self) -> (table::Table, table::Report) {
        table::build(&Inputs {
            gateways: self.gateways.iter().collect(),
            routes: self.routes.iter().collect(),
            services: self.services.iter().collect(),
            slices: self.slices.iter().collect(),
        })
    }
}

fn get<'a>(path: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    RequestView {
        host: "example.com",
        path,
        query,
        method: "GET",
        headers,
    }
}

fn backend_of(t: &table::Table, req: &RequestView<'_>) -> Option<String> {
    let rule = t.ports.get(&8000)?.route(req)?;
    match rule.pick() {
        Pick::Backend(b) => Some(b.name.clone()),
        Pick::Invalid => Some("invalid".into()),
    }
}

fn weighted(blue: u32, green: u32) -> serde_json::Value {
    json!({ "rules": [{ "backendRefs": [
        { "name": "blue", "port": 80, "weight": blue },
        { "name": "green", "port": 80, "weight": green },
    ] }] })
}

#[test]
fn weights_split_every_window_exactly() {
    let w = World::new(vec![route("apps", "r", weighted(90, 10))]);
    let (t, report) = w.build();
    let h = http::HeaderMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1000 {
        *counts
            .entry(backend_of(&t, &get("/", &h)).expect("routed"))
            .or_default() += 1;
    }
    assert_eq!(counts["apps/blue:80"], 900);
    assert_eq!(counts["apps/green:80"], 100);
    let st = &report.routes["apps/r"][0];
    assert!(st.accepted.0 && st.resolved.0, "{st:?}");
    assert_eq!(report.attached["apps/gw"]["http"], 1);
}

#[test]
fn only_ready_endpoints_are_used_and_unset_counts_as_ready() {
    let w = World::new(vec![route("apps", "r", weighted(1, 0))]);
    let (t, _) = w.build();
    let h = http::HeaderMap::new();
    let rule = t.ports[&8000].route(&get("/", &h)).expect("routed");
    let Pick::Backend(b) = rule.pick() else {
        panic!("blue resolves")
    };
    let eps: Vec<String> = b.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(eps, ["10.0.0.1:8080", "10.0.0.2:8080"]);
    // In turn, and another one when asked to avoid one.
    let first = b.endpoint(&[]).expect("endpoint");
    assert_ne!(b.endpoint(&[first]), Some(first));
}

/// A retried request goes to an endpoint none of its attempts failed on while there is one,
/// whatever the turn: with two of four endpoints gone, the third attempt reaches a live one.
#[test]
fn a_retry_skips_every_endpoint_already_tried() {
    let mut w = World::new(vec![route("apps", "r", weighted(1, 0))]);
    w.slices[0] = slice(
        "blue",
        &[
            ("10.0.0.1", None),
            ("10.0.0.2", None),
            ("10.0.0.3", None),
            ("10.0.0.4", None),
        ],
    );
    let (t, _) = w.build();
    let h = http::HeaderMap::new();
    let rule = t.ports[&8000].route(&get("/", &h)).expect("routed");
    let Pick::Backend(b) = rule.pick() else {
        panic!("blue resolves")
    };
    let all = b.endpoints.clone();
    for turn in 0..8 {
        let tried = [all[turn % 4], all[(turn + 1) % 4]];
        let pick = b.endpoint(&tried).expect("endpoint");
        assert!(!tried.contains(&pick), "turn {turn}: {pick} was tried");
        let three = [tried[0], tried[1], pick];
        assert!(!three.contains(&b.endpoint(&three).expect("endpoint")));
    }
    // Every one tried: the next in turn all the same.
    assert!(b.endpoint(&all).is_some());
}

#[test]
fn precedence_exact_then_longest_prefix_then_headers() {
    let spec = json!({ "rules": [
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
          "backendRefs": [{ "name": "blue", "port": 80 }] },
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/api" } }],
          "backendRefs": [{ "name": "green", "port": 80 }] },
        { "matches": [{ "path": { "type": "Exact", "value": "/api/v1" } }],
          "backendRefs": [{ "name": "blue", "port": 80 }] },
        { "matches": [{ "path": { "type": "PathPrefix", "value": "/api" },
                        "headers": [{ "type": "RegularExpression", "name": "Cookie", "value": "(^|.*;\\s*)beta=yes(;.*|$)" }] }],
          "backendRefs": [{ "name": "blue", "port": 80 }] },
    ] });
    let w = World::new(vec![route("apps", "r", spec)]);
    let (t, _) = w.build();
    let none = http::HeaderMap::new();
    let mut beta = http::HeaderMap::new();
    beta.insert("cookie", "a=1; beta=yes".parse().expect("header"));
    let mut other = http::HeaderMap::new();
    other.insert("cookie", "beta=no".parse().expect("header"));
    assert_eq!(
        backend_of(&t, &get("/", &none)).as_deref(),
        Some("apps/blue:80")
    );
    assert_eq!(
        backend_of(&t, &get("/api/x", &none)).as_deref(),
        Some("apps/green:80")
    );
    assert_eq!(
        backend_of(&t, &get("/apix", &none)).as_deref(),
        Some("apps/blue:80"),
        "prefixes match whole segments"
    );
    assert_eq!(
        backend_of(&t, &get("/api/v1", &none)).as_deref(),
        Some("apps/blue:80")
    );
    assert_eq!(
        backend_of(&t, &get("/api/x", &beta)).as_deref(),
        Some("apps/blue:80")
    );
    assert_eq!(
        backend_of(&t, &get("/api/x", &other)).as_deref(),
        Some("apps/green:80")
    );
}

#[test]
fn query_and_method_matches() {
    let spec = json!({ "rules": [
        { "backendRefs": [{ "name": "blue", "port": 80 }] },
        { "matches": [{ "queryParams": [{ "name": "v", "value": "2" }] }],
          "backendRefs": [{ "name": "green", "port": 80 }] },
    ] });
    let w = World::new(vec![route("apps", "r", spec)]);
    let (t, _) = w.build();
    let h = http::HeaderMap::new();
    assert_eq!(
        backend_of(&t, &get("/?v=2", &h)).as_deref(),
        Some("apps/green:80")
    );
    assert_eq!(
        backend_of(&t, &get("/?v=3", &h)).as_deref(),
        Some("apps/blue:80")
    );
}

#[test]
fn unresolved_backends_answer_500_and_are_reported() {
    let spec = json!({ "rules": [{ "backendRefs": [{ "name": "missing", "port": 80 }] }] });
    let w = World::new(vec![route("apps", "r", spec)]);
    let (t, report) = w.build();
    let h = http::HeaderMap::new();
    assert_eq!(backend_of(&t, &get("/", &h)).as_deref(), Some("invalid"));
    let st = &report.routes["apps/r"][0];
    assert!(st.accepted.0);
    assert_eq!((st.resolved.0, st.resolved.1), (false, "BackendNotFound"));
    assert!(st.resolved.2.contains("apps/missing"), "{}", st.resolved.2);
}

#[test]
fn routes_of_other_namespaces_need_the_listener_to_allow_them() {
    let mut w = World::new(vec![route("other", "r", weighted(1, 0))]);
    let (t, report) = w.build();
    assert!(
        t.ports[&8000]
            .route(&get("/", &http::HeaderMap::new()))
            .is_none()
    );
    assert_eq!(
        report.routes["other/r"][0].accepted.1,
        "NotAllowedByListeners"
    );
    w.gateways = vec![gateway("apps", "All")];
    let (_, report) = w.build();
    assert!(report.routes["other/r"][0].accepted.0);
}

#[test]
fn mirrors_copy_the_given_share() {
    let spec = json!({ "rules": [{
        "filters": [{ "type": "RequestMirror", "requestMirror": { "backendRef": { "name": "green", "port": 80 }, "percent": 25 } }],
        "backendRefs": [{ "name": "blue", "port": 80 }] }] });
    let w = World::new(vec![route("apps", "r", spec)]);
    let (t, _) = w.build();
    let h = http::HeaderMap::new();
    let rule = t.ports[&8000].route(&get("/", &h)).expect("routed");
    let copied = (0..1000).filter(|_| rule.mirrors[0].take()).count();
    assert_eq!(copied, 250);
}

proptest! {
    /// One cycle holds each backend exactly in proportion, and every prefix of it is
    /// within one request of the exact share (smoothness).
    #[test]
    fn schedule_is_exact_and_smooth(weights in proptest::collection::vec(0u32..200, 1..5)) {
        let s = schedule(&weights);
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            prop_assert!(s.is_empty());
        } else {
            let len = s.len() as f64;
            for (i, &w) in weights.iter().enumerate() {
                let share = f64::from(w) / total as f64;
                let count = s.iter().filter(|&&x| x == i).count() as f64;
                prop_assert!((count - share * len).abs() < 1e-9, "{weights:?}: {i} got {count} of {len}");
                let mut seen = 0.0;
                for (n, &x) in s.iter().enumerate() {
                    if x == i { seen += 1.0; }
                    prop_assert!((seen - share * (n as f64 + 1.0)).abs() <= 1.0 + 1e-9, "{weights:?} prefix {n}");
                }
            }
        }
    }
}
