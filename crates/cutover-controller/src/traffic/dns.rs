//! A FailoverPolicy's DNS entry (`spec.entry.dns`): the active member's entry addresses as
//! records every region's DNS server answers with, and as an ExternalDNS `DNSEndpoint`.
//!
//! - **Records in etcd**, in the layout of CoreDNS' etcd plugin (SkyDNS): the name's
//!   labels reversed under the plugin's `path`, one key per address below it, each value
//!   `{"host": "<address>", "ttl": <seconds>}`. The active region's controller replaces
//!   them in one etcd transaction that also carries its fencing token, so a stale holder's
//!   records are refused by etcd ([`crate::coordination::Tenure::replace_fenced`]).
//! - **`DNSEndpoint`** (`externaldns.k8s.io/v1alpha1`) named like the policy in its own
//!   cluster, written by the active region and deleted by the others, for users whose DNS
//!   is a cloud provider's, through the ExternalDNS they run (`--source=crd`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use cutover_api::failover::{DnsEntry, FailoverPolicy};
use cutover_api::kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use cutover_api::kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::FIELD_MANAGER;

/// The etcd folder holding `hostname`'s records under `path` (`/skydns`): the labels
/// reversed, `www.shop.example.com` → `/skydns/com/example/shop/www`.
pub fn folder(path: &str, hostname: &str) -> String {
    let mut out = path.trim_end_matches('/').to_string();
    for label in hostname.trim_end_matches('.').rsplit('.') {
        out.push('/');
        out.push_str(&label.to_ascii_lowercase());
    }
    out
}

/// The records of `addresses` for `member`: the folder (to replace whole) and its keys and
/// values. An address that is not an IP is refused, naming it.
pub fn records(
    entry: &DnsEntry,
    member: &str,
    addresses: &[String],
) -> Result<(String, Vec<(String, String)>), String> {
    let dir = folder(&entry.path, &entry.hostname);
    let mut out = Vec::new();
    for (i, a) in addresses.iter().enumerate() {
        let ip: IpAddr = a.parse().map_err(|_| {
            format!("spec.members[{member}].entryAddresses: {a:?} is not an IP address")
        })?;
        let value = json!({ "host": ip.to_string(), "ttl": entry.ttl }).to_string();
        out.push((format!("{dir}/{member}-{i}"), value));
    }
    Ok((format!("{dir}/"), out))
}

/// ExternalDNS' `DNSEndpoint`.
pub fn dns_endpoint_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// The `DNSEndpoint`'s spec: one endpoint per address family.
pub fn endpoint_spec(entry: &DnsEntry, addresses: &[String]) -> serde_json::Value {
    let (v6, v4): (Vec<&String>, Vec<&String>) = addresses
        .iter()
        .partition(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()));
    let mut endpoints = Vec::new();
    for (kind, targets) in [("A", v4), ("AAAA", v6)] {
        if !targets.is_empty() {
            endpoints.push(json!({
                "dnsName": entry.hostname,
                "recordType": kind,
                "recordTTL": entry.ttl,
                "targets": targets,
            }));
        }
    }
    json!({ "endpoints": endpoints })
}

/// Write the policy's `DNSEndpoint` (owned by the policy) in its namespace.
pub async fn apply_endpoint(
    client: &Client,
    policy: &FailoverPolicy,
    entry: &DnsEntry,
    addresses: &[String],
) -> Result<(), String> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let owner = policy
        .controller_owner_ref(&())
        .ok_or("the policy has no uid yet")?;
    let ar = dns_endpoint_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let labels = BTreeMap::from([(
        cutover_api::MANAGED_BY_LABEL.to_string(),
        cutover_api::MANAGED_BY.to_string(),
    )]);
    let obj = json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": { "name": name, "labels": labels, "ownerReferences": [owner] },
        "spec": endpoint_spec(entry, addresses),
    });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("applying DNSEndpoint {name}: {e}"))
}

/// Delete the policy's `DNSEndpoint` if it exists and is Cutover's.
pub async fn delete_endpoint(client: &Client, policy: &FailoverPolicy) -> Result<(), String> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &dns_endpoint_resource());
    let found = match api.get_opt(&name).await {
        Ok(found) => found,
        // No such resource (ExternalDNS' CRD not installed): nothing to delete.
        Err(cutover_api::kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(format!("reading DNSEndpoint {name}: {e}")),
    };
    let ours = found.is_some_and(|o| crate::objects::is_cutovers(&o.metadata));
    if ours {
        api.delete(&name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| format!("deleting DNSEndpoint {name}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DnsEntry {
        DnsEntry {
            zone: "shop.example.test".into(),
            hostname: "www.shop.example.test".into(),
            ttl: 1,
            path: "/skydns".into(),
        }
    }

    #[test]
    fn records_follow_the_skydns_layout_one_key_per_address() {
        let (dir, recs) =
            records(&entry(), "west", &["10.9.2.1".into(), "fd00::1".into()]).expect("records");
        assert_eq!(dir, "/skydns/test/example/shop/www/");
        assert_eq!(recs[0].0, "/skydns/test/example/shop/www/west-0");
        let v: serde_json::Value = serde_json::from_str(&recs[0].1).expect("json");
        assert_eq!(v, json!({ "host": "10.9.2.1", "ttl": 1 }));
        assert_eq!(recs[1].0, "/skydns/test/example/shop/www/west-1");
        assert!(recs[1].1.contains("fd00::1"));
    }

    #[test]
    fn an_address_that_is_not_an_ip_is_refused_by_name() {
        let e = records(&entry(), "east", &["shop.example".into()]).expect_err("refused");
        assert!(
            e.contains("entryAddresses") && e.contains("shop.example"),
            "{e}"
        );
    }

    #[test]
    fn the_dns_endpoint_has_one_endpoint_per_family() {
        let spec = endpoint_spec(
            &entry(),
            &["10.0.0.1".into(), "::1".into(), "10.0.0.2".into()],
        );
        assert_eq!(spec["endpoints"][0]["recordType"], "A");
        assert_eq!(
            spec["endpoints"][0]["targets"],
            json!(["10.0.0.1", "10.0.0.2"])
        );
        assert_eq!(spec["endpoints"][1]["recordType"], "AAAA");
        assert_eq!(spec["endpoints"][1]["recordTTL"], 1);
    }
}
