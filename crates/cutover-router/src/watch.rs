//! The control loop: watch GatewayClasses, Gateways, HTTPRoutes, Services and
//! EndpointSlices; after any change build a new table, swap it in, listen on its ports and
//! write back the statuses of the GatewayClass, Gateways and HTTPRoutes served.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::model::{GROUP, Gateway, GatewayClass, HTTPRoute};
use crate::proxy::Proxy;
use crate::table::{self, Inputs, ParentStatus};

/// Settings of the control loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `controllerName` of the GatewayClasses served.
    pub controller_name: String,
    /// Watch only this namespace (Gateways, routes, Services, slices).
    pub namespace: Option<String>,
    /// The address reported in Gateway status (None: none reported).
    pub address: Option<IpAddr>,
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, notify: Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watch error (retrying)");
            }
            notify.notify_one();
        }
    });
    reader
}

/// Run until the process ends.
pub async fn run(client: Client, proxy: Arc<Proxy>, settings: Settings) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let ns = settings.namespace.as_deref();
    let classes = spawn_reflector::<GatewayClass>(
        Api::all(client.clone()),
        watcher::Config::default(),
        notify.clone(),
    );
    let gateways =
        spawn_reflector::<Gateway>(api(&client, ns), watcher::Config::default(), notify.clone());
    let routes =
        spawn_reflector::<HTTPRoute>(api(&client, ns), watcher::Config::default(), notify.clone());
    let services =
        spawn_reflector::<Service>(api(&client, ns), watcher::Config::default(), notify.clone());
    let slices = spawn_reflector::<EndpointSlice>(
        api(&client, ns),
        watcher::Config::default().labels("kubernetes.io/service-name"),
        notify.clone(),
    );
    for (what, ready) in [
        ("GatewayClasses", classes.wait_until_ready().await),
        ("Gateways", gateways.wait_until_ready().await),
        ("HTTPRoutes", routes.wait_until_ready().await),
        ("Services", services.wait_until_ready().await),
        ("EndpointSlices", slices.wait_until_ready().await),
    ] {
        ready
            .map_err(|e| anyhow::anyhow!("the watch of {what} ended before its first list: {e}"))?;
    }
    tracing::info!("watches ready");
    loop {
        let class_list = classes.state();
        let ours: Vec<Arc<GatewayClass>> = class_list
            .into_iter()
            .filter(|c| c.spec.controller_name == settings.controller_name)
            .collect();
        let gw_list: Vec<Arc<Gateway>> = gateways
            .state()
            .into_iter()
            .filter(|g| {
                ours.iter()
                    .any(|c| c.name_any() == g.spec.gateway_class_name)
            })
            .collect();
        let route_list = routes.state();
        let svc_list = services.state();
        let slice_list = slices.state();
        let inputs = Inputs {
            gateways: gw_list.iter().map(AsRef::as_ref).collect(),
            routes: route_list.iter().map(AsRef::as_ref).collect(),
            services: svc_list.iter().map(AsRef::as_ref).collect(),
            slices: slice_list.iter().map(AsRef::as_ref).collect(),
        };
        let (table, report) = table::build(&inputs);
        proxy.swap(table);
        let failed = proxy.sync_listeners().await;
        write_statuses(
            &client,
            &settings,
            &ours,
            &gw_list,
            &route_list,
            &report,
            &failed,
        )
        .await;
        notify.notified().await;
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    old: &[Value],
) -> Value {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays.
    let since = old
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(Time(jiff::Timestamp::now())));
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation.unwrap_or(0), "lastTransitionTime": since,
    })
}

fn same_conditions(a: &Value, b: &Value) -> bool {
    // Equal but for transition times.
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(a) == strip(b)
}

async fn patch_status<K>(api: &Api<K>, obj: &K, status: Value)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    // The resourceVersion makes it a compare-and-swap: a status another writer changed in
    // between is not overwritten (the next event recomputes it).
    let patch =
        json!({ "metadata": { "resourceVersion": obj.resource_version() }, "status": status });
    match api
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => tracing::debug!(name = %obj.name_any(), "status written"),
        Err(e) => tracing::debug!(name = %obj.name_any(), error = %e, "status update skipped"),
    }
}

