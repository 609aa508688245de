//! `spec.environments`: where each color runs — the BlueGreenDeployment's own namespace
//! (the default), another namespace, or another cluster reached through a kubeconfig Secret.
//!
//! A color away from home ("remote") gets its Deployment, its per-color Service `<name>-<color>`
//! and its config snapshots where it runs. Owner references cannot cross namespaces or
//! clusters, so those objects carry the label [`OWNER_UID_LABEL`] instead, and a finalizer
//! on the BlueGreenDeployment deletes them (and only them) when it goes. The Services traffic
//! is routed through — `<name>`, `<name>-preview`, and `<name>-<color>` of a remote color —
//! stay at home without a selector; their EndpointSlices mirror the ready endpoints of the
//! color's Service where it runs (see [`crate::endpoint_mirror`]), so routes, weights and the live
//! switch work unchanged.

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::Environment;
use cutover_api::k8s_openapi::NamespaceResourceScope;
use cutover_api::k8s_openapi::api::apps::v1::Deployment;
use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_api::kube::api::{DeleteParams, ListParams};
use cutover_api::kube::{Api, Client, Resource, ResourceExt as _};
use cutover_core::{Color, PerColor};
use serde::de::DeserializeOwned;

use super::Refusal;
use crate::clusters::{ClusterError, Clusters};
use crate::error::Error;
pub use crate::objects::OWNER_UID_LABEL;
use crate::objects::owned_by;

/// Label naming the BlueGreenDeployment (by uid) that owns an object outside its namespace.
/// Annotation naming that BlueGreenDeployment (`namespace/name`), for people.
pub const OWNER_ANNOTATION: &str = "cutover.dev/owner";
/// Finalizer of a BlueGreenDeployment with remote colors: their objects are deleted first.
pub const FINALIZER: &str = "cutover.dev/environments";

