//! Watch caches: everything a pass reads comes from reflector stores, so a pass makes no
//! API read and, while nothing changes, the controller makes no API request at all.
//!
//! - [`watched`] turns an `Api` into a store and the stream that fills it, for
//!   `Controller::owns_stream` / `watches_stream`. Stored objects lose their
//!   `managedFields` and `last-applied-configuration` (most of an object's bytes, never read
//!   here), which keeps the caches small.
//! - [`Places`]: one watcher per namespace of another cluster (or another namespace of this
//!   one) that a BlueGreenDeployment's color or a FailoverPolicy's member runs in, started
//!   when the first user needs it and stopped when the last one goes. A change there
//!   triggers its users at once (`Controller::reconcile_on`), so endpoints mirrored home
//!   follow the pods without polling.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cutover_api::BlueGreenDeployment;
use cutover_api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use cutover_api::k8s_openapi::api::apps::v1::Deployment;
use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::api::{ApiResource, DynamicObject};
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Client, Resource};
use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt as _};
use serde::de::DeserializeOwned;

use crate::endpoint_mirror::{self, Endpoints, SERVICE_NAME_LABEL};

/// Annotation `kubectl apply` leaves: a second copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop what a cache never reads (managed fields, the last-applied copy).
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
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

/// `name` in `ns`: from `store`, or, when the store does not hold it, from `api`. A store
/// filtered by label (Cutover's objects only) cannot tell "absent" from "someone else's":
/// reading the API then keeps the controller from taking over an object it does not own,
/// and costs a request only until the object exists.
pub async fn cached_or_read<K>(
    store: &Store<K>,
    api: &Api<K>,
    ns: &str,
    name: &str,
) -> Result<Option<K>, cutover_api::kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match lookup(store, ns, name) {
        Some(found) => Ok(Some(found)),
        None => api.get_opt(name).await,
    }
}

/// How long a pass waits for a new watch's first list before calling its place unreachable.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);

/// Who uses a place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum User {
    /// A BlueGreenDeployment (`namespace`, `name`): triggered when the place changes.
    Release(String, String),
    /// A FailoverPolicy (`namespace`, `name`): reads the place on its own cadence.
    Policy(String, String),
}

/// Milliseconds since the first call (a monotonic clock for [`Health`]).
fn millis() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// How long after its last error a watch counts as broken. Its retries come at most
/// [`RETRY_MAX`] apart, so while its API server is down an error is never older than
/// this; once it answers again the watch resumes without an event (nothing changed), and
/// the error ages out.
const BROKEN_FOR: Duration = Duration::from_secs(5);

/// The longest wait between a broken watch's retries.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Whether one watch answers: its last error, and its last event after it.
#[derive(Debug, Default)]
struct Health {
    /// When it last failed (milliseconds, 0: never).
    failed_at: AtomicU64,
    /// When it last delivered an event.
    ok_at: AtomicU64,
}

impl Health {
    fn ok(&self) {
        self.ok_at.store(millis().max(1), Ordering::Release);
    }

    /// Record a failure; whether the watch was healthy before it.
    fn failed(&self) -> bool {
        let was = self.healthy();
        self.failed_at.store(millis().max(1), Ordering::Release);
        was
    }

    fn healthy(&self) -> bool {
        let failed = self.failed_at.load(Ordering::Acquire);
        failed == 0
            || self.ok_at.load(Ordering::Acquire) >= failed
            || millis().saturating_sub(failed)
                > u64::try_from(BROKEN_FOR.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The retries of a broken watch: from 200 ms, doubling, at most [`RETRY_MAX`] apart.
#[derive(Debug, Clone)]
struct Retry(Duration);

impl Default for Retry {
    fn default() -> Self {
        Retry(Duration::from_millis(200))
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.0;
        self.0 = (self.0 * 2).min(RETRY_MAX);
        Some(now)
    }
}

impl cutover_api::kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {
        *self = Retry::default();
    }
}

/// What is cached of one namespace of one cluster.
pub struct PlaceCache {
    /// Deployments there (Cutover's, by label).
    pub deployments: Store<Deployment>,
    /// Services there (Cutover's, by label).
    pub services: Store<Service>,
    /// EndpointSlices there (all: they belong to the endpoint controller).
    pub slices: Store<EndpointSlice>,
    /// BlueGreenDeployments there: watched only once a FailoverPolicy uses the place (a
    /// cluster that only runs a color need not have Cutover's resources or grant them).
    pub bgds: Store<BlueGreenDeployment>,
    /// The writer of `bgds`, until its watch starts.
    bgd_writer: Mutex<Option<reflector::store::Writer<BlueGreenDeployment>>>,
    client: Client,
    namespace: String,
    changed: Arc<dyn Fn() + Send + Sync>,
    /// Each watch's health, and its task.
    watches: Mutex<Vec<(Arc<Health>, tokio::task::JoinHandle<()>)>>,
    /// The last watch error, for messages.
    last_error: Arc<Mutex<Option<String>>>,
}

impl Debug for PlaceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaceCache")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for PlaceCache {
    fn drop(&mut self) {
        for (_, task) in self
            .watches
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            task.abort();
        }
    }
}

