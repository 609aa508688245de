//! ConfigMaps and Secrets: cached with their data only where something the controller
//! watches references them, read once per resourceVersion otherwise.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Secret};
use cutover_api::kube::runtime::reflector::Store;
use cutover_api::kube::{Api, Client, Resource};

use super::{SYNC_TIMEOUT, lookup, slim};
use crate::objects::Namespaced;

/// Annotation on a cached ConfigMap or Secret whose data was dropped: nothing referenced
/// it when it was seen. Its metadata (and resourceVersion) stay.
pub const WITHOUT_DATA: &str = "cutover.dev/cached-without-data";

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

    /// `ns/name` with its data: from `store`; while the store has not listed yet (up to
    /// [`SYNC_TIMEOUT`]), from the API.
    async fn full<K: Namespaced>(
        &self,
        store: &Store<K>,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, cutover_api::kube::Error> {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        if tokio::time::timeout(SYNC_TIMEOUT, store.wait_until_ready())
            .await
            .is_err()
        {
            return api.get_opt(name).await;
        }
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

#[cfg(test)]
mod tests {
    use super::super::LAST_APPLIED;
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