/// Where one color runs.
#[derive(Clone)]
pub struct Place {
    /// The client of its cluster.
    pub client: Client,
    /// Its namespace.
    pub namespace: String,
    /// The kubeconfig Secret of its cluster, when it is another cluster.
    pub cluster: Option<String>,
    /// Whether this is the BlueGreenDeployment's own namespace in its own cluster.
    pub home: bool,
    /// Names the cluster's client and the namespace: the key of the place's watch cache.
    pub key: String,
    /// The client for the place's watches (no per-request read timeout).
    pub watch_client: Client,
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Place")
            .field("namespace", &self.namespace)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Place {
    /// Whether `other` is the same namespace of the same cluster.
    pub fn same_as(&self, other: &Place) -> bool {
        self.namespace == other.namespace && self.cluster == other.cluster
    }

    /// `namespace` or `namespace in cluster <secret>`, for messages.
    pub fn describe(&self) -> String {
        match &self.cluster {
            Some(c) => format!("namespace {} of the cluster in Secret {c}", self.namespace),
            None => format!("namespace {}", self.namespace),
        }
    }
}

fn environment(bgd: &BlueGreenDeployment, color: Color) -> Option<&Environment> {
    let envs = bgd.spec.environments.as_ref()?;
    match color {
        Color::Blue => envs.blue.as_ref(),
        Color::Green => envs.green.as_ref(),
    }
}

/// Whether `color` runs away from the BlueGreenDeployment's namespace or cluster (pure).
pub fn is_remote(bgd: &BlueGreenDeployment, color: Color) -> bool {
    let home = bgd.metadata.namespace.as_deref().unwrap_or_default();
    environment(bgd, color).is_some_and(|e| {
        e.cluster_ref.is_some() || e.namespace.as_deref().is_some_and(|n| n != home)
    })
}

/// Whether any color runs away from home: then the routed Services mirror endpoints.
pub fn spread(bgd: &BlueGreenDeployment) -> bool {
    Color::ALL.iter().any(|c| is_remote(bgd, *c))
}

/// Where `color` runs, without checking its namespace. `Ok(Err(_))` when its kubeconfig
/// Secret is missing or invalid; `Err` when the Secret could not be read.
pub async fn place_of(
    bgd: &BlueGreenDeployment,
    color: Color,
    home: &Client,
    clusters: &Clusters,
) -> Result<Result<Place, Refusal>, Error> {
    let home_ns = bgd
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let env = environment(bgd, color);
    let namespace = env
        .and_then(|e| e.namespace.clone())
        .unwrap_or_else(|| home_ns.clone());
    let field = format!("spec.environments.{color}");
    let (client, cluster, cluster_key) = match env.and_then(|e| e.cluster_ref.as_ref()) {
        None => (home.clone(), None, String::new()),
        Some(cref) => match clusters
            .client(home, &home_ns, &cref.secret_name, cref.key.as_deref())
            .await
        {
            Ok(c) => (
                c,
                Some(cref.secret_name.clone()),
                clusters.key(&home_ns, &cref.secret_name, cref.key.as_deref()),
            ),
            Err(ClusterError::Secret(m)) => {
                return Ok(Err(Refusal {
                    reason: "InvalidClusterRef",
                    message: format!("{field}.clusterRef: {m}"),
                }));
            }
            Err(ClusterError::Unavailable(m)) => {
                return Err(Error::Remote {
                    what: format!("{field}.clusterRef"),
                    message: m,
                });
            }
        },
    };
    let watch_client = env
        .and_then(|e| e.cluster_ref.as_ref())
        .and_then(|c| clusters.watch_client(&home_ns, &c.secret_name, c.key.as_deref()))
        .unwrap_or_else(|| client.clone());
    Ok(Ok(Place {
        watch_client,
        client,
        home: cluster.is_none() && namespace == home_ns,
        key: format!("{cluster_key}|{namespace}"),
        namespace,
        cluster,
    }))
}

/// Where each color runs. `Ok(Err(_))` when the spec names a place that cannot be used (a
/// missing or invalid kubeconfig Secret, a missing namespace); `Err` when a cluster did not
/// answer (the pass is retried). A place `known` (this BlueGreenDeployment already made
/// objects there) is not checked again.
pub async fn places(
    bgd: &BlueGreenDeployment,
    home: &Client,
    clusters: &Clusters,
    known: impl Fn(&Place) -> bool,
) -> Result<Result<PerColor<Place>, Refusal>, Error> {
    let mut found = Vec::with_capacity(2);
    for color in Color::ALL {
        let place = match place_of(bgd, color, home, clusters).await? {
            Ok(p) => p,
            Err(refusal) => {
                return Ok(Err(Refusal {
                    message: format!("{}; nothing was deployed there", refusal.message),
                    ..refusal
                }));
            }
        };
        if !place.home && !known(&place) && !namespace_exists(&place).await? {
            return Ok(Err(Refusal {
                reason: "MissingNamespace",
                message: format!(
                    "spec.environments.{color}.namespace: {} does not exist; create it first",
                    place.describe()
                ),
            }));
        }
        found.push(place);
    }
    let green = found
        .pop()
        .ok_or(Error::MissingField("spec.environments"))?;
    let blue = found
        .pop()
        .ok_or(Error::MissingField("spec.environments"))?;
    Ok(Ok(PerColor { blue, green }))
}

/// An error reading at `place`: away from home, the place is unreachable ([`Error::Remote`]).
pub fn read_error(
    place: &Place,
    kind: &'static str,
    name: &str,
    source: cutover_api::kube::Error,
) -> Error {
    if place.home {
        Error::Read {
            kind,
            name: name.to_string(),
            source,
        }
    } else {
        Error::Remote {
            what: format!("reading {kind} {name} in {}", place.describe()),
            message: source.to_string(),
        }
    }
}

/// Whether the place's namespace exists. A controller not allowed to read Namespaces there
/// finds out on its first write instead.
async fn namespace_exists(place: &Place) -> Result<bool, Error> {
    let api: Api<Namespace> = Api::all(place.client.clone());
    match api.get_opt(&place.namespace).await {
        Ok(found) => Ok(found.is_some()),
        Err(cutover_api::kube::Error::Api(e)) if e.code == 403 => Ok(true),
        Err(e) => Err(Error::Remote {
            what: place.describe(),
            message: e.to_string(),
        }),
    }
}

/// Put an object rendered for the home namespace at `place`: its namespace, and away from
/// home the owner label and annotation instead of the owner reference.
pub fn locate(meta: &mut ObjectMeta, bgd: &BlueGreenDeployment, place: &Place) {
    meta.namespace = Some(place.namespace.clone());
    if place.home {
        return;
    }
    meta.owner_references = None;
    if let Some(uid) = &bgd.metadata.uid {
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(OWNER_UID_LABEL.into(), uid.clone());
    }
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(
            OWNER_ANNOTATION.into(),
            format!(
                "{}/{}",
                bgd.metadata.namespace.as_deref().unwrap_or_default(),
                bgd.name_any()
            ),
        );
}

/// The places of a BlueGreenDeployment being deleted, for clean-up: like [`places`], but
/// a Secret already gone (a namespace being deleted takes it too) falls back to the last
/// client built from it. A color whose cluster cannot be reached at all is left out and
/// named in the returned list.
pub async fn places_for_cleanup(
    bgd: &BlueGreenDeployment,
    home: &Client,
    clusters: &Clusters,
) -> Result<(Vec<Place>, Vec<String>), Error> {
    let home_ns = bgd
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let mut found: Vec<Place> = Vec::new();
    let mut lost = Vec::new();
    for color in Color::ALL {
        if !is_remote(bgd, color) {
            continue;
        }
        let place = match place_of(bgd, color, home, clusters).await? {
            Ok(p) => p,
            Err(refusal) => {
                let env = environment(bgd, color);
                let cached = env.and_then(|e| e.cluster_ref.as_ref()).and_then(|c| {
                    let client = clusters.cached(&home_ns, &c.secret_name, c.key.as_deref());
                    client.map(|client| (client, c.secret_name.clone()))
                });
                let Some((client, secret)) = cached else {
                    lost.push(format!("the {color} color's objects ({})", refusal.message));
                    continue;
                };
                let namespace = env
                    .and_then(|e| e.namespace.clone())
                    .unwrap_or_else(|| home_ns.clone());
                Place {
                    watch_client: client.clone(),
                    client,
                    key: format!("{secret}|{namespace}"),
                    namespace,
                    cluster: Some(secret),
                    home: false,
                }
            }
        };
        if !found.iter().any(|p| p.same_as(&place)) {
            found.push(place);
        }
    }
    Ok((found, lost))
}

/// Delete every object at `place` that carries `bgd`'s uid in [`OWNER_UID_LABEL`].
pub async fn clean_up(bgd: &BlueGreenDeployment, place: &Place) -> Result<usize, Error> {
    let Some(uid) = bgd.metadata.uid.as_deref() else {
        return Ok(0);
    };
    let selector = format!("{OWNER_UID_LABEL}={uid}");
    let mut n = 0;
    n += delete_labelled::<Deployment>(place, &selector, bgd).await?;
    n += delete_labelled::<Service>(place, &selector, bgd).await?;
    n += delete_labelled::<ConfigMap>(place, &selector, bgd).await?;
    n += delete_labelled::<Secret>(place, &selector, bgd).await?;
    Ok(n)
}

async fn delete_labelled<K>(
    place: &Place,
    selector: &str,
    bgd: &BlueGreenDeployment,
) -> Result<usize, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<K> = Api::namespaced(place.client.clone(), &place.namespace);
    let remote = |e: cutover_api::kube::Error| Error::Remote {
        what: format!("{kind} in {}", place.describe()),
        message: e.to_string(),
    };
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(remote)?;
    let mut n = 0;
    for obj in list.items {
        // The selector matched the label; check it again on the object itself.
        if !owned_by(obj.meta(), bgd) {
            continue;
        }
        match api
            .delete(&obj.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => n += 1,
            Err(cutover_api::kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(remote(e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgd(envs: serde_json::Value) -> BlueGreenDeployment {
        let mut b: BlueGreenDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod", "uid": "u-1" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } },
                "service": { "port": 80 },
                "environments": envs,
            }
        }))
        .expect("valid");
        b.metadata.uid = Some("u-1".into());
        b
    }

    #[test]
    fn a_color_is_remote_only_outside_the_home_namespace_or_cluster() {
        let b = bgd(
            serde_json::json!({ "blue": { "namespace": "prod" }, "green": { "namespace": "prod-green" } }),
        );
        assert!(!is_remote(&b, Color::Blue));
        assert!(is_remote(&b, Color::Green));
        assert!(spread(&b));
        let b = bgd(serde_json::json!({ "green": { "clusterRef": { "secretName": "dr" } } }));
        assert!(!is_remote(&b, Color::Blue));
        assert!(is_remote(&b, Color::Green));
        let b = bgd(serde_json::json!({ "blue": { "namespace": "prod" } }));
        assert!(!spread(&b));
    }

    #[tokio::test]
    async fn ownership_away_from_home_is_the_uid_label_not_an_owner_reference() {
        let b = bgd(serde_json::json!({}));
        let mut meta = ObjectMeta {
            owner_references: Some(vec![crate::objects::owner_reference(&b).expect("owner")]),
            ..ObjectMeta::default()
        };
        assert!(owned_by(&meta, &b));
        let place = Place {
            client: dummy_client(),
            namespace: "prod-green".into(),
            cluster: Some("dr".into()),
            home: false,
            key: "dr|prod-green".into(),
            watch_client: dummy_client(),
        };
        locate(&mut meta, &b, &place);
        assert_eq!(meta.namespace.as_deref(), Some("prod-green"));
        assert!(meta.owner_references.is_none());
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(OWNER_UID_LABEL))
                .map(String::as_str),
            Some("u-1")
        );
        assert!(owned_by(&meta, &b));
        let stranger = ObjectMeta {
            labels: Some([(OWNER_UID_LABEL.to_string(), "u-2".to_string())].into()),
            ..ObjectMeta::default()
        };
        assert!(!owned_by(&stranger, &b));
    }

    fn dummy_client() -> Client {
        let config = cutover_api::kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        Client::try_from(config).expect("client")
    }
}