async fn write_statuses(
    client: &Client,
    settings: &Settings,
    classes: &[Arc<GatewayClass>],
    gateways: &[Arc<Gateway>],
    routes: &[Arc<HTTPRoute>],
    report: &table::Report,
    failed: &BTreeMap<u16, String>,
) {
    for class in classes {
        let old = class.status.clone().unwrap_or(Value::Null);
        let old_conds = old["conditions"].as_array().cloned().unwrap_or_default();
        let conds = json!([condition(
            "Accepted",
            true,
            "Accepted",
            "served by cutover-router",
            class.metadata.generation,
            &old_conds
        )]);
        if !same_conditions(&conds, &old["conditions"]) {
            patch_status(
                &Api::<GatewayClass>::all(client.clone()),
                class,
                json!({ "conditions": conds }),
            )
            .await;
        }
    }
    for gw in gateways {
        let ns = gw.namespace().unwrap_or_default();
        let generation = gw.metadata.generation;
        let old = gw.status.clone().unwrap_or(Value::Null);
        let old_conds = old["conditions"].as_array().cloned().unwrap_or_default();
        let attached = report.attached.get(&format!("{ns}/{}", gw.name_any()));
        let mut all_programmed = true;
        let listeners: Vec<Value> = gw
            .spec
            .listeners
            .iter()
            .map(|l| {
                let old_l: Vec<Value> = old["listeners"]
                    .as_array()
                    .and_then(|ls| ls.iter().find(|x| x["name"] == l.name.as_str()))
                    .and_then(|x| x["conditions"].as_array().cloned())
                    .unwrap_or_default();
                let supported = l.protocol == "HTTP";
                let bind_error = failed.get(&l.port);
                let programmed = supported && bind_error.is_none();
                all_programmed &= programmed;
                let (reason, message) = match (supported, bind_error) {
                    (false, _) => ("UnsupportedProtocol", format!("protocol {} is not served (HTTP only)", l.protocol)),
                    (true, Some(e)) => ("PortUnavailable", e.clone()),
                    (true, None) => ("Programmed", "listening".to_string()),
                };
                json!({
                    "name": l.name,
                    "supportedKinds": if supported { json!([{ "group": GROUP, "kind": "HTTPRoute" }]) } else { json!([]) },
                    "attachedRoutes": attached.and_then(|a| a.get(&l.name)).copied().unwrap_or(0),
                    "conditions": [
                        condition("Accepted", supported, if supported { "Accepted" } else { "UnsupportedProtocol" }, &message, generation, &old_l),
                        condition("Programmed", programmed, reason, &message, generation, &old_l),
                        condition("ResolvedRefs", true, "ResolvedRefs", "no references", generation, &old_l),
                    ],
                })
            })
            .collect();
        let mut status = json!({
            "conditions": [
                condition("Accepted", true, "Accepted", "served by cutover-router", generation, &old_conds),
                condition("Programmed", all_programmed, if all_programmed { "Programmed" } else { "Invalid" },
                    if all_programmed { "every listener is listening" } else { "a listener is not served; see its conditions" }, generation, &old_conds),
            ],
            "listeners": listeners,
        });
        if let Some(addr) = settings.address {
            status["addresses"] = json!([{ "type": "IPAddress", "value": addr.to_string() }]);
        }
        let unchanged = same_conditions(&status["conditions"], &old["conditions"])
            && same_conditions(&status["listeners"], &old["listeners"])
            && (status.get("addresses").is_none() || status["addresses"] == old["addresses"]);
        if !unchanged {
            patch_status(&Api::<Gateway>::namespaced(client.clone(), &ns), gw, status).await;
        }
    }
    for route in routes {
        let ns = route.namespace().unwrap_or_default();
        let Some(ours) = report.routes.get(&format!("{ns}/{}", route.name_any())) else {
            continue;
        };
        let old = route.status.clone().unwrap_or(Value::Null);
        let old_parents = old["parents"].as_array().cloned().unwrap_or_default();
        let mut parents: Vec<Value> = old_parents
            .iter()
            .filter(|p| p["controllerName"] != settings.controller_name.as_str())
            .cloned()
            .collect();
        for ParentStatus {
            parent,
            accepted,
            resolved,
        } in ours
        {
            let mut parent = parent.clone();
            // As the CRD defaults them, so an unchanged status compares equal.
            parent.group.get_or_insert_with(|| GROUP.to_string());
            parent.kind.get_or_insert_with(|| "Gateway".to_string());
            let parent_json = serde_json::to_value(&parent).unwrap_or_default();
            let old_conds = old_parents
                .iter()
                .find(|p| {
                    p["controllerName"] == settings.controller_name.as_str()
                        && p["parentRef"]["name"] == parent.name.as_str()
                })
                .and_then(|p| p["conditions"].as_array().cloned())
                .unwrap_or_default();
            let generation = route.metadata.generation;
            parents.push(json!({
                "parentRef": strip_nulls(parent_json),
                "controllerName": settings.controller_name,
                "conditions": [
                    condition("Accepted", accepted.0, accepted.1, &accepted.2, generation, &old_conds),
                    condition("ResolvedRefs", resolved.0, resolved.1, &resolved.2, generation, &old_conds),
                ],
            }));
        }
        if !same_conditions(&Value::Array(parents.clone()), &Value::Array(old_parents)) {
            patch_status(
                &Api::<HTTPRoute>::namespaced(client.clone(), &ns),
                route,
                json!({ "parents": parents }),
            )
            .await;
        }
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}