impl PlaceCache {
    fn new(client: &Client, ns: &str, changed: Arc<dyn Fn() + Send + Sync>) -> Self {
        let writer = reflector::store::Writer::default();
        let cache = PlaceCache {
            // Filled below, once the watches that write them run.
            deployments: reflector::store::Writer::default().as_reader(),
            services: reflector::store::Writer::default().as_reader(),
            slices: reflector::store::Writer::default().as_reader(),
            bgds: writer.as_reader(),
            bgd_writer: Mutex::new(Some(writer)),
            client: client.clone(),
            namespace: ns.to_string(),
            changed,
            watches: Mutex::default(),
            last_error: Arc::default(),
        };
        let owned = watcher::Config::default().labels(&format!(
            "{}={}",
            cutover_api::MANAGED_BY_LABEL,
            cutover_api::MANAGED_BY
        ));
        let mut cache = cache;
        cache.deployments = cache.spawn(owned.clone(), reflector::store::Writer::default());
        cache.services = cache.spawn(owned, reflector::store::Writer::default());
        cache.slices = cache.spawn(
            watcher::Config::default(),
            reflector::store::Writer::default(),
        );
        cache
    }

    /// Run one watch of the place: fill its store, keep its health, trigger the users on
    /// a change.
    fn spawn<K>(&self, config: watcher::Config, writer: reflector::store::Writer<K>) -> Store<K>
    where
        K: Resource<DynamicType = (), Scope = cutover_api::k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
        let reader = writer.as_reader();
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.namespace);
        let health = Arc::new(Health::default());
        let (flag, last_error, changed) = (
            health.clone(),
            self.last_error.clone(),
            self.changed.clone(),
        );
        let task = tokio::spawn(async move {
            let mut events = watcher(api, config)
                .backoff(Retry::default())
                .modify(slim::<K>)
                .reflect(writer)
                .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
                    Ok(_) => {
                        flag.ok();
                        changed();
                    }
                    Err(e) => {
                        if let Ok(mut last) = last_error.lock() {
                            *last = Some(e.to_string());
                        }
                        if flag.failed() {
                            changed();
                        }
                    }
                }
            }
        });
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((health, task));
        reader
    }

    /// Start watching the place's BlueGreenDeployments (once).
    fn watch_bgds(&self) {
        let writer = self
            .bgd_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            self.spawn(watcher::Config::default(), writer);
        }
    }

    /// The ready endpoints of Service `service` in `ns`, from the cached EndpointSlices.
    pub fn endpoints(
        &self,
        ns: &str,
        service: &str,
        service_port: i32,
        port_name: &str,
    ) -> Endpoints {
        let slices: Vec<EndpointSlice> = self
            .slices
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|n| n == service)
            })
            .map(|s| s.as_ref().clone())
            .collect();
        endpoint_mirror::from_slices(&slices, service_port, port_name)
    }

    /// Wait (up to [`SYNC_TIMEOUT`]) for every started watch's first list; then say
    /// whether they all answer, or why not.
    pub async fn synced(&self) -> Result<(), String> {
        let bgds = self.bgd_writer.lock().map(|w| w.is_none()).unwrap_or(true);
        let ready = async {
            let _ = self.deployments.wait_until_ready().await;
            let _ = self.services.wait_until_ready().await;
            let _ = self.slices.wait_until_ready().await;
            if bgds {
                let _ = self.bgds.wait_until_ready().await;
            }
        };
        let why = || {
            self.last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "its API did not answer".to_string())
        };
        if tokio::time::timeout(SYNC_TIMEOUT, ready).await.is_err() {
            return Err(why());
        }
        let healthy = self
            .watches
            .lock()
            .map(|w| w.iter().all(|(h, _)| h.healthy()))
            .unwrap_or(false);
        if healthy { Ok(()) } else { Err(why()) }
    }
}

