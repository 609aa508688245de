//! Wiring of the running controller: HTTP endpoints, leader election, the watches and the
//! reconciler. `main.rs` only parses flags and calls [`run`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use cutover_api::k8s_openapi::api::apps::v1::Deployment;
use cutover_api::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use cutover_api::k8s_openapi::api::batch::v1::Job;
use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Secret};
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::api::DynamicObject;
use cutover_api::kube::runtime::events::Reporter;
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{Controller, WatchStreamExt as _, controller, watcher};
use cutover_api::kube::{Api, Client, ResourceExt as _};
use cutover_api::{BlueGreenDeployment, FailoverPolicy};
use futures::StreamExt as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::analysis;
use crate::analysis::run::RunContext;
use crate::bluegreen::{self, Context};
use crate::cache;
use crate::failover;
use crate::http::{self, HttpState};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::providers;
use crate::traffic::RouteKind;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when `None`).
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Where the clients' API requests are counted (`cutover_api_requests_total`).
    pub api_requests: crate::api_requests::ApiRequests,
    /// The region this controller runs in (`--region`), for regional FailoverPolicies.
    pub region: Option<String>,
    /// The etcd endpoints regional policies use instead of their own (`--etcd-endpoints`;
    /// empty: the policy's).
    pub etcd_endpoints: Vec<String>,
}

/// A signal that fires once: SIGTERM or Ctrl-C.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Listen for SIGTERM and SIGINT.
    pub fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Resolves once shutdown was asked for.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

