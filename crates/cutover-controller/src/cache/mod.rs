//! Watch caches: everything a pass reads comes from reflector stores, so a pass makes no
//! API read and, while nothing changes, the controller makes no API request at all.
//!
//! - [`watched`] turns an `Api` into a store and the stream that fills it, for
//!   `Controller::owns_stream` / `watches_stream`. Stored objects lose their
//!   `managedFields` and `last-applied-configuration` (most of an object's bytes, never read
//!   here), which keeps the caches small; Cutover's Deployments and Services are cached as
//!   views of the fields a pass reads ([`CachedDeployment`], [`CachedService`]).
//! - [`Places`]: one watcher per namespace of another cluster (or another namespace of this
//!   one) that a BlueGreenDeployment's color or a FailoverPolicy's member runs in, started
//!   when the first user needs it and stopped when the last one goes. A change there
//!   triggers its users at once (`Controller::reconcile_on`), so endpoints mirrored home
//!   follow the pods without polling ([`places`]).
//! - [`Configs`]: ConfigMaps and Secrets, with their data only where referenced
//!   ([`configs`]).
//! - [`Routes`]: route objects, one watch per kind in use ([`routes`]).
//! - [`Home`]: the home cluster's stores a BlueGreenDeployment pass reads.

/// `Resource` for `$view`, a cached view of `$full` with a `metadata` field: the same kind,
/// group, version and plural, so an `Api<$view>` lists and watches the same URLs.
macro_rules! view_of {
    ($view:ty, $full:ty) => {
        impl cutover_api::kube::Resource for $view {
            type DynamicType = ();
            type Scope = <$full as cutover_api::kube::Resource>::Scope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as cutover_api::kube::Resource>::kind(dt)
            }

            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as cutover_api::kube::Resource>::group(dt)
            }

            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as cutover_api::kube::Resource>::version(dt)
            }

            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <$full as cutover_api::kube::Resource>::plural(dt)
            }

            fn meta(
                &self,
            ) -> &cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mod configs;
mod deployments;
mod places;
mod routes;
mod services;

pub use configs::{Configs, Referenced, WITHOUT_DATA, drop_config_map_data, drop_secret_data};
pub use deployments::{CachedDeployment, slim as slim_deployment};
pub use places::{PlaceCache, Places, User};
pub use routes::Routes;
pub use services::{CachedService, slim as slim_service};

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use cutover_api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use cutover_api::k8s_openapi::api::apps::v1::Deployment;
use cutover_api::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Resource};
use futures::Stream;
use serde::de::DeserializeOwned;

/// Annotation `kubectl apply` leaves: a second copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object's labels and annotations as short lists: a `BTreeMap` allocates a node of
/// about half a kilobyte for its first entry, and a cached Service or Deployment has two or
/// three of each. Kept beside an `ObjectMeta` whose maps are taken out ([`Self::take`]) and
/// given back to the copy a pass reads ([`Self::restore`]).
#[derive(Clone, Debug, Default)]
pub struct FlatMaps {
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
}

impl FlatMaps {
    /// Move `meta`'s labels and annotations into `self` (a second call with maps already
    /// taken keeps what `self` holds).
    pub fn take(&mut self, meta: &mut ObjectMeta) {
        if let Some(labels) = meta.labels.take() {
            self.labels = labels.into_iter().collect();
        }
        if let Some(annotations) = meta.annotations.take() {
            self.annotations = annotations.into_iter().collect();
        }
    }

    /// Put the labels and annotations back into `meta` (a copy a pass reads).
    pub fn restore(&self, meta: &mut ObjectMeta) {
        if !self.labels.is_empty() {
            meta.labels = Some(self.labels.iter().cloned().collect());
        }
        if !self.annotations.is_empty() {
            meta.annotations = Some(self.annotations.iter().cloned().collect());
        }
    }
}

/// Drop what a cache never reads (managed fields, the last-applied copy).
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            // An emptied map can keep its first node (half a kilobyte) allocated.
            meta.annotations = None;
        }
    }
}

/// A store of `api`'s objects (`config` selects them) and the stream that keeps it filled:
/// the stream must be polled (by a `Controller`) for the store to fill.
pub fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watched_with(api, config, slim::<K>)
}

/// A store of `api`'s objects with each object through `modify` first (see [`watched`]).
pub fn watched_with<K>(
    api: Api<K>,
    config: watcher::Config,
    modify: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(modify)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// What Cutover made: the objects labelled `app.kubernetes.io/managed-by: cutover`.
pub fn owned() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={}",
        cutover_api::MANAGED_BY_LABEL,
        cutover_api::MANAGED_BY
    ))
}

/// Deployments Cutover did not make: the workloads a `workloadRef` can name.
pub fn workloads() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}!={}",
        cutover_api::MANAGED_BY_LABEL,
        cutover_api::MANAGED_BY
    ))
}

/// Drop a Deployment's pod template (nothing references the Deployment).
pub fn drop_template(d: &mut Deployment) {
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// The EndpointSlices Cutover writes itself (its mirrors). Kubernetes' own slices of
/// Cutover's Services carry the Services' labels, so [`owned`] alone would cache every
/// one of them (four per BlueGreenDeployment) for nothing.
pub fn mirrored_slices() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={},endpointslice.kubernetes.io/managed-by in ({},{})",
        cutover_api::MANAGED_BY_LABEL,
        cutover_api::MANAGED_BY,
        crate::endpoint_mirror::BLUEGREEN_SLICE_MANAGER,
        crate::endpoint_mirror::FAILOVER_SLICE_MANAGER,
    ))
}

