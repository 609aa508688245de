//! Endpoints mirrored from one place to another: the ready addresses behind a Service in
//! some namespace or cluster, copied into an EndpointSlice of a Service without a selector
//! here. This is how traffic in one cluster reaches pods in another (the pod networks must
//! reach each other, as with a flat multi-cluster network) and how a Service reaches pods in
//! another namespace.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use cutover_api::kube::api::{ListParams, Patch, PatchParams};
use cutover_api::kube::{Api, Client};
use serde_json::json;

use crate::FIELD_MANAGER;

/// `endpointslice.kubernetes.io/managed-by` of the EndpointSlices a BlueGreenDeployment
/// mirrors (its Services when a color runs elsewhere).
pub const BLUEGREEN_SLICE_MANAGER: &str = "bluegreen.cutover.dev";

/// `endpointslice.kubernetes.io/managed-by` of the EndpointSlices a FailoverPolicy mirrors
/// (its members' Services).
pub const FAILOVER_SLICE_MANAGER: &str = "failover.cutover.dev";

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready endpoints behind a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// The Service's port (what routes name).
    pub service_port: i32,
    /// The pods' port (0 when no EndpointSlice names one yet).
    pub target_port: i32,
    /// Ready pod addresses, sorted, without duplicates.
    pub addresses: Vec<String>,
}

/// The ready endpoints of Service `service` in `ns`: its EndpointSlices' port named
/// `port_name` (or the first) and their ready addresses.
pub async fn read(
    client: &Client,
    ns: &str,
    service: &str,
    service_port: i32,
    port_name: &str,
) -> Result<Endpoints, cutover_api::kube::Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}")))
        .await?;
    Ok(from_slices(&list.items, service_port, port_name))
}

/// The ready endpoints of `slices` (pure).
pub fn from_slices(slices: &[EndpointSlice], service_port: i32, port_name: &str) -> Endpoints {
    let mut out = Endpoints {
        service_port,
        target_port: 0,
        addresses: Vec::new(),
    };
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
            .or_else(|| slice.ports.iter().flatten().next())
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        out.target_port = port;
        for e in slice.endpoints.iter().flatten() {
            // Ready unset means ready (EndpointSlice API); terminating endpoints are not.
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready {
                out.addresses.extend(e.addresses.iter().cloned());
            }
        }
    }
    out.addresses.sort();
    out.addresses.dedup();
    out
}

/// The EndpointSlice `name` of selector-less Service `service` holding `eps` on port
/// `port_name`, labelled `labels` (plus the Service name and `manager`), owned by `owner`.
pub fn slice(
    name: &str,
    service: &str,
    port_name: &str,
    labels: &BTreeMap<String, String>,
    manager: &str,
    owner: &OwnerReference,
    eps: &Endpoints,
) -> serde_json::Value {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/service-name".into(), service.into());
    labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        manager.into(),
    );
    let endpoints: Vec<_> = eps
        .addresses
        .iter()
        .map(|a| json!({ "addresses": [a], "conditions": { "ready": true, "serving": true, "terminating": false } }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "labels": labels, "ownerReferences": [owner] },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": port_name, "port": eps.target_port.max(1), "protocol": "TCP" }],
    })
}

/// Server-side apply EndpointSlice `slice` (from [`slice`]) in `ns`.
pub async fn apply_slice(
    client: &Client,
    ns: &str,
    slice: &serde_json::Value,
) -> Result<(), cutover_api::kube::Error> {
    let name = slice["metadata"]["name"].as_str().unwrap_or_default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(slice),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_of(port: (&str, i32), eps: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": { "name": "s" },
            "addressType": "IPv4",
            "ports": [{ "name": port.0, "port": port.1 }],
            "endpoints": eps.iter().map(|(a, r)| json!({ "addresses": [a], "conditions": { "ready": r } })).collect::<Vec<_>>(),
        }))
        .expect("slice")
    }

    #[test]
    fn only_ready_addresses_are_mirrored_sorted_once() {
        let a = slice_of(
            ("http", 8080),
            &[("10.0.0.2", Some(true)), ("10.0.0.9", Some(false))],
        );
        let b = slice_of(
            ("http", 8080),
            &[("10.0.0.1", None), ("10.0.0.2", Some(true))],
        );
        let eps = from_slices(&[a, b], 80, "http");
        assert_eq!(eps.addresses, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!((eps.service_port, eps.target_port), (80, 8080));
    }

    #[test]
    fn the_slice_names_its_service_and_manager_and_marks_every_address_ready() {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "X".into(),
            name: "x".into(),
            uid: "u".into(),
            controller: Some(true),
            ..OwnerReference::default()
        };
        let eps = Endpoints {
            service_port: 80,
            target_port: 8080,
            addresses: vec!["10.0.0.1".into()],
        };
        let s = slice("shop", "shop", "http", &BTreeMap::new(), "m", &owner, &eps);
        assert_eq!(
            s["metadata"]["labels"]["kubernetes.io/service-name"],
            "shop"
        );
        assert_eq!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "m"
        );
        assert_eq!(s["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(s["ports"][0]["port"], 8080);
    }
}
