//! Clients of other clusters, reached through kubeconfig Secrets (FailoverPolicy members,
//! BlueGreenDeployment colors in `spec.environments`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cutover_api::k8s_openapi::api::core::v1::Secret;
use cutover_api::kube::config::{KubeConfigOptions, Kubeconfig};
use cutover_api::kube::{Api, Client, Config, ResourceExt as _};

/// How long another cluster's API may take to answer one request.
const REMOTE_API_TIMEOUT: Duration = Duration::from_secs(3);

/// The key of a kubeconfig Secret when none is named.
pub const DEFAULT_KEY: &str = "kubeconfig";

/// Why a kubeconfig Secret gives no client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The Secret is missing or does not hold a usable kubeconfig: the user must fix it.
    Secret(String),
    /// The Secret could not be read (the API server did not answer): retry.
    Unavailable(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Secret(m) | ClusterError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// The clients of one cluster: for requests (each answers within [`REMOTE_API_TIMEOUT`])
/// and for watches (a watch is quiet for minutes; kube-runtime's watcher has its own idle
/// timeout).
#[derive(Clone)]
struct Pair {
    requests: Client,
    watches: Client,
}

/// Where the clients built from key `key` of Secret `ns/secret_name` are cached.
fn cache_key(ns: &str, secret_name: &str, key: Option<&str>) -> String {
    format!("{ns}/{secret_name}/{}", key.unwrap_or(DEFAULT_KEY))
}

/// Clients of other clusters, by Secret (namespace/name/key) and its resourceVersion.
#[derive(Default)]
pub struct Clusters {
    cache: Mutex<HashMap<String, (String, Pair)>>,
    /// Where their requests are counted.
    requests: crate::api_requests::ApiRequests,
    /// The home cluster's Secrets, once watched: read there instead of from the API.
    secrets: OnceLock<Arc<crate::cache::Configs>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters").finish_non_exhaustive()
    }
}

impl Clusters {
    /// A cache whose clients count their requests in `requests`.
    pub fn new(requests: crate::api_requests::ApiRequests) -> Self {
        Clusters {
            cache: Mutex::default(),
            requests,
            secrets: OnceLock::new(),
        }
    }

    /// Read kubeconfig Secrets from `store` (the home Secrets' watch cache) from now on.
    pub fn read_secrets_from(&self, configs: Arc<crate::cache::Configs>) {
        let _ = self.secrets.set(configs);
    }

    /// The Secret `ns/name`: from the watch cache (see [`crate::cache::Configs`]), else from
    /// the API.
    async fn secret(
        &self,
        home: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Secret>, ClusterError> {
        let read = match self.secrets.get() {
            Some(configs) => configs.secret(ns, name).await,
            None => {
                Api::<Secret>::namespaced(home.clone(), ns)
                    .get_opt(name)
                    .await
            }
        };
        read.map_err(|e| ClusterError::Unavailable(format!("reading Secret {name}: {e}")))
    }

    /// The key of the client [`Clusters::client`] gives for the same arguments: the same
    /// key, the same client (it changes when the Secret does).
    pub fn key(&self, ns: &str, secret_name: &str, key: Option<&str>) -> String {
        let cache_key = cache_key(ns, secret_name, key);
        let version = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).map(|(v, _)| v.clone()))
            .unwrap_or_default();
        format!("{cache_key}@{version}")
    }

    /// The client of the cluster whose kubeconfig is in Secret `ns/secret_name` (key `key`,
    /// default `kubeconfig`), read through `home`. Rebuilt when the Secret changes.
    pub async fn client(
        &self,
        home: &Client,
        ns: &str,
        secret_name: &str,
        key: Option<&str>,
    ) -> Result<Client, ClusterError> {
        let field = key.unwrap_or(DEFAULT_KEY);
        let cache_key = cache_key(ns, secret_name, key);
        let secret = self.secret(home, ns, secret_name).await?;
        let Some(secret) = secret else {
            return Err(ClusterError::Secret(format!(
                "Secret {secret_name} does not exist"
            )));
        };
        let version = secret.resource_version().unwrap_or_default();
        if let Ok(cache) = self.cache.lock()
            && let Some((v, c)) = cache.get(&cache_key)
            && *v == version
        {
            return Ok(c.requests.clone());
        }
        let bad = |what: String| ClusterError::Secret(format!("Secret {secret_name} {what}"));
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .map(|b| b.0.clone())
            .ok_or_else(|| bad(format!("has no key {field}")))?;
        let text =
            String::from_utf8(bytes).map_err(|_| bad(format!("key {field} is not UTF-8")))?;
        let kubeconfig = Kubeconfig::from_yaml(&text)
            .map_err(|e| bad(format!("key {field} is not a kubeconfig: {e}")))?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(format!("key {field}: {e}")))?;
        config.connect_timeout = Some(REMOTE_API_TIMEOUT);
        config.write_timeout = Some(REMOTE_API_TIMEOUT);
        let watches = self
            .requests
            .client(config.clone())
            .map_err(|e| bad(format!("key {field}: {e}")))?;
        config.read_timeout = Some(REMOTE_API_TIMEOUT);
        let client = self
            .requests
            .client(config)
            .map_err(|e| bad(format!("key {field}: {e}")))?;
        if let Ok(mut cache) = self.cache.lock() {
            let pair = Pair {
                requests: client.clone(),
                watches,
            };
            cache.insert(cache_key, (version, pair));
        }
        Ok(client)
    }

    /// The last client built from Secret `ns/secret_name`, if any (used to clean up after a
    /// BlueGreenDeployment whose Secret went first, as in a namespace deletion).
    pub fn cached(&self, ns: &str, secret_name: &str, key: Option<&str>) -> Option<Client> {
        let cache_key = cache_key(ns, secret_name, key);
        self.cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).map(|(_, c)| c.requests.clone()))
    }

    /// The client for watches of the cluster [`Clusters::client`] last gave for the same
    /// Secret: without the per-request read timeout, which would cut a quiet watch.
    pub fn watch_client(&self, ns: &str, secret_name: &str, key: Option<&str>) -> Option<Client> {
        let cache_key = cache_key(ns, secret_name, key);
        self.cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).map(|(_, c)| c.watches.clone()))
    }
}
