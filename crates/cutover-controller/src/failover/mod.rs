//! The FailoverPolicy controller: observe members → decide (in `cutover-core`) → act.
//!
//! Each policy gets a task of its own that runs one pass every `healthCheck.interval` (and
//! at once when a person writes a request annotation or changes the spec): it probes every
//! member, mirrors the members' live endpoints into the Services `<policy>-<member>`,
//! reads each member's database, reads where the entry HTTPRoute sends, asks
//! [`cutover_core::failover::decide`] for a plan, carries its actions out (fence, promote,
//! route) and re-decides on the same health results until nothing is left to do, then
//! writes status. A fixed cadence (rather than a pass per watch event) is what makes the
//! failure and success thresholds mean "checks in a row", `interval` apart.
//!
//! What a pass reads of Kubernetes comes from watch caches: the members' BlueGreenDeployments
//! and EndpointSlices from the cache of the namespace (and cluster) each runs in, the
//! database Secrets and the entry route from the home caches. A member whose place's watch
//! does not answer is unhealthy, as a member whose API did not answer a read was before.

pub mod drill;
mod error;
pub mod members;
pub mod postgres;
mod regional;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cutover_api::failover::{
    FailbackMode, FailoverPolicy, FailoverPolicyStatus, Member, MemberStatus, MoveStatus, requests,
};
use cutover_api::k8s_openapi::api::core::v1::Secret;
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Client, Resource as _, ResourceExt as _};
use cutover_core::failover::{
    self, Action, Counters, DataObs, Failback, Input, MemberObs, Memory, Move, Phase, Plan, Policy,
    Requests,
};
use cutover_core::release::Timestamp;
use futures::StreamExt as _;
use tokio::sync::Notify;

pub use error::Error;

use crate::cache::{self, Places, User};
use crate::clock::{duration, now, time, timestamp};
use crate::clusters::Clusters;
use crate::conditions::{Wanted, merge};
use crate::metrics::Metrics;
use crate::objects;
use crate::providers::prometheus;
use crate::traffic::entry::{self, EntryRoute};
use crate::traffic::{RouteKind, TrafficProvider as _};
use members::Endpoints;
use postgres::DbState;

const KIND: &str = "FailoverPolicy";

/// Shared by every policy's task.
pub struct Context {
    /// The API client of the cluster the policies live in.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub events: crate::events::Events,
    /// HTTP client of the probes.
    pub http: reqwest::Client,
    /// Clients of member clusters.
    pub clusters: Arc<Clusters>,
    /// Watch caches of the namespaces (and clusters) the members run in.
    pub places: Places,
    /// The Secrets of the policies' cluster (database connections), from its watch cache.
    pub configs: Arc<cache::Configs>,
    /// What the caches keep the data of: the Secrets the members name.
    pub referenced: cache::Referenced,
    /// Route watch caches (the entry HTTPRoutes).
    pub routes: Arc<cache::Routes>,
    /// The region this controller runs in (`--region`).
    pub region: Option<String>,
    /// The etcd endpoints regional policies use instead of theirs (`--etcd-endpoints`).
    pub etcd_endpoints: Vec<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The policy's knobs as the core sees them, and the probe timing.
struct Settings {
    policy: Policy,
    interval: Duration,
    timeout: Duration,
}

fn settings(p: &FailoverPolicy) -> Result<Settings, String> {
    let hc = &p.spec.health_check;
    let interval = duration(&hc.interval, "spec.healthCheck.interval")?;
    let timeout = duration(&hc.timeout, "spec.healthCheck.timeout")?;
    if interval.is_zero() {
        return Err("spec.healthCheck.interval: must be more than 0".into());
    }
    if let Some(s) = p.spec.drills.as_ref().and_then(|d| d.schedule.as_deref()) {
        drill::schedule(s)?;
    }
    let secs = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
    let gate = p.spec.data_gate.clone().unwrap_or_default();
    Ok(Settings {
        policy: Policy {
            failure_threshold: u32::try_from(hc.failure_threshold).unwrap_or(1),
            success_threshold: u32::try_from(hc.success_threshold).unwrap_or(1),
            automatic: p.spec.automatic,
            min_hold: secs(p.spec.min_hold_seconds),
            failback: match p.spec.failback.mode {
                FailbackMode::Manual => Failback::Manual,
                FailbackMode::AfterStable => {
                    Failback::AfterStable(secs(p.spec.failback.stable_seconds.unwrap_or(0)))
                }
            },
            max_data_loss_seconds: gate.max_data_loss_seconds.map(|s| s as f64),
            max_data_loss_bytes: gate.max_data_loss_bytes.and_then(|b| u64::try_from(b).ok()),
        },
        interval,
        timeout,
    })
}

/// What a policy's task remembers between passes (lost on restart, which is safe: it only
/// saves work or narrows what is unknown).
#[derive(Default)]
pub(crate) struct Local {
    /// Endpoints last mirrored per member.
    mirrored: HashMap<String, Endpoints>,
    /// Last lag (seconds) measured per member with a reachable primary, and when.
    last_lag: HashMap<String, (Timestamp, f64)>,
    /// The drill's entry prober.
    prober: Option<drill::Prober>,
    /// The resourceVersion of the policy after this task's last status write.
    written: Option<u64>,
    /// The newest resourceVersion of the entry route this task read from the API after
    /// moving it; a cache older than this is behind this task's own move.
    route_seen: Option<u64>,
    /// The regional mode's lease and memory (`spec.coordination`).
    regional: Option<regional::Regional>,
}

/// Who uses the places a policy's members run in.
fn user_of(ns: Option<&str>, name: &str) -> User {
    User::Policy(ns.unwrap_or_default().to_string(), name.to_string())
}

/// Run the policies of `api` until `shutdown`.
pub async fn run(ctx: Arc<Context>, api: Api<FailoverPolicy>, shutdown: impl Future<Output = ()>) {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut tasks: HashMap<ObjectRef<FailoverPolicy>, (tokio::task::JoinHandle<()>, Arc<Notify>)> =
        HashMap::new();
    let mut stream = std::pin::pin!(stream);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                if let Err(e) = ev {
                    tracing::debug!(error = %e, "FailoverPolicy watch error");
                    continue;
                }
                let live: Vec<ObjectRef<FailoverPolicy>> =
                    store.state().iter().map(|p| ObjectRef::from_obj(p.as_ref())).collect();
                tasks.retain(|k, (h, _)| {
                    let keep = live.contains(k);
                    if !keep {
                        h.abort();
                        // Its members' places lose a user (and stop when it was the last).
                        ctx.places.retain(&user_of(k.namespace.as_deref(), &k.name), &[]);
                    }
                    keep
                });
                for key in live {
                    if let Some((_, n)) = tasks.get(&key) {
                        n.notify_one();
                        continue;
                    }
                    let notify = Arc::new(Notify::new());
                    let handle = tokio::spawn(policy_task(ctx.clone(), store.clone(), key.clone(), notify.clone()));
                    tasks.insert(key, (handle, notify));
                }
            }
        }
    }
    for (h, _) in tasks.values() {
        h.abort();
    }
}