/// The BlueGreenDeployments of `store` for which `wanted` holds.
fn bgds_where(
    store: &Store<BlueGreenDeployment>,
    wanted: impl Fn(&BlueGreenDeployment) -> bool,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    store
        .state()
        .iter()
        .filter(|b| wanted(b))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Find the BlueGreenDeployments that reference config `name` in `ns`: in their template
/// (their workload's, with a workloadRef), or as the kubeconfig Secret of a color's cluster
/// (a new kubeconfig is a new place).
fn users_of(
    store: &Store<BlueGreenDeployment>,
    workloads: &Store<Deployment>,
    ns: Option<String>,
    name: &str,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    bgds_where(store, |b| {
        b.namespace() == ns
            && bluegreen::referenced_names(b, workloads)
                .iter()
                .any(|r| r == name)
    })
}

/// The BlueGreenDeployments whose `spec.workloadRef` names Deployment `name` in `ns`.
fn workload_users(
    store: &Store<BlueGreenDeployment>,
    ns: Option<String>,
    name: &str,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    bgds_where(store, |b| {
        b.namespace() == ns && b.spec.workload_ref.as_ref().is_some_and(|w| w.name == name)
    })
}

/// The BlueGreenDeployments an autoscaler change in `ns` (now targeting `target`) concerns:
/// those adopting `target`, and those it targeted before (their `WorkloadAutoscaled` is true).
fn autoscaler_users(
    store: &Store<BlueGreenDeployment>,
    ns: Option<String>,
    target: &str,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    bgds_where(store, |b| {
        let autoscaled = bluegreen::workload::autoscaled(b);
        b.namespace() == ns
            && b.spec
                .workload_ref
                .as_ref()
                .is_some_and(|w| w.name == target || autoscaled)
    })
}

/// The BlueGreenDeployments using template `name` (in `ns`; any namespace for a
/// ClusterAnalysisTemplate).
fn template_users(
    store: &Store<BlueGreenDeployment>,
    ns: Option<String>,
    name: &str,
    cluster_scope: bool,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    bgds_where(store, |b| {
        (cluster_scope || b.namespace() == ns)
            && bluegreen::gates::uses_template(b, name, cluster_scope)
    })
}

/// The BlueGreenDeployments whose `spec.trafficRouting` names `route`.
fn routing_through(
    store: &Store<BlueGreenDeployment>,
    route: &DynamicObject,
) -> Vec<ObjectRef<BlueGreenDeployment>> {
    let kind = route.types.as_ref().map(|t| t.kind.as_str());
    bgds_where(store, |b| {
        b.namespace() == route.namespace()
            && RouteKind::of(b).is_some_and(|(k, name)| {
                Some(k.kind()) == kind && Some(name) == route.metadata.name
            })
    })
}

/// How many BlueGreenDeployments are reconciled at once. A pass reads only caches, so a
/// few at a time keep up with the API server's writes; unbounded, a release of thousands
/// held thousands of requests (and their connections' buffers) in flight at once.
const RECONCILE_CONCURRENCY: u16 = 16;

/// How long a reconcile request waits for more of its kind before it runs. Without it,
/// kube-runtime schedules a request due now on tokio-util's `DelayQueue` "expired" list,
/// a stack: under a sustained burst the newest requests run first and the first ones
/// starve (5,000 BlueGreenDeployments created at once: a few dozen of the earliest were
/// first reconciled 28 minutes later, when the burst ended). Due in the future, requests
/// go through the timer wheel in time order. It also folds the events of one pass's own
/// writes (a Deployment and four Services) into one next pass.
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(10);

/// An API in `ns`, or across all namespaces.
fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: cutover_api::kube::Resource<
            Scope = cutover_api::k8s_openapi::NamespaceResourceScope,
            DynamicType = (),
        >,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run until shutdown or loss of leadership.
pub async fn run(client: Client, settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    settings.api_requests.register(&mut registry);
    let http_state = HttpState::new(registry);
    let ready = http_state.ready.clone();
    let server = tokio::spawn(http::serve(
        settings.http_addr,
        http_state,
        shutdown.clone().wait(),
    ));

    let mut lease = LeaseConfig::new(
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
    );
    lease.lease_duration = settings.lease_duration;
    let elector = LeaderElector::new(client.clone(), lease)?;
    // A healthy candidate is ready: it serves probes and takes over when the leader goes.
    ready.store(true, Ordering::Release);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_name, "waiting for the leader Lease");
    let guard = tokio::select! {
        g = elector.acquire() => g?,
        () = shutdown.clone().wait() => return Ok(()),
    };
    metrics.set_leader(true);
    tracing::info!(identity = %settings.identity, "leading");

    let events = crate::events::Events::new(
        client.clone(),
        Reporter {
            controller: "cutover-controller".into(),
            instance: Some(settings.identity.clone()),
        },
    );
    // One cache of other clusters' clients: a Secret named by both a BlueGreenDeployment
    // and a FailoverPolicy gives one client.
    let clusters = Arc::new(crate::clusters::Clusters::new(
        settings.api_requests.clone(),
    ));
    let owned = cache::owned();
    let ns = settings.namespace.as_deref();
    let all = watcher::Config::default;
    // Every store a pass reads, filled by the stream that also triggers the passes.
    let (deployments, deployments_changed) = cache::watched_with(
        scoped::<cache::CachedDeployment>(&client, ns),
        owned.clone(),
        cache::slim_deployment,
    );
    let (services, services_changed) = cache::watched_with(
        scoped::<cache::CachedService>(&client, ns),
        owned.clone(),
        cache::slim_service,
    );
    let (slices, slices_changed) = cache::watched(
        scoped::<EndpointSlice>(&client, ns),
        cache::mirrored_slices(),
    );
    let (runs, runs_changed) = cache::watched(scoped::<AnalysisRun>(&client, ns), owned.clone());
    // Their data only where referenced (a cluster's other Secrets can be large: Helm keeps
    // every release in one).
    let referenced = cache::Referenced::default();
    let (config_maps, config_maps_changed) = cache::watched_with(
        scoped::<ConfigMap>(&client, ns),
        all(),
        referenced.slim(cache::drop_config_map_data),
    );
    let (secrets, secrets_changed) = cache::watched_with(
        scoped::<Secret>(&client, ns),
        all(),
        referenced.slim(cache::drop_secret_data),
    );
    // The users' own Deployments, with their templates where a workloadRef names them.
    let workload_refs = cache::Referenced::default();
    let (workloads, workloads_changed) = cache::watched_with(
        scoped::<Deployment>(&client, ns),
        cache::workloads(),
        workload_refs.slim(cache::drop_template),
    );
    let (autoscalers, autoscalers_changed) = cache::watched(
        scoped::<HorizontalPodAutoscaler>(&client, ns),
        watcher::Config::default(),
    );
    let configs = Arc::new(cache::Configs::new(
        client.clone(),
        config_maps.clone(),
        secrets.clone(),
    ));
    let (templates, templates_changed) =
        cache::watched(scoped::<AnalysisTemplate>(&client, ns), all());
    let (cluster_templates, cluster_templates_changed) =
        cache::watched(Api::<ClusterAnalysisTemplate>::all(client.clone()), all());
    clusters.read_secrets_from(configs.clone());

    // The BlueGreenDeployments themselves; a deletion forgets what was kept about one.
    let (bgd_store, bgd_writer) = reflector::store();
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    let forgotten: Arc<std::sync::OnceLock<Arc<Context>>> = Arc::default();
    let on_delete = forgotten.clone();
    let refs = referenced.clone();
    let referencing_workloads = workloads.clone();
    let bgd_events = watcher(scoped::<BlueGreenDeployment>(&client, ns), all())
        .default_backoff()
        .modify(cache::slim::<BlueGreenDeployment>)
        .inspect(move |event| match event {
            Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) => {
                let ns = b.namespace().unwrap_or_default();
                for name in bluegreen::referenced_names(b, &referencing_workloads) {
                    refs.add(&ns, &name);
                }
                if let Some(w) = &b.spec.workload_ref {
                    workload_refs.add(&ns, &w.name);
                }
            }
            Ok(watcher::Event::Delete(b)) => {
                if let Some(ctx) = on_delete.get() {
                    bluegreen::forget(ctx, b);
                }
            }
            _ => {}
        })
        .reflect(bgd_writer)
        .touched_objects();
    let routes = {
        let (store, trigger) = (bgd_store.clone(), trigger.clone());
        cache::Routes::new(client.clone(), settings.namespace.clone(), move |route| {
            for b in routing_through(&store, route) {
                let _ = trigger.unbounded_send(b);
            }
        })
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        clusters: clusters.clone(),
        cache: cache::Home {
            deployments,
            services,
            slices,
            runs,
            configs,
            referenced,
            templates,
            cluster_templates,
            workloads: workloads.clone(),
            autoscalers,
        },
        routes: Arc::new(routes),
        places: cache::Places::new(trigger),
        written: std::sync::Mutex::default(),
        pruned: std::sync::Mutex::default(),
        deployed: std::sync::Mutex::default(),
        absent: cache::Absent::default(),
    });
    let _ = forgotten.set(ctx.clone());
    let (s1, s2, s3, s4, s5, s6) = (
        bgd_store.clone(),
        bgd_store.clone(),
        bgd_store.clone(),
        bgd_store.clone(),
        bgd_store.clone(),
        bgd_store.clone(),
    );
    let (w1, w2) = (workloads.clone(), workloads.clone());
    let controller = Controller::for_stream(bgd_events, bgd_store)
        .with_config(
            controller::Config::default()
                .concurrency(RECONCILE_CONCURRENCY)
                .debounce(RECONCILE_DEBOUNCE),
        )
        .owns_stream(deployments_changed)
        .owns_stream(services_changed)
        .owns_stream(slices_changed)
        .owns_stream(runs_changed)
        .watches_stream(config_maps_changed, move |cm: ConfigMap| {
            users_of(&s1, &w1, cm.namespace(), &cm.name_any())
        })
        .watches_stream(secrets_changed, move |s: Secret| {
            users_of(&s2, &w2, s.namespace(), &s.name_any())
        })
        .watches_stream(workloads_changed, move |d: Deployment| {
            workload_users(&s5, d.namespace(), &d.name_any())
        })
        .watches_stream(autoscalers_changed, move |h: HorizontalPodAutoscaler| {
            autoscaler_users(&s6, h.namespace(), &h.spec.scale_target_ref.name)
        })
        .watches_stream(templates_changed, move |t: AnalysisTemplate| {
            template_users(&s3, t.namespace(), &t.name_any(), false)
        })
        .watches_stream(
            cluster_templates_changed,
            move |t: ClusterAnalysisTemplate| template_users(&s4, None, &t.name_any(), true),
        )
        .reconcile_on(triggered)
        .graceful_shutdown_on(shutdown.clone().wait());
    let releases = controller
        .run(bluegreen::reconcile, bluegreen::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile error");
            }
        });
    let run_ctx = Arc::new(RunContext {
        client: client.clone(),
        http: providers::http_client(Duration::from_secs(30))?,
        metrics: metrics.clone(),
    });
    let runs: Api<AnalysisRun> = scoped(&client, ns);
    let jobs: Api<Job> = scoped(&client, ns);
    let analyses = Controller::new(runs, watcher::Config::default())
        .owns(jobs, owned)
        .graceful_shutdown_on(shutdown.clone().wait())
        .run(
            analysis::run::reconcile,
            analysis::run::error_policy,
            run_ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "analysis reconcile error");
            }
        });
    let failover_ctx = Arc::new(failover::Context {
        client: client.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        http: failover::http_client()?,
        clusters,
        places: ctx.places.clone(),
        configs: ctx.cache.configs.clone(),
        referenced: ctx.cache.referenced.clone(),
        routes: ctx.routes.clone(),
        region: settings.region.clone(),
        etcd_endpoints: settings.etcd_endpoints.clone(),
    });
    let policies: Api<FailoverPolicy> = scoped(&client, ns);
    let failovers = failover::run(failover_ctx, policies, shutdown.clone().wait());
    let run = async {
        futures::join!(releases, analyses, failovers);
    };

    tokio::select! {
        () = run => {
            metrics.set_leader(false);
            guard.release().await?;
            tracing::info!("released the leader Lease");
        }
        () = guard.lost() => {
            metrics.set_leader(false);
            anyhow::bail!("lost the leader Lease; exiting so that a restart contends again");
        }
    }
    let _ = server.await;
    Ok(())
}
