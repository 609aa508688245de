//! Members: their clusters (this one, or another through a kubeconfig Secret), their live
//! endpoints, health probes, and the per-member Service `<policy>-<member>` in the policy's
//! cluster whose endpoints mirror them (the traffic entry sends to one of these).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use cutover_api::BlueGreenDeployment;
use cutover_api::failover::{FailoverPolicy, Member};
use cutover_api::k8s_openapi::api::core::v1::{Secret, Service};
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::api::{ListParams, Patch, PatchParams};
use cutover_api::kube::config::{KubeConfigOptions, Kubeconfig};
use cutover_api::kube::{Api, Client, Config, Resource as _, ResourceExt as _};
use serde_json::json;

use crate::FIELD_MANAGER;

/// Label the EndpointSlices we write carry so that Kubernetes' own mirroring leaves them.
const SLICE_MANAGER: &str = "failover.cutover.dev";

/// Clients of member clusters, by Secret (namespace/name) and its resourceVersion.
#[derive(Default)]
pub struct Clusters {
    cache: Mutex<HashMap<String, (String, Client)>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters").finish_non_exhaustive()
    }
}

/// How long a member's API may take to answer one request.
const MEMBER_API_TIMEOUT: Duration = Duration::from_secs(3);

impl Clusters {
    /// The client of `member`'s cluster (`front` when it has no clusterRef).
    pub async fn client(
        &self,
        front: &Client,
        ns: &str,
        member: &Member,
    ) -> Result<Client, String> {
        let Some(cref) = &member.cluster_ref else {
            return Ok(front.clone());
        };
        let secrets: Api<Secret> = Api::namespaced(front.clone(), ns);
        let secret = secrets
            .get_opt(&cref.secret_name)
            .await
            .map_err(|e| format!("reading Secret {}: {e}", cref.secret_name))?
            .ok_or_else(|| format!("Secret {} does not exist", cref.secret_name))?;
        let key = format!("{ns}/{}", cref.secret_name);
        let version = secret.resource_version().unwrap_or_default();
        if let Ok(cache) = self.cache.lock()
            && let Some((v, c)) = cache.get(&key)
            && *v == version
        {
            return Ok(c.clone());
        }
        let field = cref.key.as_deref().unwrap_or("kubeconfig");
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .map(|b| b.0.clone())
            .ok_or_else(|| format!("Secret {} has no key {field}", cref.secret_name))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("Secret {} key {field} is not UTF-8", cref.secret_name))?;
        let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| {
            format!(
                "Secret {} key {field} is not a kubeconfig: {e}",
                cref.secret_name
            )
        })?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("kubeconfig in Secret {}: {e}", cref.secret_name))?;
        config.connect_timeout = Some(MEMBER_API_TIMEOUT);
        config.read_timeout = Some(MEMBER_API_TIMEOUT);
        config.write_timeout = Some(MEMBER_API_TIMEOUT);
        let client = Client::try_from(config)
            .map_err(|e| format!("kubeconfig in Secret {}: {e}", cref.secret_name))?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(key, (version, client.clone()));
        }
        Ok(client)
    }
}

/// A member's live endpoints as read from its cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// The BlueGreenDeployment's Service port (what the entry's backendRef names).
    pub service_port: i32,
    /// The pods' port.
    pub target_port: i32,
    /// Ready pod addresses, sorted.
    pub addresses: Vec<String>,
}

/// Read the live endpoints of `member`'s BlueGreenDeployment (its Service `<bgd>`).
pub async fn endpoints(client: &Client, ns: &str, member: &Member) -> Result<Endpoints, String> {
    let bgds: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
    let bgd_name = &member.blue_green_deployment;
    let bgd = bgds
        .get_opt(bgd_name)
        .await
        .map_err(|e| format!("its API did not answer: {e}"))?
        .ok_or_else(|| format!("BlueGreenDeployment {ns}/{bgd_name} does not exist"))?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={bgd_name}")))
        .await
        .map_err(|e| format!("its API did not answer: {e}"))?;
    let port_name = bgd
        .spec
        .service
        .name
        .clone()
        .unwrap_or_else(|| "http".to_string());
    let mut out = Endpoints {
        service_port: bgd.spec.service.port,
        target_port: 0,
        addresses: Vec::new(),
    };
    for slice in list.items {
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
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready {
                out.addresses.extend(e.addresses.iter().cloned());
            }
        }
    }
    out.addresses.sort();
    out.addresses.dedup();
    Ok(out)
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
) -> Result<(), String> {
    let ns = policy.namespace().unwrap_or_default();
    let name = service_name(&policy.name_any(), member);
    let owner = policy
        .controller_owner_ref(&())
        .ok_or("the FailoverPolicy has no uid")?;
    let labels = json!({
        cutover_api::MANAGED_BY_LABEL: cutover_api::MANAGED_BY,
        "cutover.dev/failoverpolicy": policy.name_any(),
        "cutover.dev/member": member,
    });
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
        .map_err(|e| format!("applying Service {name}: {e}"))?;
    let mut slice_labels = labels.clone();
    slice_labels["kubernetes.io/service-name"] = json!(name);
    slice_labels["endpointslice.kubernetes.io/managed-by"] = json!(SLICE_MANAGER);
    let endpoints: Vec<_> = eps
        .addresses
        .iter()
        .map(|a| json!({ "addresses": [a], "conditions": { "ready": true, "serving": true, "terminating": false } }))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "labels": slice_labels, "ownerReferences": [owner] },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": eps.target_port.max(1), "protocol": "TCP" }],
    });
    let slices: Api<EndpointSlice> = Api::namespaced(front.clone(), &ns);
    slices
        .patch(&name, &pp, &Patch::Apply(&slice))
        .await
        .map_err(|e| format!("applying EndpointSlice {name}: {e}"))?;
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
