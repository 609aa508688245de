//! The `gatewayAPI` router: weights, an A/B header rule and mirroring on a Gateway API
//! HTTPRoute the user owns.
//!
//! The user's route stays the user's. Cutover changes only (a) the `backendRefs` that name
//! `<name>-blue`/`<name>-green` in the rules that already send to one of them (the
//! "managed rules"), (b) `RequestMirror` filters that mirror to those Services, and (c) one
//! rule of its own named `cutover-header-<step>`, present only while a `setHeaderRoute`
//! step is active. Every other rule, match, hostname and filter is written back as read.
//!
//! A rule may also send to the live Service `<name>` itself (the user's Service, adopted
//! with `spec.workloadRef`, or Cutover's own): that Service follows the live color, so the
//! rule is left as it is while all traffic is on the live color, and its `<name>` backend
//! is replaced by the two colors at the first weight, header route or mirror. An adopted
//! workload's route gets `<name>` back when the BlueGreenDeployment goes ([`give_back`]).
//! `spec.rules` is an atomic list, so a server-side apply would take it over: the route
//! is updated with optimistic concurrency (the resourceVersion read) instead, and a
//! concurrent edit by the user makes the write fail and the pass retry.

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::{HeaderMatch, StringMatch};
use cutover_core::release::RouteObs;
use cutover_core::{Color, PerColor};
use serde_json::{Value, json};

use super::{HEADER_ROUTE_PREFIX, Target};

fn service_of(name: &str, color: Color) -> String {
    format!("{name}-{color}")
}

fn color_of(name: &str, backend: &Value) -> Option<Color> {
    let n = backend.get("name")?.as_str()?;
    let kind_ok = backend
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "Service");
    if !kind_ok {
        return None;
    }
    Color::ALL.into_iter().find(|c| n == service_of(name, *c))
}

/// Whether `backend` is the live Service `<name>`.
fn is_live(name: &str, backend: &Value) -> bool {
    backend.get("name").and_then(Value::as_str) == Some(name)
        && backend
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(|k| k == "Service")
}

/// Whether `backend` is one Cutover switches: a color's Service or the live Service.
fn is_ours(name: &str, backend: &Value) -> bool {
    color_of(name, backend).is_some() || is_live(name, backend)
}

fn backends(rule: &Value) -> impl Iterator<Item = &Value> {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_header_rule(rule: &Value) -> bool {
    rule.get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with(HEADER_ROUTE_PREFIX))
}

fn is_managed(name: &str, rule: &Value) -> bool {
    !is_header_rule(rule) && backends(rule).any(|b| is_ours(name, b))
}

/// The split the route implements now, or an error naming what is wrong with the route.
pub fn observe(spec: &Value, name: &str, route: &str) -> Result<RouteObs, String> {
    let rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(managed) = rules.iter().find(|r| is_managed(name, r)) else {
        return Err(format!(
            "HTTPRoute {route} has no rule whose backendRefs name Service {name}, {} or {}; point one at them",
            service_of(name, Color::Blue),
            service_of(name, Color::Green)
        ));
    };
    let mut weights = PerColor::<i64>::default();
    for b in managed
        .get("backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = color_of(name, b) {
            *weights.get_mut(c) += b.get("weight").and_then(Value::as_i64).unwrap_or(1);
        }
    }
    let header_route = super::header_step(
        rules
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str)),
    );
    let mirror = managed
        .get("filters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("RequestMirror"))
        .filter_map(|f| f.get("requestMirror"))
        .find(|m| {
            m.get("backendRef")
                .is_some_and(|b| color_of(name, b).is_some())
        })
        .map(|m| m.get("percent").and_then(Value::as_u64).unwrap_or(100))
        .and_then(|p| u8::try_from(p).ok())
        .unwrap_or(0);
    Ok(RouteObs {
        weights,
        header_route,
        mirror,
    })
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

fn value_regex(m: &StringMatch) -> String {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => regex_escape(e),
        (_, Some(p), _) => format!("{}.*", regex_escape(p)),
        (_, _, Some(r)) => r.clone(),
        _ => ".*".into(),
    }
}

