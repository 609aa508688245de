//! Watch caches of the places a BlueGreenDeployment's colors or a FailoverPolicy's members
//! run in away from home: one set of watches per namespace of a cluster, started with its
//! first user and stopped with its last, triggering its BlueGreenDeployments on a change.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cutover_api::BlueGreenDeployment;
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Client, Resource};
use futures::StreamExt as _;
use futures::channel::mpsc::UnboundedSender;
use serde::de::DeserializeOwned;

use super::{SYNC_TIMEOUT, owned, slim};
use crate::endpoint_mirror::{self, Endpoints, SERVICE_NAME_LABEL};

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
    pub deployments: Store<super::CachedDeployment>,
    /// Services there (Cutover's, by label).
    pub services: Store<super::CachedService>,
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
        use reflector::store::Writer;
        let (deployments, services, slices, bgds) = (
            Writer::default(),
            Writer::default(),
            Writer::default(),
            Writer::default(),
        );
        let cache = PlaceCache {
            deployments: deployments.as_reader(),
            services: services.as_reader(),
            slices: slices.as_reader(),
            bgds: bgds.as_reader(),
            bgd_writer: Mutex::new(Some(bgds)),
            client: client.clone(),
            namespace: ns.to_string(),
            changed,
            watches: Mutex::default(),
            last_error: Arc::default(),
        };
        cache.spawn(owned(), deployments, super::slim_deployment);
        cache.spawn(owned(), services, super::slim_service);
        cache.spawn(watcher::Config::default(), slices, slim);
        cache
    }

    /// Run one watch of the place: fill its store, keep its health, trigger the users on
    /// a change.
    fn spawn<K>(
        &self,
        config: watcher::Config,
        writer: reflector::store::Writer<K>,
        modify: fn(&mut K),
    ) where
        K: Resource<DynamicType = (), Scope = cutover_api::k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + Sync
            + 'static,
    {
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
                .modify(modify)
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
    }

    /// Start watching the place's BlueGreenDeployments (once).
    fn watch_bgds(&self) {
        let writer = self
            .bgd_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            self.spawn(watcher::Config::default(), writer, slim);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