/// What a person changed that deserves a pass at once.
fn wake_key(p: &FailoverPolicy) -> (Option<i64>, Vec<(String, String)>) {
    let ann = p
        .annotations()
        .iter()
        .filter(|(k, _)| k.as_str() == requests::FAILOVER || k.as_str() == requests::DRILL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (p.metadata.generation, ann)
}

/// The policy as the store holds it, once the store holds this task's last status write:
/// a pass must not start from a status older than the one the last pass wrote (it would
/// count a check twice or answer a request again). Waits at most [`cache::SYNC_TIMEOUT`].
async fn current(
    store: &Store<FailoverPolicy>,
    key: &ObjectRef<FailoverPolicy>,
    notify: &Notify,
    written: Option<u64>,
) -> Option<Arc<FailoverPolicy>> {
    let deadline = tokio::time::Instant::now() + cache::SYNC_TIMEOUT;
    loop {
        let p = store.get(key)?;
        let seen = objects::revision(&p.metadata);
        let behind = written.zip(seen).is_some_and(|(w, s)| s < w);
        if !behind || tokio::time::Instant::now() >= deadline {
            return Some(p);
        }
        // Every watch event notifies the task.
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn policy_task(
    ctx: Arc<Context>,
    store: Store<FailoverPolicy>,
    key: ObjectRef<FailoverPolicy>,
    notify: Arc<Notify>,
) {
    let mut local = Local::default();
    loop {
        let Some(p) = current(&store, &key, &notify, local.written).await else {
            return;
        };
        let seen = wake_key(&p);
        let started = tokio::time::Instant::now();
        let result = pass(&ctx, &p, &mut local).await;
        ctx.metrics.reconcile_finished(KIND, started.elapsed());
        let interval = match result {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(policy = %key, error = %e, kind = e.kind(), "failover pass failed");
                ctx.metrics.reconcile_failed(KIND, e.kind());
                Duration::from_secs(1)
            }
        };
        let deadline = started + interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = notify.notified() => {
                    match store.get(&key) {
                        None => return,
                        Some(now) if wake_key(&now) != seen => break,
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// Why a pass acts on nothing: the policy is Degraded with this reason and message.
#[derive(Debug)]
struct Refusal {
    reason: &'static str,
    message: String,
}

/// What one pass works on: the policy and what its spec names.
struct Pass<'a> {
    policy: &'a FailoverPolicy,
    settings: Settings,
    ns: String,
    name: String,
    /// Member names, in spec order.
    names: Vec<String>,
    /// Each member's Service `<policy>-<member>`, in member order.
    services: Vec<String>,
    /// The entry HTTPRoute.
    route: String,
}

impl<'a> Pass<'a> {
    /// The pass of `p`, or why it acts on nothing and when to look again.
    fn of(p: &'a FailoverPolicy) -> Result<Self, (Refusal, Duration)> {
        let invalid = |message: String| Refusal {
            reason: "InvalidSpec",
            message,
        };
        let settings = settings(p).map_err(|m| (invalid(m), Duration::from_secs(5)))?;
        // The regional mode's entry is DNS (no route).
        let route = match (&p.spec.entry.http_route, &p.spec.entry.dns) {
            (Some(r), None) => r.name.clone(),
            (None, Some(_)) if p.spec.coordination.is_some() => String::new(),
            _ => {
                let interval = settings.interval;
                let m = "spec.entry: set httpRoute, or dns together with spec.coordination";
                return Err((invalid(m.into()), interval));
            }
        };
        let name = p.name_any();
        let names: Vec<String> = p.spec.members.iter().map(|m| m.name.clone()).collect();
        let services = names
            .iter()
            .map(|m| members::service_name(&name, m))
            .collect();
        Ok(Pass {
            policy: p,
            settings,
            ns: p.namespace().unwrap_or_default(),
            name,
            names,
            services,
            route,
        })
    }
}

/// One pass; returns when the next one is due. Every step reads what it needs afresh, so
/// a pass that stops early (an error, a refusal) leaves the next one nothing to undo.
async fn pass(ctx: &Context, p: &FailoverPolicy, local: &mut Local) -> Result<Duration, Error> {
    if p.spec.coordination.is_some() {
        return regional::pass(ctx, p, local).await;
    }
    let pass = match Pass::of(p) {
        Ok(pass) => pass,
        // Nothing was touched; a corrected spec wakes the task at once.
        Err((refusal, next)) => {
            refuse(ctx, p, refusal, local).await?;
            return Ok(next);
        }
    };
    let mut observed = observe(ctx, &pass, local).await;
    mirror_endpoints(ctx, &pass, &observed.views, local).await?;
    let mut status = p.status.clone().unwrap_or_default();
    let taken = take_requests(&pass, &mut status);
    let acted =
        match decide_and_act(ctx, &pass, &mut observed.views, taken, &mut status, local).await? {
            Ok(acted) => acted,
            // The entry is missing or not one this policy moves: Degraded until it is
            // fixed (the route is read before each round of actions, so none acts on a
            // route it cannot read).
            Err(refusal) => {
                refuse(ctx, p, refusal, local).await?;
                return Ok(pass.settings.interval);
            }
        };
    drill::routed(
        &status,
        local,
        acted.routed_to.map(|i| pass.names[i].as_str()),
    );
    count_moves(ctx, &pass, &acted, &mut status);
    publish_all(ctx, p, &acted).await;
    finish_drill(ctx, &pass, &mut status).await?;
    build_status(&pass, &observed, &acted, local, &mut status);
    ctx.metrics.set_failover_phase(
        &pass.ns,
        &pass.name,
        status.phase.as_deref().unwrap_or_default(),
    );
    write_status(ctx, p, &status, local).await?;
    // A drill's steps are timed more finely than the health checks.
    Ok(if status.drill.is_some() {
        pass.settings.interval.min(Duration::from_millis(250))
    } else {
        pass.settings.interval
    })
}

/// One member as observed this pass.
#[derive(Debug, Clone)]
struct View {
    health: Result<(), String>,
    endpoints: Option<Endpoints>,
    conn: Option<String>,
    db: Option<DbState>,
    /// The lag a Prometheus query gives (a database managed outside Cutover).
    lag: Option<QueriedLag>,
    /// The key of the place (cluster and namespace) the member runs in, once known.
    place: Option<String>,
    /// The member's BlueGreenDeployment's size, as its place's cache holds it.
    size: Option<MemberSize>,
}

/// A member's size: its full size and the pilot-light size a regional policy set on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemberSize {
    /// `spec.replicas`.
    full: i32,
    /// The pilot-light annotation's value.
    pilot: Option<i32>,
}

/// What a pass observed before deciding.
struct Observed {
    views: Vec<View>,
    /// The entry as clients reach it (`None`: no `spec.entry.url`, or a drill's prober is
    /// on it).
    entry: Option<Result<(), String>>,
}

/// Observe every member, and the entry as clients reach it; watch the places the members
/// run in now (and no others).
async fn observe(ctx: &Context, pass: &Pass<'_>, local: &Local) -> Observed {
    let p = pass.policy;
    let user = user_of(Some(&pass.ns), &pass.name);
    let entry_probe = async {
        match (&p.spec.entry.url, local.prober.is_none()) {
            (Some(url), true) => Some(members::probe(&ctx.http, url, pass.settings.timeout).await),
            _ => None,
        }
    };
    let (views, entry): (Vec<View>, _) = futures::join!(
        futures::future::join_all(
            p.spec
                .members
                .iter()
                .map(|m| observe_member(ctx, pass, m, &user)),
        ),
        entry_probe
    );
    let keys: Vec<String> = views.iter().filter_map(|v| v.place.clone()).collect();
    ctx.places.retain(&user, &keys);
    Observed { views, entry }
}

/// Secret `name` in `ns` with its data (see [`cache::Configs`]).
async fn secret(ctx: &Context, ns: &str, name: &str) -> Result<Option<Secret>, String> {
    // Its data is kept in the cache from now on.
    ctx.referenced.add(ns, name);
    ctx.configs
        .secret(ns, name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))
}

async fn connection_string(ctx: &Context, ns: &str, m: &Member) -> Option<Result<String, String>> {
    let pg = m.database.as_ref()?.postgres.as_ref()?;
    let key = pg.key.as_deref().unwrap_or("url");
    Some(match secret(ctx, ns, &pg.secret_name).await {
        Err(e) => Err(e),
        Ok(None) => Err(format!("Secret {} does not exist", pg.secret_name)),
        Ok(Some(s)) => s
            .data
            .and_then(|d| d.get(key).map(|b| b.0.clone()))
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("Secret {} has no key {key}", pg.secret_name)),
    })
}

async fn observe_member(ctx: &Context, pass: &Pass<'_>, m: &Member, user: &User) -> View {
    let ns = &pass.ns;
    let timeout = pass.settings.timeout;
    let lag = async {
        match m.database.as_ref().and_then(|d| d.prometheus.as_ref()) {
            Some(prom) => Some(query_lag(&ctx.http, prom).await),
            None => None,
        }
    };
    let db = async {
        match connection_string(ctx, ns, m).await {
            None => (None, None),
            Some(Err(e)) => (
                None,
                Some(DbState {
                    error: Some(e),
                    ..DbState::default()
                }),
            ),
            Some(Ok(conn)) => {
                let state = postgres::observe(&conn, timeout).await;
                (Some(conn), Some(state))
            }
        }
    };
    let health = async {
        if let Some(c) = &m.cluster_ref {
            // Its kubeconfig Secret's data is kept in the cache from now on.
            ctx.referenced.add(ns, &c.secret_name);
        }
        let place = members::place(&ctx.places, &ctx.clusters, &ctx.client, ns, m, user);
        let place = match place.await {
            Ok(p) => p,
            Err(e) => return (Err(e), None, None, None),
        };
        let size = crate::cache::lookup(
            &place.cache.bgds,
            &place.namespace,
            &m.blue_green_deployment,
        )
        .map(|b| MemberSize {
            full: b.spec.replicas,
            pilot: b.pilot_light_replicas(),
        });
        let require_available = pass.policy.spec.pilot_light.is_none();
        let eps = members::endpoints(
            &place.cache,
            &place.client,
            &place.namespace,
            m,
            timeout,
            require_available,
        );
        let eps = match eps.await {
            Ok(eps) => eps,
            Err(e) => return (Err(e), None, Some(place.key), size),
        };
        let path = &pass.policy.spec.health_check.path;
        let probe = members::probe_member(&ctx.http, m, &eps, path, timeout).await;
        (probe, Some(eps), Some(place.key), size)
    };
    let ((conn, db), (health, endpoints, place, size), lag) = futures::join!(db, health, lag);
    View {
        health,
        endpoints,
        conn,
        db,
        lag,
        place,
        size,
    }
}

/// Mirror each member's live endpoints into its Service `<policy>-<member>` (when they
/// changed since this task last did).
async fn mirror_endpoints(
    ctx: &Context,
    pass: &Pass<'_>,
    views: &[View],
    local: &mut Local,
) -> Result<(), Error> {
    for (name, v) in pass.names.iter().zip(views) {
        if let Some(eps) = &v.endpoints
            && local.mirrored.get(name) != Some(eps)
        {
            members::mirror(&ctx.client, pass.policy, name, eps).await?;
            local.mirrored.insert(name.clone(), eps.clone());
        }
    }
    Ok(())
}

/// What people asked for, taken this pass.
struct Taken {
    requests: Requests,
    /// A drill was asked for.
    drill: bool,
    /// Requests refused (a failover to no such member).
    events: Vec<failover::Event>,
}

/// Take the new request annotations: each is answered once (its token goes to
/// `status.handledRequests`, which the CLI waits for).
fn take_requests(pass: &Pass<'_>, status: &mut FailoverPolicyStatus) -> Taken {
    let p = pass.policy;
    let mut taken = Taken {
        requests: Requests::default(),
        drill: false,
        events: Vec::new(),
    };
    if let Some(v) = new_request(p, requests::FAILOVER) {
        let r = parse_request(&v);
        status
            .handled_requests
            .insert(requests::FAILOVER.into(), r.token.clone());
        match r
            .to
            .as_deref()
            .map(|t| pass.names.iter().position(|n| n == t))
        {
            Some(None) => taken.events.push(failover::Event {
                reason: "FailoverRefused",
                message: format!(
                    "failover to {:?} refused: no such member (members: {})",
                    r.to.unwrap_or_default(),
                    pass.names.join(", ")
                ),
                warning: true,
            }),
            Some(Some(i)) => {
                taken.requests.failover = Some(Some(i));
                taken.requests.force = r.force;
            }
            None => {
                taken.requests.failover = Some(None);
                taken.requests.force = r.force;
            }
        }
    }
    if let Some(v) = new_request(p, requests::DRILL) {
        let token = v.split_whitespace().next().unwrap_or_default().to_string();
        status
            .handled_requests
            .insert(requests::DRILL.into(), token);
        taken.drill = true;
    }
    taken
}

/// What deciding and acting left.
struct Acted {
    /// The last decision.
    plan: Plan,
    /// Members as the core saw them last.
    obs: Vec<MemberObs>,
    /// Where the entry sends, as last read (after the last action, or before an action
    /// that failed).
    routed_to: Option<usize>,
    /// Events of the requests and decisions.
    events: Vec<failover::Event>,
    /// Events of the drill.
    drill_events: Vec<failover::Event>,
}

/// Decide, carry the actions out, re-read the databases (not the health) and the route,
/// and decide again, until nothing is left to do or an action fails.
async fn decide_and_act(
    ctx: &Context,
    pass: &Pass<'_>,
    views: &mut [View],
    taken: Taken,
    status: &mut FailoverPolicyStatus,
    local: &mut Local,
) -> Result<Result<Acted, Refusal>, Error> {
    let p = pass.policy;
    let started = now();
    let mut memory = memory_from(p.status.as_ref(), &pass.names);
    let mut requests = taken.requests;
    let mut events = taken.events;
    let mut drill_events = Vec::new();
    let mut first = true;
    loop {
        // After this pass's own actions the cache may not hold the route yet.
        let routed_to = match read_entry(ctx, pass, !first, local).await? {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let data = data_obs(&pass.names, views, memory.active, now(), local);
        let obs: Vec<MemberObs> = views
            .iter()
            .zip(data)
            .zip(&pass.names)
            .map(|((v, data), name)| MemberObs {
                name: name.clone(),
                healthy: v.health.is_ok(),
                reason: v.health.clone().err().unwrap_or_default(),
                data,
            })
            .collect();
        if first {
            // A drill may ask for a traffic-only move.
            let d = drill::step(
                &drill::Inputs {
                    policy: p,
                    names: &pass.names,
                    members: &obs,
                    memory: &memory,
                    routed_to,
                    now: started,
                    requested: taken.drill,
                    probe_urls: &vec![p.spec.entry.url.clone(); pass.names.len()],
                },
                status,
                local,
            );
            if let Some(to) = d.move_to {
                requests = Requests {
                    failover: Some(Some(to)),
                    force: false,
                    traffic_only: true,
                };
            }
            drill_events.extend(d.events);
        }
        let plan = failover::decide(&Input {
            now: now(),
            policy: pass.settings.policy.clone(),
            members: obs.clone(),
            routed_to,
            memory: memory.clone(),
            requests: if first { requests } else { Requests::default() },
            fresh_health: first,
        });
        first = false;
        events.extend(plan.events.iter().cloned());
        memory = plan.memory.clone();
        let failed = if plan.actions.is_empty() {
            None
        } else {
            act(ctx, pass, &plan.actions, views, local).await
        };
        let done = plan.actions.is_empty() || failed.is_some();
        events.extend(failed);
        if done {
            return Ok(Ok(Acted {
                plan,
                obs,
                routed_to,
                events,
                drill_events,
            }));
        }
        for v in views.iter_mut() {
            if let Some(c) = &v.conn {
                let timeout = pass.settings.timeout.max(Duration::from_secs(2));
                v.db = Some(postgres::observe(c, timeout).await);
            }
        }
    }
}

/// Where the entry route sends, or why it cannot be moved. Read from the watch cache,
/// except `fresh` (after this pass's own actions) or while the cache is older than the
/// route this task last read after a move: then from the API.
async fn read_entry(
    ctx: &Context,
    pass: &Pass<'_>,
    fresh: bool,
    local: &mut Local,
) -> Result<Result<Option<usize>, Refusal>, Error> {
    let read_error = |source| Error::ReadRoute {
        name: pass.route.clone(),
        source,
    };
    let mut found = None;
    if !fresh {
        let ar = RouteKind::Gateway.api_resource();
        let cached = ctx
            .routes
            .get(&ar, &pass.ns, &pass.route)
            .await
            .map_err(read_error)?;
        let cached_version = cached.as_ref().and_then(|r| objects::revision(&r.metadata));
        let behind = local
            .route_seen
            .is_some_and(|seen| cached_version.is_none_or(|v| v < seen));
        if !behind {
            local.route_seen = None;
            found = Some(cached);
        }
    }
    let found = match found {
        Some(cached) => cached,
        None => {
            let read = entry::api(&ctx.client, &pass.ns)
                .get_opt(&pass.route)
                .await
                .map_err(read_error)?;
            local.route_seen = read.as_ref().and_then(|r| objects::revision(&r.metadata));
            read
        }
    };
    let Some(route) = found else {
        return Ok(Err(Refusal {
            reason: "MissingRoute",
            message: format!(
                "spec.entry.httpRoute: HTTPRoute {} does not exist in namespace {}; no traffic was moved",
                pass.route, pass.ns
            ),
        }));
    };
    Ok(
        entry::routed_to(&route.data["spec"], &pass.services).map_err(|msg| Refusal {
            reason: "InvalidRoute",
            message: format!("HTTPRoute {}: {msg}", pass.route),
        }),
    )
}

/// Carry `actions` out in order; the first that fails stops the rest and comes back as
/// the Event saying so.
async fn act(
    ctx: &Context,
    pass: &Pass<'_>,
    actions: &[Action],
    views: &[View],
    local: &Local,
) -> Option<failover::Event> {
    let names = &pass.names;
    for a in actions {
        let result = match *a {
            Action::Fence(i) => match &views[i].conn {
                Some(c) => postgres::fence(c).await,
                None => Err("no database connection".into()),
            },
            Action::Promote(i) => match &views[i].conn {
                Some(c) => postgres::promote(c).await,
                None => Err("no database connection".into()),
            },
            Action::Route(i) => route_to(ctx, pass, i, local).await,
        };
        if let Err(e) = result {
            let what = match a {
                Action::Fence(i) => format!("fencing {}'s database", names[*i]),
                Action::Promote(i) => format!("promoting {}'s database", names[*i]),
                Action::Route(i) => format!("routing to {}", names[*i]),
            };
            return Some(failover::Event {
                reason: "FailoverStepFailed",
                message: format!("{what}: {e}"),
                warning: true,
            });
        }
    }
    None
}

/// Point the entry at member `to`, on the route as the API has it: the cache may be
/// behind, and it drops the copy `kubectl apply` keeps in an annotation, which a replace
/// of the cached object would delete.
async fn route_to(ctx: &Context, pass: &Pass<'_>, to: usize, local: &Local) -> Result<(), String> {
    let route = entry::api(&ctx.client, &pass.ns)
        .get_opt(&pass.route)
        .await
        .map_err(|e| format!("reading HTTPRoute {}: {e}", pass.route))?
        .ok_or_else(|| format!("HTTPRoute {} does not exist", pass.route))?;
    let ports = pass
        .names
        .iter()
        .map(|n| local.mirrored.get(n).map_or(80, |e| e.service_port))
        .collect();
    let entry = EntryRoute::new(&ctx.client, &pass.ns, &route, &pass.services, ports);
    let t = std::time::Instant::now();
    let res = entry.switch_live(to).await.map_err(|e| e.to_string());
    ctx.metrics.traffic_switched(t.elapsed());
    res
}

/// Count the moves this pass finished: in status and in the metric with their duration.
fn count_moves(ctx: &Context, pass: &Pass<'_>, acted: &Acted, status: &mut FailoverPolicyStatus) {
    let started = pass
        .policy
        .status
        .as_ref()
        .and_then(|s| s.moving.as_ref())
        .map(|m| timestamp(&m.started));
    for e in &acted.events {
        if e.reason == "FailoverDone" || e.reason == "FailbackDone" {
            let took = acted
                .plan
                .memory
                .last_move
                .zip(started)
                .map(|(a, b)| a.since(b))
                .unwrap_or_default();
            ctx.metrics
                .failed_over(&pass.ns, &pass.name, e.reason == "FailbackDone", took);
            status.failovers += 1;
        }
    }
}

/// Publish the pass's Events: the decisions', then the drill's.
async fn publish_all(ctx: &Context, p: &FailoverPolicy, acted: &Acted) {
    for e in acted.events.iter().chain(&acted.drill_events) {
        publish(ctx, p, e.reason, &e.message, e.warning).await;
    }
}

/// A drill that finished this pass: its report written, counted and announced.
async fn finish_drill(
    ctx: &Context,
    pass: &Pass<'_>,
    status: &mut FailoverPolicyStatus,
) -> Result<(), Error> {
    let Some(report) = drill::finished(status) else {
        return Ok(());
    };
    let p = pass.policy;
    drill::write_report(ctx, p, &report, status).await?;
    let verdict = report.verdict.clone().unwrap_or_default();
    ctx.metrics.drilled(&pass.ns, &pass.name, &verdict);
    let passed = verdict == "Passed";
    let reason = if passed { "DrillPassed" } else { "DrillFailed" };
    publish(ctx, p, reason, &drill::summary(&report), !passed).await;
    Ok(())
}

/// The status after this pass: phase, active member, the move, each member and the
/// conditions.
fn build_status(
    pass: &Pass<'_>,
    observed: &Observed,
    acted: &Acted,
    local: &Local,
    status: &mut FailoverPolicyStatus,
) {
    let (plan, memory, names) = (&acted.plan, &acted.plan.memory, &pass.names);
    let s = &pass.settings;
    status.phase = Some(if status.drill.is_some() && plan.phase != Phase::Degraded {
        "Drilling".to_string()
    } else {
        phase_name(plan.phase).to_string()
    });
    status.active_member = names.get(memory.active).cloned();
    status.message = Some(plan.message.clone());
    status.moving = memory.moving.map(|m| MoveStatus {
        from: names[m.from].clone(),
        to: names[m.to].clone(),
        forced: m.forced,
        failback: m.failback,
        traffic_only: m.traffic_only,
        started: time(m.started),
    });
    status.last_move_time = memory.last_move.map(time);
    status.failed_from = memory.failed_from.and_then(|i| names.get(i).cloned());
    let threshold = pass.policy.spec.health_check.failure_threshold.max(1);
    status.detection_budget_seconds = Some(
        s.interval.max(s.timeout).as_secs_f64() * f64::from(threshold) + s.timeout.as_secs_f64(),
    );
    status.members = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let counters = memory.counters.get(i).copied().unwrap_or_default();
            member_status(n, counters, &observed.views[i], &acted.obs[i], local)
        })
        .collect();
    let wanted = conditions(pass, observed, acted);
    status.conditions = merge(
        &status.conditions,
        &wanted,
        pass.policy.metadata.generation,
        &time(now()),
    );
    status.observed_generation = pass.policy.metadata.generation;
}

/// One member's status.
fn member_status(
    name: &str,
    c: Counters,
    v: &View,
    obs: &MemberObs,
    local: &Local,
) -> MemberStatus {
    let d = obs.data.as_ref();
    MemberStatus {
        name: name.to_string(),
        healthy: v.health.is_ok(),
        down: c.down,
        failures: i32::try_from(c.failures).unwrap_or(i32::MAX),
        successes: i32::try_from(c.successes).unwrap_or(i32::MAX),
        up_since: c.up_since.map(time),
        seen_up: c.seen_up,
        reason: v
            .health
            .clone()
            .err()
            .or_else(|| v.db.as_ref().and_then(|d| d.error.clone())),
        endpoints: local
            .mirrored
            .get(name)
            .map(|e| i32::try_from(e.addresses.len()).unwrap_or(0))
            .unwrap_or(0),
        database_role: v
            .db
            .as_ref()
            .map(|d| d.role().to_string())
            .or_else(|| v.lag.as_ref().map(|_| "external".to_string())),
        lag_seconds: d
            .and_then(|d| d.lag_seconds)
            .map(|s| (s * 1000.0).round() / 1000.0),
        lag_bytes: d
            .and_then(|d| d.lag_bytes)
            .and_then(|b| i64::try_from(b).ok()),
    }
}

/// The conditions wanted: Ready, EntryReachable (with an entry URL) and DataGateOpen
/// (with a standby).
fn conditions(pass: &Pass<'_>, observed: &Observed, acted: &Acted) -> Vec<Wanted> {
    let (plan, names) = (&acted.plan, &pass.names);
    let ready = matches!(plan.phase, Phase::Healthy | Phase::FailedOver);
    let mut wanted = vec![Wanted {
        type_: "Ready",
        status: ready,
        reason: match plan.phase {
            Phase::Healthy => "Healthy",
            Phase::FailedOver => "FailedOver",
            Phase::FailingOver => "FailingOver",
            Phase::Degraded => "Degraded",
        },
        message: plan.message.clone(),
    }];
    if let Some(entry) = &observed.entry {
        // Reported, not acted on: the entry is shared by every member, so moving traffic
        // would not mend it.
        wanted.push(Wanted {
            type_: "EntryReachable",
            status: entry.is_ok(),
            reason: if entry.is_ok() {
                "EntryAnswers"
            } else {
                "EntryFails"
            },
            message: match entry {
                Ok(()) => "spec.entry.url answers".into(),
                Err(e) => format!("spec.entry.url: {e}"),
            },
        });
    }
    let first_standby = (0..names.len()).find(|&i| i != plan.memory.active);
    if let Some(i) = first_standby {
        let gate = failover::data_gate(&pass.settings.policy, &acted.obs[i]);
        wanted.push(Wanted {
            type_: "DataGateOpen",
            status: gate.is_ok(),
            reason: if gate.is_ok() {
                "WithinLimits"
            } else {
                "BeyondLimits"
            },
            message: match gate {
                Ok(()) => {
                    "a failover to the first standby would lose no more than the data gate allows"
                        .into()
                }
                Err(e) => format!("a failover to {} would be refused: {e}", names[i]),
            },
        });
    }
    wanted
}

/// Write `status` (when it changed) by server-side apply as the controller's field
/// manager: the fields it leaves out are removed, as this manager owns them.
async fn write_status(
    ctx: &Context,
    p: &FailoverPolicy,
    status: &FailoverPolicyStatus,
    local: &mut Local,
) -> Result<(), Error> {
    if p.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<FailoverPolicy> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let written = objects::apply_status(&api, &p.name_any(), status).await?;
    local.written = objects::revision(&written.metadata);
    Ok(())
}

/// The status of a policy that acts on nothing: Degraded with the reason; a request made
/// meanwhile is answered, refused with the reason (the CLI waits for it).
fn refused_status(p: &FailoverPolicy, refusal: Refusal) -> FailoverPolicyStatus {
    let mut status = p.status.clone().unwrap_or_default();
    let mut asked = Vec::new();
    for (key, verb) in [(requests::FAILOVER, "failover"), (requests::DRILL, "drill")] {
        if let Some(v) = new_request(p, key) {
            let token = v.split_whitespace().next().unwrap_or_default().to_string();
            status.handled_requests.insert(key.into(), token);
            asked.push(verb);
        }
    }
    let message = if asked.is_empty() {
        refusal.message
    } else {
        format!("{} refused: {}", asked.join(" and "), refusal.message)
    };
    status.phase = Some("Degraded".into());
    status.message = Some(message.clone());
    status.conditions = merge(
        &status.conditions,
        &[Wanted {
            type_: "Ready",
            status: false,
            reason: refusal.reason,
            message,
        }],
        p.metadata.generation,
        &time(now()),
    );
    status.observed_generation = p.metadata.generation;
    status
}

/// Refuse to act (nothing touched): the refused status, and one Event per new message.
async fn refuse(
    ctx: &Context,
    p: &FailoverPolicy,
    refusal: Refusal,
    local: &mut Local,
) -> Result<(), Error> {
    let reason = refusal.reason;
    let status = refused_status(p, refusal);
    let old = p.status.as_ref().and_then(|s| s.message.as_deref());
    if let Some(message) = status.message.as_deref()
        && old != Some(message)
    {
        publish(ctx, p, reason, message, true).await;
    }
    write_status(ctx, p, &status, local).await
}

/// A member's replication lag read from Prometheus.
#[derive(Debug, Clone, Default, PartialEq)]
struct QueriedLag {
    seconds: Option<f64>,
    bytes: Option<u64>,
    /// Why a query gave no lag (Prometheus did not answer, no single finite sample).
    error: Option<String>,
}

/// Run the lag queries of `prom`.
async fn query_lag(
    http: &reqwest::Client,
    prom: &cutover_api::failover::PrometheusLag,
) -> QueriedLag {
    let mut out = QueriedLag::default();
    let one = |q: &str, v: Result<cutover_core::analysis::Value, _>| match v {
        Ok(cutover_core::analysis::Value::Number(n)) if n.is_finite() => Ok(n.max(0.0)),
        Ok(other) => Err(format!("{q}: not one finite sample ({other:?})")),
        Err(e) => Err(format!("{q}: {e}")),
    };
    if let Some(q) = &prom.lag_seconds_query {
        match one(q, prometheus::query(http, &prom.address, q).await) {
            Ok(n) => out.seconds = Some(n),
            Err(e) => out.error = Some(e),
        }
    }
    if let Some(q) = &prom.lag_bytes_query {
        match one(q, prometheus::query(http, &prom.address, q).await) {
            // Whole bytes; a fractional sample rounds up.
            Ok(n) => out.bytes = Some(n.ceil() as u64),
            Err(e) => out.error = Some(e),
        }
    }
    out
}

/// The core's view of every member's data, from the databases observed.
fn data_obs(
    names: &[String],
    views: &[View],
    active: usize,
    now: Timestamp,
    local: &mut Local,
) -> Vec<Option<DataObs>> {
    // The primary a standby's lag is measured against: one that takes writes (a fenced old
    // primary holds nothing newer than the new one), the active member's first; else any
    // that is not in recovery.
    let writer = |v: &View| {
        v.db.as_ref()
            .is_some_and(|d| d.reachable && !d.in_recovery && !d.read_only)
    };
    let is_primary = |v: &View| v.db.as_ref().is_some_and(|d| d.reachable && !d.in_recovery);
    let primary = views
        .get(active)
        .filter(|v| writer(v))
        .or_else(|| views.iter().find(|v| writer(v)))
        .or_else(|| views.get(active).filter(|v| is_primary(v)))
        .or_else(|| views.iter().find(|v| is_primary(v)))
        .and_then(|v| v.db.as_ref());
    views
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if let Some(lag) = &v.lag {
                return Some(DataObs {
                    reachable: lag.error.is_none(),
                    lag_seconds: lag.seconds,
                    lag_bytes: lag.bytes,
                    gate_only: true,
                    ..DataObs::default()
                });
            }
            let db = v.db.as_ref()?;
            let (mut seconds, bytes) = if db.in_recovery {
                postgres::lag(primary, db)
            } else {
                (Some(0.0), Some(0))
            };
            if db.in_recovery {
                match seconds {
                    Some(s) if primary.is_some() => {
                        local.last_lag.insert(names[i].clone(), (now, s));
                    }
                    _ => {
                        // The primary does not answer: what it may hold that this standby
                        // misses is at most the lag last measured plus the time since.
                        seconds = local
                            .last_lag
                            .get(&names[i])
                            .filter(|(t, _)| now.since(*t) < Duration::from_secs(60))
                            .map(|(t, s)| s + now.since(*t).as_secs_f64());
                    }
                }
            }
            Some(DataObs {
                writable: db.writable(),
                fenced: db.reachable && !db.in_recovery && db.read_only,
                lag_seconds: seconds,
                lag_bytes: bytes,
                reachable: db.reachable,
                standby: db.in_recovery,
                gate_only: false,
            })
        })
        .collect()
}