/// A Gateway API header match for one of ours.
pub fn header_match(m: &HeaderMatch) -> Value {
    if let Some(cookie) = &m.cookie_name {
        return json!({
            "type": "RegularExpression",
            "name": "Cookie",
            "value": format!("(^|.*;\\s*){}={}(;.*|$)", regex_escape(cookie), value_regex(&m.header_value)),
        });
    }
    let name = m.header_name.clone().unwrap_or_default();
    match (&m.header_value.exact, &m.header_value.prefix) {
        (Some(e), _) => json!({ "type": "Exact", "name": name, "value": e }),
        _ => {
            json!({ "type": "RegularExpression", "name": name, "value": format!("^{}$", value_regex(&m.header_value)) })
        }
    }
}

/// The route's spec with `target` applied to the parts Cutover manages; the rest as read.
pub fn render(spec: &Value, bgd: &BlueGreenDeployment, target: &Target) -> Value {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let port = bgd.spec.service.port;
    let canary = target.stable.other();
    let all_on_live = target.canary_weight == 0 && target.header.is_none() && target.mirror == 0;
    let mut spec = spec.clone();
    let rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<Value> = Vec::new();
    let mut header_template: Option<Value> = None;
    for mut rule in rules {
        if is_header_rule(&rule) {
            continue;
        }
        if is_managed(&name, &rule) {
            // A rule through the live Service carries all traffic to the live color as it
            // is; the colors replace it only for a split.
            let via_live = backends(&rule).any(|b| is_live(&name, b));
            if !(via_live && all_on_live) {
                let mut refs: Vec<Value> = backends(&rule)
                    .filter(|b| !is_ours(&name, b))
                    .cloned()
                    .collect();
                refs.push(json!({ "group": "", "kind": "Service", "name": service_of(&name, target.stable), "port": port, "weight": 100 - i64::from(target.canary_weight) }));
                refs.push(json!({ "group": "", "kind": "Service", "name": service_of(&name, canary), "port": port, "weight": i64::from(target.canary_weight) }));
                rule["backendRefs"] = Value::Array(refs);
            }
            let mut filters: Vec<Value> = rule
                .get("filters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|f| {
                    !(f.get("type").and_then(Value::as_str) == Some("RequestMirror")
                        && f.pointer("/requestMirror/backendRef")
                            .is_some_and(|b| color_of(&name, b).is_some()))
                })
                .cloned()
                .collect();
            if target.mirror > 0 {
                filters.push(json!({
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": { "group": "", "kind": "Service", "name": service_of(&name, canary), "port": port },
                        "percent": i64::from(target.mirror),
                    }
                }));
            }
            if filters.is_empty() {
                if let Some(obj) = rule.as_object_mut() {
                    obj.remove("filters");
                }
            } else {
                rule["filters"] = Value::Array(filters);
            }
            header_template.get_or_insert_with(|| rule.clone());
        }
        out.push(rule);
    }
    if let (Some((step, matches)), Some(template)) = (&target.header, header_template) {
        let headers: Vec<Value> = matches.iter().map(header_match).collect();
        let base_matches = template
            .get("matches")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![json!({})]);
        let matches: Vec<Value> = base_matches
            .into_iter()
            .map(|mut m| {
                let mut all = m
                    .get("headers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                all.extend(headers.iter().cloned());
                m["headers"] = Value::Array(all);
                m
            })
            .collect();
        out.insert(
            0,
            json!({
                "name": format!("{HEADER_ROUTE_PREFIX}{step}"),
                "matches": matches,
                "backendRefs": [{ "group": "", "kind": "Service", "name": service_of(&name, canary), "port": port, "weight": 1 }],
            }),
        );
    }
    spec["rules"] = Value::Array(out);
    spec
}

