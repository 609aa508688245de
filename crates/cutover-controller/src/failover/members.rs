//! Members: their clusters (this one, or another through a kubeconfig Secret), their live
//! endpoints, health probes, and the per-member Service `<policy>-<member>` in the policy's
//! cluster whose endpoints mirror them (the traffic entry sends to one of these).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cutover_api::BlueGreenDeployment;
use cutover_api::failover::{FailoverPolicy, Member};
use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::kube::api::{Patch, PatchParams};
use cutover_api::kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::json;

use super::Error;
use crate::FIELD_MANAGER;
use crate::cache::{PlaceCache, Places, User};
use crate::clusters::{ClusterError, Clusters};
pub use crate::endpoint_mirror::Endpoints;
use crate::endpoint_mirror::FAILOVER_SLICE_MANAGER as SLICE_MANAGER;

/// The client of `member`'s cluster (`front` when it has no clusterRef).
pub async fn client(
    clusters: &Clusters,
    front: &Client,
    ns: &str,
    member: &Member,
) -> Result<Client, String> {
    let Some(cref) = &member.cluster_ref else {
        return Ok(front.clone());
    };
    clusters
        .client(front, ns, &cref.secret_name, cref.key.as_deref())
        .await
        .map_err(|e: ClusterError| e.to_string())
}

/// The place `member` runs in: its namespace (the policy's namespace `ns` unless it names
/// one) in its cluster.
pub struct MemberPlace {
    /// The key of the place's watch cache.
    pub key: String,
    /// The watch cache, started for the policy if need be.
    pub cache: Arc<PlaceCache>,
    /// The client of the member's cluster.
    pub client: Client,
    /// The member's namespace.
    pub namespace: String,
}

impl std::fmt::Debug for MemberPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberPlace")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The place `member` runs in, watched for `user`.
pub async fn place(
    places: &Places,
    clusters: &Clusters,
    front: &Client,
    ns: &str,
    member: &Member,
    user: &User,
) -> Result<MemberPlace, String> {
    let member_ns = member.namespace.clone().unwrap_or_else(|| ns.to_string());
    let (client, watch_client, cluster_key) = match &member.cluster_ref {
        None => (front.clone(), front.clone(), String::new()),
        Some(cref) => {
            let c = client(clusters, front, ns, member)
                .await
                .map_err(|e| format!("its cluster: {e}"))?;
            let w = clusters
                .watch_client(ns, &cref.secret_name, cref.key.as_deref())
                .unwrap_or_else(|| c.clone());
            (
                c,
                w,
                clusters.key(ns, &cref.secret_name, cref.key.as_deref()),
            )
        }
    };
    let key = format!("{cluster_key}|{member_ns}");
    let cache = places.watch(&key, &watch_client, &member_ns, user);
    Ok(MemberPlace {
        key,
        cache,
        client,
        namespace: member_ns,
    })
}

/// The live endpoints of `member`'s BlueGreenDeployment (its Service `<bgd>`) in `ns`, as
/// the watch cache of its place holds them. When that cache's watches report an error, the
/// API is asked instead (within `timeout`, at least 3 s): a watch resumed after an error says
/// nothing until something changes, so only a read tells whether the API answers now.
///
/// `require_available`: a live color without all its pods ready counts as down (see
/// [`live_available`]). A pilot-light policy passes false: its member scaling up from its
/// pilot-light size is short of pods by design, and serves with those it has.
pub async fn endpoints(
    cache: &PlaceCache,
    client: &Client,
    ns: &str,
    member: &Member,
    timeout: Duration,
    require_available: bool,
) -> Result<Endpoints, String> {
    if cache.synced().await.is_ok() {
        let bgd_name = &member.blue_green_deployment;
        let bgd = crate::cache::lookup(&cache.bgds, ns, bgd_name)
            .ok_or_else(|| format!("BlueGreenDeployment {ns}/{bgd_name} does not exist"))?;
        if require_available {
            live_available(&bgd)?;
        }
        let port_name = bgd.spec.service.name.as_deref().unwrap_or("http");
        return Ok(cache.endpoints(ns, bgd_name, bgd.spec.service.port, port_name));
    }
    tokio::time::timeout(
        timeout.max(Duration::from_secs(3)),
        read(client, ns, member, require_available),
    )
    .await
    .unwrap_or_else(|_| Err("its API did not answer in time".into()))
}

/// Read the live endpoints of `member`'s BlueGreenDeployment from its API.
async fn read(
    client: &Client,
    ns: &str,
    member: &Member,
    require_available: bool,
) -> Result<Endpoints, String> {
    let bgds: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bgd_name = &member.blue_green_deployment;
    let bgd = bgds
        .get_opt(bgd_name)
        .await
        .map_err(|e| format!("its API did not answer: {e}"))?
        .ok_or_else(|| format!("BlueGreenDeployment {ns}/{bgd_name} does not exist"))?;
    if require_available {
        live_available(&bgd)?;
    }
    let port_name = bgd.spec.service.name.as_deref().unwrap_or("http");
    crate::endpoint_mirror::read(client, ns, bgd_name, bgd.spec.service.port, port_name)
        .await
        .map_err(|e| format!("its API did not answer: {e}"))
}