/// Look `name` up in `ns` in `store`.
pub fn lookup<K>(store: &Store<K>, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = ()> + Clone,
    K::DynamicType: Eq + Hash + Clone,
{
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(|o| o.as_ref().clone())
}

/// Deployment `name` in `ns` from `store`, as a pass reads it.
pub fn deployment(store: &Store<CachedDeployment>, ns: &str, name: &str) -> Option<Deployment> {
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(|d| d.to_deployment())
}

/// Service `name` in `ns` from `store`, as a pass reads it.
pub fn service(store: &Store<CachedService>, ns: &str, name: &str) -> Option<Service> {
    store
        .get(&ObjectRef::new(name).within(ns))
        .map(|s| s.to_service())
}

/// `name`: its `cached` copy (the caller's store lookup), or, when the store does not hold
/// it, from `api`. A store filtered by label (Cutover's objects only) cannot tell "absent"
/// from "someone else's":
/// reading the API then keeps the controller from taking over an object it does not own.
/// That an object was read absent is remembered for `owner` in `absent` until the store
/// holds it, so an object that does not exist yet (a color never released) costs one read,
/// not one per pass. `place` tells clusters apart (`api`'s URL does not name its server).
///
/// [`Checked::Now`] when this call knows the answer first hand (the store holds it, or the
/// API was read): the pass may create the object without reading it again. A remembered
/// absence is [`Checked::Earlier`]: whoever creates it reads it again first
/// (`objects::apply_owned`), since someone else may have made one since.
pub async fn cached_or_read<K>(
    cached: Option<K>,
    api: &Api<K>,
    name: &str,
    absent: &Absent,
    (owner, place): (&str, &str),
) -> Result<(Option<K>, Checked), cutover_api::kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let key = Absent::key(owner, place, api, name);
    if let Some(found) = cached {
        absent.remove(&key);
        return Ok((Some(found), Checked::Now));
    }
    if absent.contains(&key) {
        return Ok((None, Checked::Earlier));
    }
    let read = api.get_opt(name).await?;
    if read.is_none() {
        absent.insert(key);
    }
    Ok((read, Checked::Now))
}

/// How a pass knows what it found of an object ([`cached_or_read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// From the watch cache or a read made by this pass.
    Now,
    /// Remembered absent from an earlier pass's read.
    Earlier,
}

/// Objects read absent past a label-filtered store, by owner uid and URL (see
/// [`cached_or_read`]).
#[derive(Debug, Default)]
pub struct Absent(std::sync::Mutex<std::collections::BTreeSet<(String, String)>>);

impl Absent {
    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(String, String)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, key: &(String, String)) -> bool {
        self.set().contains(key)
    }

    fn insert(&self, key: (String, String)) {
        self.set().insert(key);
    }

    fn remove(&self, key: &(String, String)) {
        self.set().remove(key);
    }

    fn key<K: Resource>(owner: &str, place: &str, api: &Api<K>, name: &str) -> (String, String) {
        (
            owner.to_string(),
            format!("{place}{}/{name}", api.resource_url()),
        )
    }

    /// Forget everything read for `owner` (it was deleted).
    pub fn forget_owner(&self, owner: &str) {
        self.set().retain(|(o, _)| o != owner);
    }
}

/// How long a pass waits for a new watch's first list before calling its place unreachable.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// The home cluster's watch caches of what BlueGreenDeployments own and read.
#[derive(Clone)]
pub struct Home {
    /// Deployments (Cutover's, by label).
    pub deployments: Store<CachedDeployment>,
    /// Services (Cutover's, by label).
    pub services: Store<CachedService>,
    /// EndpointSlices (the mirrored ones, Cutover's by label).
    pub slices: Store<EndpointSlice>,
    /// AnalysisRuns (Cutover's, by label).
    pub runs: Store<AnalysisRun>,
    /// ConfigMaps and Secrets with their data.
    pub configs: Arc<Configs>,
    /// What is referenced (their data is cached).
    pub referenced: Referenced,
    /// AnalysisTemplates.
    pub templates: Store<AnalysisTemplate>,
    /// ClusterAnalysisTemplates.
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
    /// The Deployments Cutover did not make, with their templates where a `workloadRef`
    /// names them.
    pub workloads: Store<Deployment>,
    /// HorizontalPodAutoscalers (one on an adopted Deployment would fight its scale-down).
    pub autoscalers: Store<HorizontalPodAutoscaler>,
}

impl Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").finish_non_exhaustive()
    }
}

impl Home {
    /// Wait for every store's first list (the controller's streams fill them).
    pub async fn ready(&self) {
        let _ = futures::join!(
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.slices.wait_until_ready(),
            self.runs.wait_until_ready(),
            self.configs.config_maps.wait_until_ready(),
            self.configs.secrets.wait_until_ready(),
            self.templates.wait_until_ready(),
            self.cluster_templates.wait_until_ready(),
            self.workloads.wait_until_ready(),
            self.autoscalers.wait_until_ready(),
        );
    }
}