struct Place {
    cache: Arc<PlaceCache>,
    users: BTreeSet<User>,
}

/// The watched places, by key (cluster and namespace).
#[derive(Clone)]
pub struct Places(Arc<Inner>);

struct Inner {
    places: Mutex<HashMap<String, Place>>,
    /// Where a change at a place sends its BlueGreenDeployments.
    trigger: UnboundedSender<ObjectRef<BlueGreenDeployment>>,
}

impl Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places").finish_non_exhaustive()
    }
}

impl Places {
    /// No places yet; a change at a place sends its BlueGreenDeployments to `trigger`.
    pub fn new(trigger: UnboundedSender<ObjectRef<BlueGreenDeployment>>) -> Self {
        Places(Arc::new(Inner {
            places: Mutex::default(),
            trigger,
        }))
    }

    /// The cache of namespace `ns` of the cluster `client` reaches (`key` names both), for
    /// `user`; started if no one watched it yet.
    pub fn watch(&self, key: &str, client: &Client, ns: &str, user: &User) -> Arc<PlaceCache> {
        let mut places = lock(&self.0.places);
        if let Some(p) = places.get_mut(key) {
            p.users.insert(user.clone());
            if matches!(user, User::Policy(..)) {
                p.cache.watch_bgds();
            }
            return p.cache.clone();
        }
        let cache = Arc::new(self.start(key, client, ns));
        if matches!(user, User::Policy(..)) {
            cache.watch_bgds();
        }
        places.insert(
            key.to_string(),
            Place {
                cache: cache.clone(),
                users: BTreeSet::from([user.clone()]),
            },
        );
        cache
    }

    fn start(&self, key: &str, client: &Client, ns: &str) -> PlaceCache {
        let key = key.to_string();
        let inner: Weak<Inner> = Arc::downgrade(&self.0);
        PlaceCache::new(
            client,
            ns,
            Arc::new(move || {
                if let Some(inner) = inner.upgrade() {
                    inner.changed(&key);
                }
            }),
        )
    }

    /// `user` now watches exactly the places `keys`: it leaves the others, and a place left
    /// without users stops being watched.
    pub fn retain(&self, user: &User, keys: &[String]) {
        lock(&self.0.places).retain(|key, p| {
            if !keys.contains(key) {
                p.users.remove(user);
            }
            !p.users.is_empty()
        });
    }

    /// Whether `user` already watches place `key`.
    pub fn watching(&self, key: &str, user: &User) -> bool {
        lock(&self.0.places)
            .get(key)
            .is_some_and(|p| p.users.contains(user))
    }

    /// How many places are watched.
    pub fn len(&self) -> usize {
        lock(&self.0.places).len()
    }

    /// Whether no place is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Trigger every BlueGreenDeployment using place `key`.
    fn changed(&self, key: &str) {
        let users: Vec<User> = lock(&self.places)
            .get(key)
            .map(|p| p.users.iter().cloned().collect())
            .unwrap_or_default();
        for user in users {
            if let User::Release(ns, name) = user {
                let _ = self
                    .trigger
                    .unbounded_send(ObjectRef::new(&name).within(&ns));
            }
        }
    }
}

/// The places map; a panic while it was held left it as it was (no invariant spans a
/// panic), so a poisoned lock is taken as is.
fn lock(m: &Mutex<HashMap<String, Place>>) -> std::sync::MutexGuard<'_, HashMap<String, Place>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Annotation on a cached ConfigMap or Secret whose data was dropped: nothing referenced
/// it when it was seen. Its metadata (and resourceVersion) stay.
const WITHOUT_DATA: &str = "cutover.dev/cached-without-data";

/// The ConfigMaps and Secrets (`namespace`, `name`) something the controller watches
/// references: a pod template, a `clusterRef`, a database connection. Only their data is
/// kept in the cache; a cluster's other ConfigMaps and Secrets (Helm keeps every release
/// in one) cost only their metadata.
#[derive(Clone, Default)]
pub struct Referenced(Arc<std::sync::RwLock<std::collections::HashSet<(String, String)>>>);

impl Debug for Referenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Referenced").finish_non_exhaustive()
    }
}

impl Referenced {
    /// `ns/name` is referenced from now on.
    pub fn add(&self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        let known = self.0.read().map(|r| r.contains(&key)).unwrap_or(false);
        if !known && let Ok(mut r) = self.0.write() {
            r.insert(key);
        }
    }