/// The core's memory, read from status.
fn memory_from(status: Option<&FailoverPolicyStatus>, names: &[String]) -> Memory {
    let Some(s) = status else {
        return Memory::default();
    };
    let idx = |n: &str| names.iter().position(|m| m == n);
    let counters = names
        .iter()
        .map(|n| {
            s.members
                .iter()
                .find(|m| &m.name == n)
                .map(|m| Counters {
                    failures: u32::try_from(m.failures).unwrap_or(0),
                    successes: u32::try_from(m.successes).unwrap_or(0),
                    up_since: m.up_since.as_ref().map(timestamp),
                    down: m.down,
                    seen_up: m.seen_up,
                })
                .unwrap_or_default()
        })
        .collect();
    Memory {
        active: s.active_member.as_deref().and_then(idx).unwrap_or(0),
        counters,
        moving: s.moving.as_ref().and_then(|m| {
            Some(Move {
                from: idx(&m.from)?,
                to: idx(&m.to)?,
                forced: m.forced,
                failback: m.failback,
                traffic_only: m.traffic_only,
                started: timestamp(&m.started),
            })
        }),
        last_move: s.last_move_time.as_ref().map(timestamp),
        failed_from: s.failed_from.as_deref().and_then(idx),
    }
}

/// A failover request: `<token>[ to=<member>][ force]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRequest {
    /// The token.
    pub token: String,
    /// The member asked for.
    pub to: Option<String>,
    /// Past the data gate.
    pub force: bool,
}

