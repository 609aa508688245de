//! A FailoverPolicy's traffic entry: a Gateway API HTTPRoute in the policy's namespace. Its "managed
//! rules" are those whose backendRefs name member Services (`<policy>-<member>`); a move
//! sets each managed rule's backendRefs to the target member's Service. Every other rule
//! and field is written back as read, with optimistic concurrency (`spec.rules` is an
//! atomic list, which a server-side apply would take over).

use cutover_api::kube::api::{DynamicObject, PostParams};
use cutover_api::kube::{Api, Client};
use serde_json::{Value, json};

use super::{HeaderRoute, Observed, RouteKind, TrafficProvider};
use crate::FIELD_MANAGER;
use crate::error::Error;

/// The HTTPRoute API.
pub fn api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &RouteKind::Gateway.api_resource())
}

fn names(rule: &Value) -> impl Iterator<Item = &str> {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name").and_then(Value::as_str))
}

/// Which member the route sends to: `Ok(Some(i))` when every managed rule sends only to
/// member `i`'s Service, `Ok(None)` when split or mixed, `Err` when no rule is managed.
pub fn routed_to(spec: &Value, services: &[String]) -> Result<Option<usize>, String> {
    let mut seen: Option<Option<usize>> = None;
    for rule in spec
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let idx: Vec<Option<usize>> = names(rule)
            .map(|n| services.iter().position(|s| s == n))
            .collect();
        if !idx.iter().any(Option::is_some) {
            continue;
        }
        let this = match idx.as_slice() {
            [Some(i)] => Some(*i),
            _ => None,
        };
        seen = Some(match seen {
            None => this,
            Some(prev) if prev == this => prev,
            Some(_) => None,
        });
    }
    seen.ok_or_else(|| {
        format!(
            "no rule's backendRefs name a member Service ({}); point the route's rule at one of them",
            services.join(", ")
        )
    })
}

/// The route spec with every managed rule sending to `service:port`.
pub fn render(spec: &Value, services: &[String], service: &str, port: i32) -> Value {
    let mut spec = spec.clone();
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        for rule in rules {
            if names(rule).any(|n| services.iter().any(|s| s == n)) {
                rule["backendRefs"] = json!([
                    { "group": "", "kind": "Service", "name": service, "port": port, "weight": 1 }
                ]);
            }
        }
    }
    spec
}

/// The entry route of one policy, switched between its members' Services.
pub struct EntryRoute<'a> {
    api: Api<DynamicObject>,
    /// The route as read this pass.
    route: &'a DynamicObject,
    /// Each member's Service (`<policy>-<member>`), in member order.
    services: &'a [String],
    /// Each member's Service port, in member order.
    ports: Vec<i32>,
}

impl std::fmt::Debug for EntryRoute<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryRoute")
            .field("route", &self.route.metadata.name)
            .finish_non_exhaustive()
    }
}

impl<'a> EntryRoute<'a> {
    /// The entry `route` in `ns`, between member `services` on `ports`.
    pub fn new(
        client: &Client,
        ns: &str,
        route: &'a DynamicObject,
        services: &'a [String],
        ports: Vec<i32>,
    ) -> Self {
        Self {
            api: api(client, ns),
            route,
            services,
            ports,
        }
    }
}

/// A member entry sends all its traffic to one member.
fn unsupported() -> Error {
    Error::Unsupported {
        what: "weights, header routes and mirroring on a FailoverPolicy entry",
    }
}

impl TrafficProvider for EntryRoute<'_> {
    type Backend = usize;

    fn read(&self) -> Result<Observed<usize>, Error> {
        Ok(Observed {
            live: routed_to(&self.route.data["spec"], self.services)
                .ok()
                .flatten(),
            split: Default::default(),
        })
    }

    async fn set_weight(&self, _: usize, _: u8) -> Result<(), Error> {
        Err(unsupported())
    }

    async fn set_header_route(&self, _: usize, _: Option<HeaderRoute>) -> Result<(), Error> {
        Err(unsupported())
    }

    async fn set_mirror(&self, _: usize, _: u8) -> Result<(), Error> {
        Err(unsupported())
    }

    /// Point every managed rule at member `to`'s Service, with optimistic concurrency on
    /// the version read (`spec.rules` is an atomic list the user owns: an apply would take
    /// it over).
    async fn switch_live(&self, to: usize) -> Result<(), Error> {
        let name = self.route.metadata.name.clone().unwrap_or_default();
        let (Some(service), Some(port)) = (self.services.get(to), self.ports.get(to)) else {
            return Err(Error::MissingField("spec.members"));
        };
        let spec = render(&self.route.data["spec"], self.services, service, *port);
        if spec == self.route.data["spec"] {
            return Ok(());
        }
        let mut route = self.route.clone();
        route.data["spec"] = spec;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        self.api
            .replace(&name, &pp, &route)
            .await
            .map(|_| ())
            .map_err(|source| Error::Apply {
                kind: "HTTPRoute",
                name,
                source,
            })
    }

    /// The route is the user's; what it points at stays.
    async fn remove(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Vec<String> {
        vec!["shop-east".into(), "shop-west".into()]
    }

    #[test]
    fn the_route_is_read_as_the_member_every_managed_rule_names() {
        let spec = json!({ "rules": [
            { "backendRefs": [{ "name": "shop-west", "port": 80 }] },
            { "matches": [{ "path": { "type": "PathPrefix", "value": "/other" } }], "backendRefs": [{ "name": "other" }] },
        ]});
        assert_eq!(routed_to(&spec, &services()), Ok(Some(1)));
        let split = json!({ "rules": [
            { "backendRefs": [{ "name": "shop-west" }, { "name": "shop-east" }] },
        ]});
        assert_eq!(routed_to(&split, &services()), Ok(None));
        let none = json!({ "rules": [{ "backendRefs": [{ "name": "other" }] }] });
        assert!(
            routed_to(&none, &services())
                .expect_err("unmanaged")
                .contains("shop-east")
        );
    }

    #[test]
    fn a_move_rewrites_only_managed_rules() {
        let spec = json!({ "parentRefs": [{ "name": "gw" }], "rules": [
            { "filters": [{ "type": "RequestHeaderModifier" }], "backendRefs": [{ "name": "shop-east", "port": 80 }] },
            { "backendRefs": [{ "name": "other", "port": 9 }] },
        ]});
        let out = render(&spec, &services(), "shop-west", 80);
        assert_eq!(out["rules"][0]["backendRefs"][0]["name"], "shop-west");
        assert_eq!(out["rules"][0]["filters"], spec["rules"][0]["filters"]);
        assert_eq!(out["rules"][1], spec["rules"][1]);
        assert_eq!(out["parentRefs"], spec["parentRefs"]);
        assert_eq!(routed_to(&out, &services()), Ok(Some(1)));
    }
}