    fn contains(&self, ns: &str, name: &str) -> bool {
        self.0
            .read()
            .map(|r| r.contains(&(ns.to_string(), name.to_string())))
            .unwrap_or(true)
    }

    /// For `watched(..).modify`: drop the data of an object nothing references.
    pub fn slim<K: Resource + 'static>(
        &self,
        drop_data: fn(&mut K),
    ) -> impl FnMut(&mut K) + Send + 'static {
        let referenced = self.clone();
        move |obj: &mut K| {
            slim(obj);
            let meta = obj.meta();
            let (ns, name) = (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            if !referenced.contains(&ns, &name) {
                drop_data(obj);
                obj.meta_mut()
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(WITHOUT_DATA.into(), "true".into());
            }
        }
    }
}

/// Drop a ConfigMap's data.
pub fn drop_config_map_data(cm: &mut ConfigMap) {
    cm.data = None;
    cm.binary_data = None;
}

/// Drop a Secret's data.
pub fn drop_secret_data(s: &mut Secret) {
    s.data = None;
    s.string_data = None;
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

/// ConfigMaps and Secrets with their data: from the cache, or, for one cached without its
/// data (it was not referenced yet when seen), read once per resourceVersion.
pub struct Configs {
    client: Client,
    /// ConfigMaps (data only where referenced).
    pub config_maps: Store<ConfigMap>,
    /// Secrets (data only where referenced).
    pub secrets: Store<Secret>,
    /// Objects read because their cached copy has no data, by kind/namespace/name, with the
    /// resourceVersion they were read at.
    read: Mutex<HashMap<String, (String, serde_json::Value)>>,
}

impl Debug for Configs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configs").finish_non_exhaustive()
    }
}

impl Configs {
    /// Over `config_maps` and `secrets`, reading through `client` when needed.
    pub fn new(client: Client, config_maps: Store<ConfigMap>, secrets: Store<Secret>) -> Self {
        Configs {
            client,
            config_maps,
            secrets,
            read: Mutex::default(),
        }
    }

    /// ConfigMap `ns/name` with its data.
    pub async fn config_map(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, cutover_api::kube::Error> {
        self.full(&self.config_maps, ns, name).await
    }

    /// Secret `ns/name` with its data.
    pub async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<Secret>, cutover_api::kube::Error> {
        self.full(&self.secrets, ns, name).await
    }

    async fn full<K>(
        &self,
        store: &Store<K>,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, cutover_api::kube::Error>
    where
        K: Resource<DynamicType = (), Scope = cutover_api::k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
    {
        let Some(cached) = lookup(store, ns, name) else {
            return Ok(None);
        };
        let stripped = cached
            .meta()
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(WITHOUT_DATA));
        if !stripped {
            return Ok(Some(cached));
        }
        let key = format!("{}/{ns}/{name}", K::kind(&()));
        let version = cached.meta().resource_version.clone().unwrap_or_default();
        let known = self.read.lock().ok().and_then(|r| {
            r.get(&key)
                .filter(|(v, _)| *v == version)
                .map(|(_, o)| o.clone())
        });
        if let Some(obj) = known.and_then(|o| serde_json::from_value(o).ok()) {
            return Ok(Some(obj));
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let found = api.get_opt(name).await?;
        if let (Some(obj), Ok(mut read)) = (&found, self.read.lock())
            && let Ok(value) = serde_json::to_value(obj)
        {
            let version = obj.meta().resource_version.clone().unwrap_or_default();
            read.insert(key, (version, value));
        }
        Ok(found)
    }
}

/// The home cluster's watch caches of what BlueGreenDeployments own and read.
#[derive(Clone)]
pub struct Home {
    /// Deployments (Cutover's, by label).
    pub deployments: Store<Deployment>,
    /// Services (Cutover's, by label).
    pub services: Store<Service>,
    /// EndpointSlices (the mirrored ones, Cutover's by label).
    pub slices: Store<EndpointSlice>,
    /// AnalysisRuns (Cutover's, by label).
    pub runs: Store<AnalysisRun>,
    /// ConfigMaps (templates reference them).
    pub config_maps: Store<ConfigMap>,
    /// Secrets (templates and `clusterRef`s reference them).
    pub secrets: Store<Secret>,
    /// ConfigMaps and Secrets with their data.
    pub configs: Arc<Configs>,
    /// What is referenced (their data is cached).
    pub referenced: Referenced,
    /// AnalysisTemplates.
    pub templates: Store<AnalysisTemplate>,
    /// ClusterAnalysisTemplates.
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
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
            self.config_maps.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.templates.wait_until_ready(),
            self.cluster_templates.wait_until_ready(),
        );
    }
}