/// Parse a failover request annotation.
pub fn parse_request(v: &str) -> FailoverRequest {
    let mut words = v.split_whitespace();
    let token = words.next().unwrap_or_default().to_string();
    let mut r = FailoverRequest {
        token,
        to: None,
        force: false,
    };
    for w in words {
        if let Some(to) = w.strip_prefix("to=") {
            r.to = Some(to.to_string());
        } else if w == "force" {
            r.force = true;
        }
    }
    r
}

/// A request annotation not yet acted on: its value.
fn new_request(p: &FailoverPolicy, key: &str) -> Option<String> {
    let v = p.annotations().get(key)?;
    let token = v.split_whitespace().next().unwrap_or_default();
    let handled = p
        .status
        .as_ref()
        .and_then(|s| s.handled_requests.get(key))
        .is_some_and(|h| h == token);
    (!handled && !token.is_empty()).then(|| v.clone())
}

async fn publish(ctx: &Context, p: &FailoverPolicy, reason: &str, message: &str, warning: bool) {
    let object = p.object_ref(&());
    ctx.events
        .publish(&object, "Failover", reason, message, warning)
        .await;
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Healthy => "Healthy",
        Phase::FailingOver => "FailingOver",
        Phase::FailedOver => "FailedOver",
        Phase::Degraded => "Degraded",
    }
}

