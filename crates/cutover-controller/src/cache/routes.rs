//! Route objects (HTTPRoute, VirtualService, TrafficSplit): one watch per kind, started when
//! the first BlueGreenDeployment or FailoverPolicy routes through that kind.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use cutover_api::kube::api::{ApiResource, DynamicObject};
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Client};
use futures::StreamExt as _;

use super::{SYNC_TIMEOUT, slim};

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
