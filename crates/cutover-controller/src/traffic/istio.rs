//! The `istio` router: weights, an A/B header route and mirroring on an Istio
//! VirtualService the user owns.
//!
//! Cutover changes only, in the HTTP routes it manages (those named in
//! `trafficRouting.istio.virtualService.routes`, or every route sending to a color Service
//! when none are named): the `route[]` destinations whose host is `<name>-blue`/`<name>-green`
//! (short name or FQDN), and `mirror`/`mirrorPercentage` when they mirror to a color.
//! A route may send to the live Service `<name>` instead (the user's Service, adopted with
//! `spec.workloadRef`): it is left as it is while all traffic is on the live color, and its
//! `<name>` destination is replaced by the two colors for a split ([`give_back`] puts it
//! back when an adopting BlueGreenDeployment goes).
//! A header route is an HTTP route of its own, `cutover-header-<step>`, put first because
//! Istio takes the first route that matches. Everything else is written back as read.

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::HeaderMatch;
use cutover_core::Color;
use cutover_core::PerColor;
use cutover_core::release::RouteObs;
use serde_json::{Value, json};

use super::{HEADER_ROUTE_PREFIX, Target};

fn color_of(name: &str, host: &Value) -> Option<Color> {
    let host = host.as_str()?;
    let short = host.split('.').next().unwrap_or(host);
    Color::ALL
        .into_iter()
        .find(|c| short == format!("{name}-{c}"))
}

/// Whether `host` is the live Service `<name>` (short name or FQDN).
fn is_live(name: &str, host: &Value) -> bool {
    host.as_str()
        .is_some_and(|h| h.split('.').next().unwrap_or(h) == name)
}

fn is_ours(name: &str, host: &Value) -> bool {
    color_of(name, host).is_some() || is_live(name, host)
}

fn destinations(r: &Value) -> impl Iterator<Item = &Value> {
    r.get("route")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn is_header_route(r: &Value) -> bool {
    r.get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.starts_with(HEADER_ROUTE_PREFIX))
}

fn managed(bgd: &BlueGreenDeployment, name: &str, r: &Value) -> bool {
    if is_header_route(r) {
        return false;
    }
    let wanted = bgd
        .spec
        .traffic_routing
        .as_ref()
        .and_then(|t| t.istio.as_ref())
        .map(|i| i.virtual_service.routes.clone())
        .unwrap_or_default();
    if !wanted.is_empty() {
        return r
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| wanted.iter().any(|w| w == n));
    }
    destinations(r).any(|d| is_ours(name, &d["destination"]["host"]))
}

/// The split the VirtualService implements now, or what is wrong with it.
pub fn observe(spec: &Value, bgd: &BlueGreenDeployment, vs: &str) -> Result<RouteObs, String> {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let http = spec
        .get("http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(route) = http.iter().find(|r| managed(bgd, &name, r)) else {
        return Err(format!(
            "VirtualService {vs} has no HTTP route to manage (named in trafficRouting.istio.virtualService.routes, or sending to {name}, {name}-blue or {name}-green)"
        ));
    };
    let mut weights = PerColor::<i64>::default();
    for d in route
        .get("route")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = color_of(&name, &d["destination"]["host"]) {
            *weights.get_mut(c) += d.get("weight").and_then(Value::as_i64).unwrap_or(100);
        }
    }
    let header_route = super::header_step(
        http.iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str)),
    );
    let mirror = if route
        .get("mirror")
        .is_some_and(|m| color_of(&name, &m["host"]).is_some())
    {
        route
            .pointer("/mirrorPercentage/value")
            .and_then(Value::as_f64)
            .map_or(100, |p| p.round() as u8)
    } else {
        0
    };
    Ok(RouteObs {
        weights,
        header_route,
        mirror,
    })
}

fn string_match(m: &cutover_api::blue_green::StringMatch) -> Value {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => json!({ "exact": e }),
        (_, Some(p), _) => json!({ "prefix": p }),
        (_, _, Some(r)) => json!({ "regex": r }),
        _ => json!({ "regex": ".*" }),
    }
}

fn headers(matches: &[HeaderMatch]) -> Value {
    let mut out = serde_json::Map::new();
    for m in matches {
        if let Some(cookie) = &m.cookie_name {
            let value = super::gateway::header_match(m)["value"].clone();
            let _ = cookie;
            out.insert("cookie".into(), json!({ "regex": value }));
        } else if let Some(h) = &m.header_name {
            out.insert(h.to_lowercase(), string_match(&m.header_value));
        }
    }
    Value::Object(out)
}

