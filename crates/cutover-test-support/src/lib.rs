//! Fixtures for integration tests against the real local control plane.
//!
//! - [`kubeconfig`] finds the cluster: `$CUTOVER_TEST_KUBECONFIG` if set, otherwise the local
//!   cluster named by `$CUTOVER_TEST_CLUSTER` (default `dev`), started if it is not running.
//! - [`TestNamespace`] gives each test its own namespace, deleted when the value drops
//!   (also when the test panics).
//! - [`wait_for`] and [`wait_for_list`] wait on a condition with a timeout, driven by
//!   watch events rather than sleeps.
//!
//! Never point these at a cluster you care about: tests create and delete namespaces.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::runtime::{reflector, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

pub use cutover_local_cluster as local_cluster;

pub mod bench;
pub mod controller;
pub mod custom_metrics;
pub mod dns;
pub mod e2e;
pub mod etcd;
pub mod load;
pub mod netns;
pub mod postgres;
pub mod prometheus;
pub mod release;
pub mod upstream;
pub mod workload;

/// The label every test namespace carries, so leftovers can be found.
pub const TEST_LABEL: &str = "cutover.dev/test";

static KUBECONFIG: OnceCell<PathBuf> = OnceCell::const_new();

/// The kubeconfig of the cluster the tests run against, starting the local cluster if
/// needed.
pub async fn kubeconfig() -> PathBuf {
    KUBECONFIG
        .get_or_init(|| async {
            if let Some(path) = std::env::var_os("CUTOVER_TEST_KUBECONFIG") {
                return PathBuf::from(path);
            }
            let name = std::env::var("CUTOVER_TEST_CLUSTER")
                .unwrap_or_else(|_| local_cluster::DEFAULT_NAME.to_string());
            let state = local_cluster::up(&local_cluster::UpOptions {
                name: name.clone(),
                nodes: 2,
                process_node: None,
                real_node: None,
            })
            .await
            .unwrap_or_else(|e| panic!("local cluster {name} is not available: {e}"));
            state.kubeconfig
        })
        .await
        .clone()
}

/// A client for the test cluster. Create one per test: a client is bound to the Tokio
/// runtime it was made on, and each `#[tokio::test]` has its own.
pub async fn client() -> Client {
    let path = kubeconfig().await;
    local_cluster::client_for(&path)
        .await
        .unwrap_or_else(|e| panic!("no client for {}: {e}", path.display()))
}

/// A namespace that lives as long as the test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// Create `<prefix>-<random>` and wait until its `default` ServiceAccount exists (pods
    /// are rejected before that).
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.generate_name = Some(format!("{prefix}-"));
        ns.metadata.labels = Some([(TEST_LABEL.to_string(), "true".to_string())].into());
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating a test namespace: {e}"));
        let name = created.metadata.name.unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            &accounts,
            "default",
            "the default ServiceAccount",
            Duration::from_secs(60),
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
        Self { name, client }
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(move |client| async move {
            let namespaces: Api<Namespace> = Api::all(client);
            let _ = namespaces.delete(&name, &DeleteParams::background()).await;
        });
    }
}

/// Run async clean-up from a `Drop` (also while a test panics). The test's runtime may be
/// blocked in this very drop, and clients are bound to the runtime that made them, so the
/// work runs on a thread of its own with a fresh runtime and a fresh client.
pub fn cleanup<F, Fut>(work: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move { work(client().await).await });
    });
    let _ = handle.join();
}

/// Wait until the object `name` satisfies `condition`; panics after `timeout` naming
/// `what` and showing the object's last state.
pub async fn wait_for<K, C>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: C,
) -> K
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("waiting for {what}: {name} does not exist"),
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "timed out after {timeout:?} waiting for {what}; last state of {name}: {last:#?}"
            )
        }
    }
}

/// Delete `name` and wait (up to `timeout`) until it is gone: its finalizers have run.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let uid = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading {name} before deleting it: {e}"))
        .meta()
        .uid
        .clone()
        .unwrap_or_default();
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
    let gone = kube::runtime::wait::conditions::is_deleted(&uid);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, gone)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for {name} to be gone: {e}"),
        Err(_) => panic!("{name} still there after {timeout:?}"),
    }
}

