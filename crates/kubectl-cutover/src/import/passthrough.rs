//! Documents of the input that are not translated pass through; this applies what the
//! translations ask of them ([`Claim`]): leaving out what Cutover makes itself, renaming a
//! route's backends to Cutover's per-color Services, pointing an autoscaler at the
//! BlueGreenDeployment. Each change is a note.

use serde_json::{Value, json};

use super::Claim;

/// The document as it goes to the output (`None`: left out), noting every change.
pub(crate) fn apply(
    doc: &Value,
    label: &str,
    claims: &[&Claim],
    notes: &mut Vec<String>,
) -> Option<Value> {
    let mut out = doc.clone();
    for claim in claims {
        match claim {
            Claim::Drop { why, .. } => {
                notes.push(format!("{label}: left out: {why}"));
                return None;
            }
            Claim::RenameBackends {
                renames, routes, ..
            } => {
                let done = match super::kind_of(doc) {
                    Some("VirtualService") => rename_hosts(&mut out, renames, routes),
                    _ => rename_backend_refs(&mut out, renames),
                };
                if !done.is_empty() {
                    notes.push(format!(
                        "{label}: backends renamed to Cutover's per-color Services: {}",
                        done.join(", ")
                    ));
                }
            }
            Claim::Retarget { name, .. } => {
                if let Some(target) = out.pointer_mut("/spec/scaleTargetRef") {
                    *target = json!({
                        "apiVersion": "cutover.dev/v1alpha1",
                        "kind": "BlueGreenDeployment",
                        "name": name,
                    });
                    notes.push(format!(
                        "{label}: spec.scaleTargetRef now names BlueGreenDeployment {name} \
                         (it has a scale subresource)"
                    ));
                }
            }
        }
    }
    Some(out)
}

/// `old → new` for the notes.
fn arrow(old: &str, new: &str) -> String {
    format!("{old} → {new}")
}

/// An HTTPRoute: `backendRefs` (and request mirrors) naming a renamed Service.
fn rename_backend_refs(route: &mut Value, renames: &[(String, String, i64)]) -> Vec<String> {
    let mut done = Vec::new();
    let is_service = |r: &Value| {
        r.get("kind")
            .and_then(Value::as_str)
            .is_none_or(|k| k == "Service")
            && r.get("group")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
    };
    let Some(rules) = route
        .pointer_mut("/spec/rules")
        .and_then(Value::as_array_mut)
    else {
        return done;
    };
    for rule in rules {
        for backend in rule
            .get_mut("backendRefs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if !is_service(backend) {
                continue;
            }
            let Some(name) = backend.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some((old, new, weight)) = renames.iter().find(|(old, _, _)| old == name) {
                backend["name"] = json!(new);
                if backend.get("weight").is_none() {
                    backend["weight"] = json!(weight);
                }
                done.push(arrow(old, new));
            }
        }
        for filter in rule
            .get_mut("filters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(mirror) = filter.pointer_mut("/requestMirror/backendRef") else {
                continue;
            };
            let Some(name) = mirror.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some((old, new, _)) = renames.iter().find(|(old, _, _)| old == name) {
                mirror["name"] = json!(new);
                done.push(arrow(old, new));
            }
        }
    }
    done.dedup();
    done
}

/// A host of a VirtualService destination renamed: `old` or `old.<namespace>...`.
fn renamed_host(host: &str, renames: &[(String, String, i64)]) -> Option<(String, String, i64)> {
    let (short, rest) = host
        .split_once('.')
        .map_or((host, None), |(s, r)| (s, Some(r)));
    let (old, new, weight) = renames.iter().find(|(old, _, _)| old == short)?;
    let host = match rest {
        Some(rest) => format!("{new}.{rest}"),
        None => new.clone(),
    };
    Some((host, arrow(old, new), *weight))
}