/// The VirtualService's spec with `target` applied to the parts Cutover manages.
pub fn render(spec: &Value, bgd: &BlueGreenDeployment, target: &Target) -> Value {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let port = bgd.spec.service.port;
    let canary = target.stable.other();
    let all_on_live = target.canary_weight == 0 && target.header.is_none() && target.mirror == 0;
    let dest = |c: Color, w: u8| json!({ "destination": { "host": format!("{name}-{c}"), "port": { "number": port } }, "weight": i64::from(w) });
    let mut spec = spec.clone();
    let http = spec
        .get("http")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut template: Option<Value> = None;
    for mut r in http {
        if is_header_route(&r) {
            continue;
        }
        if managed(bgd, &name, &r) {
            // A route through the live Service carries all traffic to the live color as it
            // is; the colors replace it only for a split.
            let via_live = destinations(&r).any(|d| is_live(&name, &d["destination"]["host"]));
            if !(via_live && all_on_live) {
                let mut ds: Vec<Value> = destinations(&r)
                    .filter(|d| !is_ours(&name, &d["destination"]["host"]))
                    .cloned()
                    .collect();
                ds.push(dest(target.stable, 100 - target.canary_weight));
                ds.push(dest(canary, target.canary_weight));
                r["route"] = Value::Array(ds);
            }
            let ours = r
                .get("mirror")
                .is_some_and(|m| color_of(&name, &m["host"]).is_some());
            if let Some(obj) = r.as_object_mut()
                && (ours || target.mirror > 0)
            {
                obj.remove("mirror");
                obj.remove("mirrorPercentage");
            }
            if target.mirror > 0 {
                r["mirror"] =
                    json!({ "host": format!("{name}-{canary}"), "port": { "number": port } });
                r["mirrorPercentage"] = json!({ "value": f64::from(target.mirror) });
            }
            template.get_or_insert_with(|| r.clone());
        }
        out.push(r);
    }
    if let (Some((step, matches)), Some(t)) = (&target.header, template) {
        let base = t
            .get("match")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![json!({})]);
        let hs = headers(matches);
        let merged: Vec<Value> = base
            .into_iter()
            .map(|mut m| {
                let mut all = m
                    .get("headers")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                if let Some(extra) = hs.as_object() {
                    all.extend(extra.clone());
                }
                m["headers"] = Value::Object(all);
                m
            })
            .collect();
        out.insert(0, json!({ "name": format!("{HEADER_ROUTE_PREFIX}{step}"), "match": merged, "route": [dest(canary, 100)] }));
    }
    spec["http"] = Value::Array(out);
    spec
}

/// The VirtualService's spec given back to the live Service: every managed route that
/// splits between the colors sends to `<name>` instead, with no header route or mirror of
/// Cutover's left.
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
    if let Some(http) = spec.get_mut("http").and_then(Value::as_array_mut) {
        let split = |r: &Value| {
            destinations(r).any(|d| color_of(&name, &d["destination"]["host"]).is_some())
        };
        for r in http
            .iter_mut()
            .filter(|r| managed(bgd, &name, r) && split(r))
        {
            let mut ds: Vec<Value> = destinations(r)
                .filter(|d| !is_ours(&name, &d["destination"]["host"]))
                .cloned()
                .collect();
            ds.push(json!({ "destination": { "host": name, "port": { "number": port } } }));
            r["route"] = Value::Array(ds);
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgd() -> BlueGreenDeployment {
        crate::fixtures::bgd_from(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod" },
            "spec": {
                "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop" },
                "service": { "port": 80 },
                "trafficRouting": { "istio": { "virtualService": { "name": "shop" } } }
            }
        }))
    }

    fn hosts(spec: &Value, i: usize) -> Vec<(String, i64)> {
        destinations(&spec["http"][i])
            .map(|d| {
                (
                    d["destination"]["host"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d.get("weight").and_then(Value::as_i64).unwrap_or(100),
                )
            })
            .collect()
    }

    #[test]
    fn a_route_through_the_live_service_is_split_only_when_needed_and_given_back() {
        let user = json!({
            "hosts": ["shop.example"],
            "http": [
                { "match": [{ "uri": { "prefix": "/other" } }], "route": [{ "destination": { "host": "other" } }] },
                { "route": [{ "destination": { "host": "shop.prod.svc.cluster.local", "port": { "number": 80 } } }] }
            ]
        });
        let all_blue = Target {
            stable: Color::Blue,
            canary_weight: 0,
            header: None,
            mirror: 0,
        };
        assert_eq!(render(&user, &bgd(), &all_blue), user, "nothing to write");
        assert_eq!(
            observe(&user, &bgd(), "shop")
                .expect("managed")
                .relative_to(Color::Blue),
            None
        );
        let split = render(
            &user,
            &bgd(),
            &Target {
                canary_weight: 30,
                mirror: 10,
                ..all_blue.clone()
            },
        );
        assert_eq!(split["http"][0], user["http"][0], "the user's route stays");
        assert_eq!(
            hosts(&split, 1),
            [
                ("shop-blue".to_string(), 70),
                ("shop-green".to_string(), 30)
            ]
        );
        let seen = observe(&split, &bgd(), "shop")
            .expect("valid")
            .relative_to(Color::Blue)
            .expect("a split");
        assert_eq!((seen.weight, seen.mirror), (30, 10));
        let back = give_back(&split, &bgd());
        assert_eq!(hosts(&back, 1), [("shop".to_string(), 100)]);
        assert!(back["http"][1].get("mirror").is_none(), "{back}");
        assert_eq!(
            give_back(&user, &bgd()),
            user,
            "never split: left as written"
        );
    }
}