/// The route's spec given back to the live Service: every managed rule sends to `<name>`
/// instead of the colors, with no header rule or mirror of Cutover's left (an adopted
/// workload's Service serves its pods again once the colors go).
pub fn give_back(spec: &Value, bgd: &BlueGreenDeployment) -> Value {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let port = bgd.spec.service.port;
    let all_on = Target {
        stable: Color::Blue,
        canary_weight: 0,
        header: None,
        mirror: 0,
    };
    let mut spec = render(spec, bgd, &all_on);
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        let split = |r: &Value| backends(r).any(|b| color_of(&name, b).is_some());
        for rule in rules.iter_mut().filter(|r| !is_header_rule(r) && split(r)) {
            let mut refs: Vec<Value> = backends(rule)
                .filter(|b| !is_ours(&name, b))
                .cloned()
                .collect();
            refs.push(json!({ "group": "", "kind": "Service", "name": name, "port": port }));
            rule["backendRefs"] = Value::Array(refs);
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::release::TrafficObs;

    fn bgd() -> BlueGreenDeployment {
        serde_json::from_value(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{ "name": "a", "image": "i" }] } },
                "service": { "port": 80 },
                "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } }
            }
        }))
        .expect("valid")
    }

    fn route() -> Value {
        json!({
            "parentRefs": [{ "name": "gw" }],
            "hostnames": ["shop.example"],
            "rules": [
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }], "backendRefs": [{ "name": "other", "port": 8080 }] },
                {
                    "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                    "filters": [{ "type": "RequestHeaderModifier", "requestHeaderModifier": { "add": [{ "name": "x-user", "value": "kept" }] } }],
                    "backendRefs": [{ "name": "shop-blue", "port": 80 }]
                }
            ]
        })
    }

    #[test]
    fn weights_header_rule_and_mirror_touch_only_what_is_managed() {
        let matches = vec![HeaderMatch {
            header_name: Some("x-beta".into()),
            cookie_name: None,
            header_value: StringMatch {
                exact: Some("1".into()),
                ..StringMatch::default()
            },
        }];
        let target = Target {
            stable: Color::Blue,
            canary_weight: 10,
            header: Some((3, matches)),
            mirror: 20,
        };
        let out = render(&route(), &bgd(), &target);
        assert_eq!(out["hostnames"], json!(["shop.example"]));
        let rules = out["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["name"], "cutover-header-3");
        assert_eq!(
            rules[0]["matches"][0]["headers"][0],
            json!({ "type": "Exact", "name": "x-beta", "value": "1" })
        );
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/");
        assert_eq!(
            rules[1],
            route()["rules"][0],
            "the user's other rule is untouched"
        );
        let managed = &rules[2];
        assert_eq!(managed["backendRefs"][0]["weight"], 90);
        assert_eq!(managed["backendRefs"][1]["name"], "shop-green");
        assert_eq!(managed["backendRefs"][1]["weight"], 10);
        assert_eq!(
            managed["filters"][0]["type"], "RequestHeaderModifier",
            "the user's filter stays"
        );
        assert_eq!(managed["filters"][1]["requestMirror"]["percent"], 20);

        let seen = observe(&out, "shop", "shop")
            .expect("valid")
            .relative_to(Color::Blue);
        assert_eq!(
            seen,
            Some(TrafficObs {
                weight: 10,
                header_route: Some(3),
                mirror: 20,
            })
        );

        // Back to all-blue: the header rule and the mirror go, the user's parts stay.
        let reset = render(
            &out,
            &bgd(),
            &Target {
                stable: Color::Blue,
                canary_weight: 0,
                header: None,
                mirror: 0,
            },
        );
        let rules = reset["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1]["filters"],
            json!([{ "type": "RequestHeaderModifier", "requestHeaderModifier": { "add": [{ "name": "x-user", "value": "kept" }] } }])
        );
        assert_eq!(
            observe(&reset, "shop", "shop")
                .expect("valid")
                .relative_to(Color::Blue),
            Some(TrafficObs::default())
        );
    }

    #[test]
    fn a_split_past_half_is_read_against_the_live_color_not_the_larger_share() {
        // Found by an acceptance run: at a 60 % step the new color has the larger share;
        // reading the larger share as live made the controller think green was promoted
        // and skip the pause after the step.
        let target = Target {
            stable: Color::Blue,
            canary_weight: 60,
            header: None,
            mirror: 0,
        };
        let out = render(&route(), &bgd(), &target);
        let seen = observe(&out, "shop", "shop").expect("valid");
        assert_eq!(seen.relative_to(Color::Blue).map(|t| t.weight), Some(60));
        assert_eq!(seen.relative_to(Color::Green).map(|t| t.weight), Some(40));
        let all_green = Target {
            canary_weight: 100,
            ..target
        };
        let out = render(&route(), &bgd(), &all_green);
        assert_eq!(
            observe(&out, "shop", "shop")
                .expect("valid")
                .relative_to(Color::Blue)
                .map(|t| t.weight),
            Some(100),
            "a route switched before the live Service reads as all traffic on the other color"
        );
    }

    #[test]
    fn a_rule_through_the_live_service_is_split_only_when_needed_and_given_back() {
        let user = json!({
            "parentRefs": [{ "name": "gw" }],
            "rules": [
                { "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }], "backendRefs": [{ "name": "other", "port": 8080 }] },
                { "backendRefs": [{ "name": "shop", "port": 80 }] }
            ]
        });
        let all_blue = Target {
            stable: Color::Blue,
            canary_weight: 0,
            header: None,
            mirror: 0,
        };
        // All traffic on the live color: the live Service carries it, nothing to write.
        assert_eq!(render(&user, &bgd(), &all_blue), user);
        assert_eq!(
            observe(&user, "shop", "front")
                .expect("a rule through the live Service is managed")
                .relative_to(Color::Blue),
            None,
            "no color weights: all on the live Service"
        );
        // A weight: the live Service gives way to the two colors.
        let split = render(
            &user,
            &bgd(),
            &Target {
                canary_weight: 20,
                ..all_blue.clone()
            },
        );
        assert_eq!(split["rules"][0], user["rules"][0]);
        let refs = split["rules"][1]["backendRefs"].as_array().expect("refs");
        let names: Vec<&str> = refs.iter().filter_map(|b| b["name"].as_str()).collect();
        assert_eq!(names, ["shop-blue", "shop-green"]);
        assert_eq!(
            observe(&split, "shop", "front")
                .expect("valid")
                .relative_to(Color::Blue)
                .map(|t| t.weight),
            Some(20)
        );
        // Promoted, then given back: the rule sends to the live Service again.
        let promoted = render(
            &split,
            &bgd(),
            &Target {
                stable: Color::Green,
                ..all_blue
            },
        );
        assert_eq!(promoted["rules"][1]["backendRefs"][0]["name"], "shop-green");
        let back = give_back(&promoted, &bgd());
        assert_eq!(back["rules"][0], user["rules"][0]);
        assert_eq!(
            back["rules"][1]["backendRefs"],
            json!([{ "group": "", "kind": "Service", "name": "shop", "port": 80 }])
        );
        assert_eq!(
            give_back(&back, &bgd()),
            back,
            "giving back twice changes nothing"
        );
        assert_eq!(
            give_back(&user, &bgd()),
            user,
            "a route never split is left as written"
        );
    }

    #[test]
    fn a_route_without_a_color_backend_is_an_error_naming_it() {
        let err = observe(
            &json!({ "rules": [{ "backendRefs": [{ "name": "x" }] }] }),
            "shop",
            "front",
        )
        .expect_err("no managed rule");
        assert!(
            err.contains("HTTPRoute front") && err.contains("shop-blue"),
            "{err}"
        );
    }

    #[test]
    fn cookie_and_prefix_matches_become_regular_expressions() {
        let cookie = HeaderMatch {
            header_name: None,
            cookie_name: Some("beta".into()),
            header_value: StringMatch {
                exact: Some("yes".into()),
                ..StringMatch::default()
            },
        };
        assert_eq!(header_match(&cookie)["name"], "Cookie");
        assert_eq!(header_match(&cookie)["value"], "(^|.*;\\s*)beta=yes(;.*|$)");
        let prefix = HeaderMatch {
            header_name: Some("x-v".into()),
            cookie_name: None,
            header_value: StringMatch {
                prefix: Some("2.".into()),
                ..StringMatch::default()
            },
        };
        assert_eq!(header_match(&prefix)["value"], "^2\\..*$");
    }
}