/// A VirtualService: destinations (and mirrors) of the HTTP routes in `routes` (every HTTP
/// route when empty) whose host is a renamed Service.
fn rename_hosts(
    vs: &mut Value,
    renames: &[(String, String, i64)],
    routes: &[String],
) -> Vec<String> {
    let mut done = Vec::new();
    let Some(http) = vs.pointer_mut("/spec/http").and_then(Value::as_array_mut) else {
        return done;
    };
    for route in http {
        let name = route.get("name").and_then(Value::as_str).unwrap_or("");
        if !routes.is_empty() && !routes.iter().any(|r| r == name) {
            continue;
        }
        for destination in route
            .get_mut("route")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(host) = destination
                .pointer("/destination/host")
                .and_then(Value::as_str)
            else {
                continue;
            };
            if let Some((host, change, weight)) = renamed_host(host, renames) {
                destination["destination"]["host"] = json!(host);
                if destination.get("weight").is_none() {
                    destination["weight"] = json!(weight);
                }
                done.push(change);
            }
        }
        if let Some(host) = route.pointer("/mirror/host").and_then(Value::as_str)
            && let Some((host, change, _)) = renamed_host(host, renames)
        {
            route["mirror"]["host"] = json!(host);
            done.push(change);
        }
    }
    done.dedup();
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `doc` after the claim to rename its backends `shop-stable` to `shop-blue` and
    /// `shop-canary` to `shop-green` (in the HTTP routes `routes`; none: all), and the notes.
    fn renamed(doc: &Value, label: &str, routes: Vec<String>) -> (Value, Vec<String>) {
        let claim = Claim::RenameBackends {
            index: 0,
            renames: vec![
                ("shop-stable".into(), "shop-blue".into(), 100),
                ("shop-canary".into(), "shop-green".into(), 0),
            ],
            routes,
        };
        let mut notes = Vec::new();
        let out = apply(doc, label, &[&claim], &mut notes).expect("kept");
        (out, notes)
    }

    #[test]
    fn http_route_backends_are_renamed_and_weighted() {
        let route = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": { "name": "shop" },
            "spec": { "rules": [
                { "backendRefs": [
                    { "name": "shop-stable", "port": 80 },
                    { "name": "shop-canary", "port": 80, "weight": 0 },
                    { "name": "other", "port": 80 }
                ] }
            ] }
        });
        let (out, notes) = renamed(&route, "HTTPRoute/shop", vec![]);
        let refs = &out["spec"]["rules"][0]["backendRefs"];
        assert_eq!(
            refs[0],
            json!({ "name": "shop-blue", "port": 80, "weight": 100 })
        );
        assert_eq!(
            refs[1],
            json!({ "name": "shop-green", "port": 80, "weight": 0 })
        );
        assert_eq!(refs[2], json!({ "name": "other", "port": 80 }));
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn virtual_service_hosts_are_renamed_in_the_named_routes_only() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": { "name": "shop" },
            "spec": { "http": [
                { "name": "primary", "route": [
                    { "destination": { "host": "shop-stable.prod.svc.cluster.local" }, "weight": 100 },
                    { "destination": { "host": "shop-canary" } }
                ] },
                { "name": "other", "route": [ { "destination": { "host": "shop-stable" } } ] }
            ] }
        });
        let (out, _) = renamed(&vs, "VirtualService/shop", vec!["primary".into()]);
        let primary = &out["spec"]["http"][0]["route"];
        assert_eq!(
            primary[0]["destination"]["host"],
            "shop-blue.prod.svc.cluster.local"
        );
        assert_eq!(
            primary[1],
            json!({ "destination": { "host": "shop-green" }, "weight": 0 })
        );
        assert_eq!(
            out["spec"]["http"][1]["route"][0]["destination"]["host"],
            "shop-stable"
        );
    }

    #[test]
    fn dropped_and_retargeted_documents() {
        let svc = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "shop" } });
        let drop = Claim::Drop {
            index: 0,
            why: "Cutover owns it".into(),
        };
        let mut notes = Vec::new();
        assert_eq!(apply(&svc, "Service/shop", &[&drop], &mut notes), None);
        assert_eq!(
            notes,
            vec!["Service/shop: left out: Cutover owns it".to_owned()]
        );
        let hpa = json!({ "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": { "name": "shop" },
            "spec": { "scaleTargetRef": { "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "shop" } } });
        let retarget = Claim::Retarget {
            index: 0,
            name: "shop".into(),
        };
        let out = apply(
            &hpa,
            "HorizontalPodAutoscaler/shop",
            &[&retarget],
            &mut notes,
        )
        .expect("kept");
        assert_eq!(out["spec"]["scaleTargetRef"]["kind"], "BlueGreenDeployment");
        assert_eq!(
            out["spec"]["scaleTargetRef"]["apiVersion"],
            "cutover.dev/v1alpha1"
        );
    }
}