/// The member's own verdict: its BlueGreenDeployment's `Available` condition (False when
/// its live color does not have all pods ready). No condition yet counts as no verdict.
pub fn live_available(bgd: &BlueGreenDeployment) -> Result<(), String> {
    let available = bgd
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"));
    match available {
        Some(c) if c.status == "False" => Err(format!(
            "its BlueGreenDeployment {} reports its live color unavailable ({}: {})",
            bgd.metadata.name.as_deref().unwrap_or_default(),
            c.reason,
            c.message
        )),
        _ => Ok(()),
    }
}

/// The Service in the policy's namespace that stands for `member`.
pub fn service_name(policy: &str, member: &str) -> String {
    format!("{policy}-{member}")
}

/// Write the Service `<policy>-<member>` (no selector) and its EndpointSlice with `eps`.
pub async fn mirror(
    front: &Client,
    policy: &FailoverPolicy,
    member: &str,
    eps: &Endpoints,
) -> Result<(), Error> {
    let ns = policy.namespace().unwrap_or_default();
    let name = service_name(&policy.name_any(), member);
    let owner = policy
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let labels = BTreeMap::from([
        (
            cutover_api::MANAGED_BY_LABEL.to_string(),
            cutover_api::MANAGED_BY.to_string(),
        ),
        ("cutover.dev/failoverpolicy".to_string(), policy.name_any()),
        ("cutover.dev/member".to_string(), member.to_string()),
    ]);
    let mirror_error = |kind: &'static str| {
        let (member, name) = (member.to_string(), name.clone());
        move |source| Error::Mirror {
            member,
            kind,
            name,
            source,
        }
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(front.clone(), &ns);
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "labels": labels, "ownerReferences": [owner] },
        "spec": { "ports": [{ "name": "http", "port": eps.service_port, "protocol": "TCP",
                              "targetPort": eps.target_port.max(1) }] },
    });
    services
        .patch(&name, &pp, &Patch::Apply(&svc))
        .await
        .map_err(mirror_error("Service"))?;
    let slice =
        crate::endpoint_mirror::slice(&name, &name, "http", &labels, SLICE_MANAGER, &owner, eps);
    crate::endpoint_mirror::apply_slice(front, &ns, &slice)
        .await
        .map_err(mirror_error("EndpointSlice"))?;
    Ok(())
}

/// Probe `url`: passes on 2xx/3xx within `timeout`.
pub async fn probe(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, http.get(url).timeout(timeout).send()).await {
        Err(_) => Err(format!("{url}: no answer within {}ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("{url}: {}", without_url(&e))),
        Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection() => Ok(()),
        Ok(Ok(r)) => Err(format!("{url}: {}", r.status())),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = inner.to_string();
        source = inner.source();
    }
    s
}

/// Probe a member: its own URL if set, else every ready endpoint (healthy when one passes).
pub async fn probe_member(
    http: &reqwest::Client,
    member: &Member,
    eps: &Endpoints,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(url) = &member.health_check_url {
        return probe(http, url, timeout).await;
    }
    if eps.addresses.is_empty() {
        return Err("no ready endpoints".into());
    }
    let probes = eps.addresses.iter().map(|a| {
        let url = format!("http://{a}:{}{path}", eps.target_port);
        async move { probe(http, &url, timeout).await }
    });
    let results = futures::future::join_all(probes).await;
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    let errors: BTreeMap<usize, String> = results
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.err().map(|e| (i, e)))
        .collect();
    Err(format!(
        "every endpoint failed its probe: {}",
        errors.values().cloned().collect::<Vec<_>>().join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgd(available: Option<&str>) -> BlueGreenDeployment {
        let conditions = available
            .map(|s| {
                json!([{ "type": "Available", "status": s, "reason": "LiveColorUnavailable",
                         "message": "blue has 1 of 2 pods ready", "lastTransitionTime": "2026-11-26T00:00:00Z" }])
            })
            .unwrap_or(json!([]));
        serde_json::from_value(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "east" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } },
                "service": { "port": 80 }
            },
            "status": { "conditions": conditions }
        }))
        .expect("bgd")
    }

    #[test]
    fn a_member_whose_live_color_is_unavailable_is_unhealthy() {
        assert!(live_available(&bgd(None)).is_ok());
        assert!(live_available(&bgd(Some("True"))).is_ok());
        let err = live_available(&bgd(Some("False"))).expect_err("unavailable");
        assert!(
            err.contains("shop") && err.contains("1 of 2 pods ready"),
            "{err}"
        );
    }
}