/// Wait until the objects matched by `config` satisfy `predicate` (evaluated on every watch
/// event); returns them. Panics after `timeout` naming `what`.
pub async fn wait_for_list<K, P>(
    api: &Api<K>,
    config: watcher::Config,
    what: &str,
    timeout: Duration,
    mut predicate: P,
) -> Vec<Arc<K>>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    P: FnMut(&[Arc<K>]) -> bool,
{
    let (reader, writer) = reflector::store();
    // Every event, not only applied objects: the store fills in at the end of the initial
    // list (`InitDone`), which carries no object.
    let stream = reflector(writer, watcher(api.clone(), config));
    let mut stream = std::pin::pin!(stream);
    let waited = tokio::time::timeout(timeout, async {
        // The store is complete only after the initial list; check after every event.
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                panic!("watching for {what}: {e}");
            }
            let objects = reader.state();
            if predicate(&objects) {
                return objects;
            }
        }
        panic!("watch for {what} ended");
    })
    .await;
    match waited {
        Ok(objects) => objects,
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for {what}; last seen: {:#?}",
            reader.state()
        ),
    }
}

/// How long [`watch_while`] waits for its watch's initial list.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Call `check` on every state the objects matched by `config` pass through (from the
/// end of the initial list on) until `stop` resolves and the watch has caught up with what
/// the API server holds then; returns what `stop` returned. `stop` is not started before
/// the initial list has been checked. For invariants that must hold at every moment.
pub async fn watch_while<K, F>(
    api: &Api<K>,
    config: watcher::Config,
    check: impl FnMut(&[Arc<K>]),
    stop: F,
) -> F::Output
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: std::future::Future,
{
    watch_while_with(api, config, K::DynamicType::default(), check, stop).await
}

/// [`watch_while`] for resources with a runtime type (e.g. `DynamicObject`).
pub async fn watch_while_with<K, F>(
    api: &Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    mut check: impl FnMut(&[Arc<K>]),
    stop: F,
) -> F::Output
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: std::future::Future,
{
    let mut list = ListParams::default();
    list.label_selector.clone_from(&config.label_selector);
    list.field_selector.clone_from(&config.field_selector);
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector(writer, watcher(api.clone(), config));
    let mut stream = std::pin::pin!(stream);
    // `stop` starts only once the initial list is complete and checked: a change it makes
    // can then never land before the watch sees the state it starts from.
    tokio::time::timeout(LIST_TIMEOUT, async {
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::InitDone) = event {
                return;
            }
        }
        panic!("the watch ended before its initial list");
    })
    .await
    .unwrap_or_else(|_| panic!("no initial list within {LIST_TIMEOUT:?}"));
    check(&reader.state());
    let mut stop = std::pin::pin!(stop);
    let out = loop {
        tokio::select! {
            out = &mut stop => break out,
            Some(event) = stream.next() => {
                if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) = event {
                    check(&reader.state());
                }
            }
        }
    };
    // This watch is a connection of its own: a write made before `stop` ended may not have
    // reached it yet. Catch up to what the API server holds now, checking every step.
    let versions = |objs: &[Arc<K>]| {
        let mut v: Vec<(Option<String>, Option<String>, Option<String>)> = objs
            .iter()
            .map(|o| {
                let m = o.meta();
                (
                    m.namespace.clone(),
                    m.name.clone(),
                    m.resource_version.clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let now = api
        .list(&list)
        .await
        .unwrap_or_else(|e| panic!("listing after the watch: {e}"));
    let now: Vec<Arc<K>> = now.items.into_iter().map(Arc::new).collect();
    let target = versions(&now);
    tokio::time::timeout(LIST_TIMEOUT, async {
        while versions(&reader.state()) != target {
            match stream.next().await {
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    check(&reader.state());
                }
                Some(_) => {}
                None => panic!("the watch ended while catching up"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the watch did not catch up within {LIST_TIMEOUT:?}"));
    out
}