/// The Context's HTTP client for probes.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(db: DbState) -> View {
        View {
            health: Ok(()),
            endpoints: None,
            conn: None,
            db: Some(db),
            lag: None,
            place: None,
            size: None,
        }
    }

    fn primary(lsn: i64, fenced: bool) -> DbState {
        DbState {
            reachable: true,
            read_only: fenced,
            current_lsn: Some(lsn),
            ..DbState::default()
        }
    }

    #[test]
    fn lag_is_measured_against_the_primary_taking_writes_not_a_fenced_old_one() {
        let standby = DbState {
            reachable: true,
            in_recovery: true,
            replay_lsn: Some(1000),
            replay_age_seconds: Some(4.0),
            ..DbState::default()
        };
        let names = ["east", "west", "north"].map(String::from);
        // East was active and is fenced (at 5000); west was promoted (at 1000); north
        // follows west and has replayed all of it.
        let views = [
            view(primary(5000, true)),
            view(primary(1000, false)),
            view(standby),
        ];
        let mut local = Local::default();
        let obs = data_obs(&names, &views, 0, Timestamp(0), &mut local);
        let north = obs[2].as_ref().expect("north");
        assert_eq!((north.lag_seconds, north.lag_bytes), (Some(0.0), Some(0)));
        assert!(obs[0].as_ref().is_some_and(|d| d.fenced));
    }
}