/// A route kind's store and the task filling it.
type RouteWatch = (Store<DynamicObject>, tokio::task::JoinHandle<()>);

/// Route objects (HTTPRoute, VirtualService, TrafficSplit), one watch per kind, started
/// when the first BlueGreenDeployment routes through that kind.
pub struct Routes {
    client: Client,
    namespace: Option<String>,
    stores: Mutex<HashMap<String, RouteWatch>>,
    /// Called with each route that changes.
    changed: Arc<dyn Fn(&DynamicObject) + Send + Sync>,
}

impl Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").finish_non_exhaustive()
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        if let Ok(stores) = self.stores.lock() {
            for (_, task) in stores.values() {
                task.abort();
            }
        }
    }
}

impl Routes {
    /// Watches through `client` (in `namespace`, or all), calling `changed` on each change.
    pub fn new(
        client: Client,
        namespace: Option<String>,
        changed: impl Fn(&DynamicObject) + Send + Sync + 'static,
    ) -> Self {
        Routes {
            client,
            namespace,
            stores: Mutex::default(),
            changed: Arc::new(changed),
        }
    }

    fn store(&self, ar: &ApiResource) -> Store<DynamicObject> {
        let key = format!("{}/{}", ar.api_version, ar.kind);
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((store, _)) = stores.get(&key) {
            return store.clone();
        }
        let api: Api<DynamicObject> = match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        let writer = reflector::store::Writer::new(ar.clone());
        let reader = writer.as_reader();
        let changed = self.changed.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(slim::<DynamicObject>)
                .reflect(writer)
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                if let Ok(route) = event {
                    changed(&route);
                }
            }
        });
        stores.insert(key, (reader.clone(), task));
        reader
    }

    /// Route `name` of kind `ar` in `ns`: from the watch once it has listed, else (the kind
    /// is not installed, or its watch does not answer yet) from the API.
    pub async fn get(
        &self,
        ar: &ApiResource,
        ns: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, cutover_api::kube::Error> {
        let store = self.store(ar);
        if tokio::time::timeout(SYNC_TIMEOUT, store.wait_until_ready())
            .await
            .is_ok()
        {
            return Ok(store
                .get(&ObjectRef::new_with(name, ar.clone()).within(ns))
                .map(|o| o.as_ref().clone()));
        }
        Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, ar)
            .get_opt(name)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn secret(ns: &str, name: &str) -> Secret {
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "namespace": ns, "name": name, "resourceVersion": "7",
                "annotations": { LAST_APPLIED: "{}" },
            },
            "data": { "url": "cG9zdGdyZXM=" },
        }))
        .expect("secret");
        s.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        s
    }

    #[test]
    fn a_failed_watch_is_broken_until_an_event_or_until_its_error_ages_out() {
        let h = Health::default();
        assert!(h.healthy());
        assert!(h.failed(), "it was healthy before this failure");
        assert!(!h.healthy());
        assert!(!h.failed(), "already broken");
        h.ok();
        assert!(h.healthy());
        let waits: Vec<Duration> = Retry::default().take(6).collect();
        assert_eq!(waits[0], Duration::from_millis(200));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().expect("waits"), RETRY_MAX);
        assert!(
            RETRY_MAX < BROKEN_FOR,
            "a down API server's errors must recur before they age out"
        );
    }

    #[test]
    fn only_referenced_configs_keep_their_data_and_none_keeps_managed_fields() {
        let referenced = Referenced::default();
        referenced.add("shop", "db");
        let mut slim = referenced.slim(drop_secret_data);
        let (mut used, mut other) = (secret("shop", "db"), secret("shop", "helm-release"));
        slim(&mut used);
        slim(&mut other);
        assert!(used.data.is_some());
        assert!(other.data.is_none());
        for s in [&used, &other] {
            assert!(s.metadata.managed_fields.is_none());
            assert!(
                !s.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(LAST_APPLIED))
            );
            assert_eq!(s.metadata.resource_version.as_deref(), Some("7"));
        }
        let marked = |s: &Secret| {
            s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(WITHOUT_DATA))
        };
        assert!(!marked(&used));
        assert!(
            marked(&other),
            "a copy without data is marked, so a reader fetches it"
        );
        // The same name in another namespace is another Secret.
        let mut elsewhere = secret("other", "db");
        slim(&mut elsewhere);
        assert!(elsewhere.data.is_none());
    }
}
