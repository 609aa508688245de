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

pub mod drill;
pub mod members;
pub mod postgres;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cutover_api::failover::{
    FailbackMode, FailoverPolicy, FailoverPolicyStatus, MemberStatus, MoveStatus, requests,
};
use cutover_api::k8s_openapi::api::core::v1::Secret;
use cutover_api::kube::api::{Patch, PatchParams};
use cutover_api::kube::runtime::events::Recorder;
use cutover_api::kube::runtime::reflector::{self, ObjectRef, Store};
use cutover_api::kube::runtime::{WatchStreamExt as _, watcher};
use cutover_api::kube::{Api, Client, Resource as _, ResourceExt as _};
use cutover_core::failover::{
    self, Action, Counters, DataObs, Failback, Input, MemberObs, Memory, Move, Phase, Policy,
    Requests,
};
use cutover_core::release::Timestamp;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::analysis::providers::prometheus;
use crate::clock::{duration, now, time, timestamp};
use crate::clusters::Clusters;
use crate::conditions::{Wanted, merge};
use crate::metrics::Metrics;
use crate::traffic::TrafficProvider as _;
use crate::traffic::entry::{self, EntryRoute};
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
    pub recorder: Recorder,
    /// HTTP client of the probes.
    pub http: reqwest::Client,
    /// Clients of member clusters.
    pub clusters: Arc<Clusters>,
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
                    if !keep { h.abort(); }
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

async fn policy_task(
    ctx: Arc<Context>,
    store: Store<FailoverPolicy>,
    key: ObjectRef<FailoverPolicy>,
    notify: Arc<Notify>,
) {
    let mut local = Local::default();
    loop {
        let Some(p) = store.get(&key) else { return };
        let seen = wake_key(&p);
        let started = tokio::time::Instant::now();
        let interval = match pass(&ctx, &p, &mut local).await {
            Ok(i) => {
                ctx.metrics.reconcile_finished(KIND, started.elapsed());
                i
            }
            Err(e) => {
                tracing::warn!(policy = %key, error = %e, "failover pass failed");
                ctx.metrics.reconcile_finished(KIND, started.elapsed());
                ctx.metrics.reconcile_failed(KIND, "pass");
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

/// One member as observed this pass.
#[derive(Debug, Clone)]
struct View {
    health: Result<(), String>,
    endpoints: Option<Endpoints>,
    conn: Option<String>,
    db: Option<DbState>,
    /// The lag a Prometheus query gives (a database managed outside Cutover).
    lag: Option<QueriedLag>,
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

async fn connection_string(
    client: &Client,
    ns: &str,
    m: &cutover_api::failover::Member,
) -> Option<Result<String, String>> {
    let pg = m.database.as_ref()?.postgres.as_ref()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let key = pg.key.as_deref().unwrap_or("url");
    Some(match secrets.get_opt(&pg.secret_name).await {
        Err(e) => Err(format!("reading Secret {}: {e}", pg.secret_name)),
        Ok(None) => Err(format!("Secret {} does not exist", pg.secret_name)),
        Ok(Some(s)) => s
            .data
            .and_then(|d| d.get(key).map(|b| b.0.clone()))
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("Secret {} has no key {key}", pg.secret_name)),
    })
}

async fn observe_member(
    ctx: &Context,
    policy: &FailoverPolicy,
    m: &cutover_api::failover::Member,
    timeout: Duration,
) -> View {
    let ns = policy.namespace().unwrap_or_default();
    let member_ns = m.namespace.clone().unwrap_or_else(|| ns.clone());
    let mut view = View {
        health: Ok(()),
        endpoints: None,
        conn: None,
        db: None,
        lag: None,
    };
    let lag = async {
        match m.database.as_ref().and_then(|d| d.prometheus.as_ref()) {
            Some(prom) => Some(query_lag(&ctx.http, prom).await),
            None => None,
        }
    };
    let db = async {
        match connection_string(&ctx.client, &ns, m).await {
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
        let client = match members::client(&ctx.clusters, &ctx.client, &ns, m).await {
            Ok(c) => c,
            Err(e) => return (Err(format!("its cluster: {e}")), None),
        };
        let eps = match tokio::time::timeout(
            timeout.max(Duration::from_secs(3)),
            members::endpoints(&client, &member_ns, m),
        )
        .await
        {
            Err(_) => return (Err("its API did not answer in time".into()), None),
            Ok(Err(e)) => return (Err(e), None),
            Ok(Ok(eps)) => eps,
        };
        let probe =
            members::probe_member(&ctx.http, m, &eps, &policy.spec.health_check.path, timeout)
                .await;
        (probe, Some(eps))
    };
    let ((conn, db), (health, eps), lag) = futures::join!(db, health, lag);
    view.lag = lag;
    view.health = health;
    view.endpoints = eps;
    view.conn = conn;
    view.db = db;
    view
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
    crate::events::publish(&ctx.recorder, &object, "Failover", reason, message, warning).await;
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Healthy => "Healthy",
        Phase::FailingOver => "FailingOver",
        Phase::FailedOver => "FailedOver",
        Phase::Degraded => "Degraded",
    }
}

async fn write_status(
    ctx: &Context,
    p: &FailoverPolicy,
    status: &FailoverPolicyStatus,
) -> Result<(), String> {
    if p.status.as_ref() == Some(status) {
        return Ok(());
    }
    let mut value = serde_json::to_value(status).map_err(|e| e.to_string())?;
    // A merge patch keeps fields it does not mention: clear the ones now absent.
    if let (Some(old), Some(new)) = (
        p.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_object().cloned()),
        value.as_object_mut(),
    ) {
        for k in old.keys() {
            new.entry(k.clone()).or_insert(Value::Null);
        }
    }
    let api: Api<FailoverPolicy> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    api.patch_status(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": value })),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("writing the status: {e}"))
}

/// Refuse to act (nothing touched): Degraded with the reason, one Event per new message.
async fn refuse(
    ctx: &Context,
    p: &FailoverPolicy,
    reason: &'static str,
    message: String,
) -> Result<(), String> {
    let mut status = p.status.clone().unwrap_or_default();
    // A request made meanwhile is answered: refused, with the reason (the CLI waits for it).
    let mut asked = Vec::new();
    for (key, verb) in [(requests::FAILOVER, "failover"), (requests::DRILL, "drill")] {
        if let Some(v) = new_request(p, key) {
            let token = v.split_whitespace().next().unwrap_or_default().to_string();
            status.handled_requests.insert(key.into(), token);
            asked.push(verb);
        }
    }
    let message = if asked.is_empty() {
        message
    } else {
        format!("{} refused: {message}", asked.join(" and "))
    };
    if status.message.as_deref() != Some(message.as_str()) {
        publish(ctx, p, reason, &message, true).await;
    }
    let now = time(now());
    status.phase = Some("Degraded".into());
    status.message = Some(message.clone());
    status.conditions = merge(
        &status.conditions,
        &[Wanted {
            type_: "Ready",
            status: false,
            reason,
            message,
        }],
        p.metadata.generation,
        &now,
    );
    status.observed_generation = p.metadata.generation;
    write_status(ctx, p, &status).await
}

/// One pass; returns when the next one is due.
async fn pass(ctx: &Context, p: &FailoverPolicy, local: &mut Local) -> Result<Duration, String> {
    let s = match settings(p) {
        Ok(s) => s,
        Err(msg) => {
            refuse(ctx, p, "InvalidSpec", msg).await?;
            return Ok(Duration::from_secs(5));
        }
    };
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let names: Vec<String> = p.spec.members.iter().map(|m| m.name.clone()).collect();
    let services: Vec<String> = names
        .iter()
        .map(|m| members::service_name(&name, m))
        .collect();

    // The entry.
    let Some(route_name) = p.spec.entry.http_route.as_ref().map(|r| r.name.clone()) else {
        refuse(ctx, p, "InvalidSpec", "spec.entry: set httpRoute".into()).await?;
        return Ok(s.interval);
    };
    let routes = entry::api(&ctx.client, &ns);

    // Observe: the members, and the entry as clients reach it (not while a drill's prober
    // is on it).
    let entry_probe = async {
        match (&p.spec.entry.url, local.prober.is_none()) {
            (Some(url), true) => Some(members::probe(&ctx.http, url, s.timeout).await),
            _ => None,
        }
    };
    let (views, entry_health): (Vec<View>, _) = futures::join!(
        futures::future::join_all(
            p.spec
                .members
                .iter()
                .map(|m| observe_member(ctx, p, m, s.timeout)),
        ),
        entry_probe
    );
    for (i, v) in views.iter().enumerate() {
        if let Some(eps) = &v.endpoints
            && local.mirrored.get(&names[i]) != Some(eps)
        {
            members::mirror(&ctx.client, p, &names[i], eps).await?;
            local.mirrored.insert(names[i].clone(), eps.clone());
        }
    }

    let mut memory = memory_from(p.status.as_ref(), &names);
    let mut status = p.status.clone().unwrap_or_default();
    let now0 = now();

    // Requests.
    let mut req = Requests::default();
    let mut events: Vec<failover::Event> = Vec::new();
    if let Some(v) = new_request(p, requests::FAILOVER) {
        let r = parse_request(&v);
        status
            .handled_requests
            .insert(requests::FAILOVER.into(), r.token.clone());
        match r.to.as_deref().map(|t| names.iter().position(|n| n == t)) {
            Some(None) => events.push(failover::Event {
                reason: "FailoverRefused",
                message: format!(
                    "failover to {:?} refused: no such member (members: {})",
                    r.to.unwrap_or_default(),
                    names.join(", ")
                ),
                warning: true,
            }),
            Some(Some(i)) => {
                req.failover = Some(Some(i));
                req.force = r.force;
            }
            None => {
                req.failover = Some(None);
                req.force = r.force;
            }
        }
    }
    let drill_request = new_request(p, requests::DRILL).map(|v| {
        let token = v.split_whitespace().next().unwrap_or_default().to_string();
        status
            .handled_requests
            .insert(requests::DRILL.into(), token);
    });

    let mut route;
    let mut routed_to;
    let mut obs: Vec<MemberObs>;
    let mut first = true;
    let mut plan;
    let mut views = views;
    let mut drill_events = Vec::new();
    loop {
        // Where the entry sends.
        let found = routes
            .get_opt(&route_name)
            .await
            .map_err(|e| format!("reading HTTPRoute {route_name}: {e}"))?;
        let Some(found) = found else {
            refuse(
                ctx,
                p,
                "MissingRoute",
                format!("spec.entry.httpRoute: HTTPRoute {route_name} does not exist in namespace {ns}; no traffic was moved"),
            )
            .await?;
            return Ok(s.interval);
        };
        routed_to = match entry::routed_to(&found.data["spec"], &services) {
            Ok(r) => r,
            Err(msg) => {
                refuse(
                    ctx,
                    p,
                    "InvalidRoute",
                    format!("HTTPRoute {route_name}: {msg}"),
                )
                .await?;
                return Ok(s.interval);
            }
        };
        route = Some(found);
        let data = data_obs(&names, &views, memory.active, now(), local);
        obs = views
            .iter()
            .zip(data)
            .enumerate()
            .map(|(i, (v, data))| MemberObs {
                name: names[i].clone(),
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
                    names: &names,
                    members: &obs,
                    memory: &memory,
                    routed_to,
                    now: now0,
                    requested: drill_request.is_some(),
                },
                &mut status,
                local,
            );
            if let Some(to) = d.move_to {
                req = Requests {
                    failover: Some(Some(to)),
                    force: false,
                    traffic_only: true,
                };
            }
            drill_events.extend(d.events);
        }
        plan = failover::decide(&Input {
            now: now(),
            policy: s.policy.clone(),
            members: obs.clone(),
            routed_to,
            memory: memory.clone(),
            requests: if first { req } else { Requests::default() },
            fresh_health: first,
        });
        first = false;
        events.extend(plan.events.iter().cloned());
        memory = plan.memory.clone();
        if plan.actions.is_empty() {
            break;
        }
        for a in &plan.actions {
            let result = match *a {
                Action::Fence(i) => match &views[i].conn {
                    Some(c) => postgres::fence(c).await,
                    None => Err("no database connection".into()),
                },
                Action::Promote(i) => match &views[i].conn {
                    Some(c) => postgres::promote(c).await,
                    None => Err("no database connection".into()),
                },
                Action::Route(i) => {
                    let r = route.as_ref().ok_or("no route")?;
                    let ports = names
                        .iter()
                        .map(|n| local.mirrored.get(n).map_or(80, |e| e.service_port))
                        .collect();
                    let entry = EntryRoute::new(&ctx.client, &ns, r, &services, ports);
                    let t = std::time::Instant::now();
                    let res = entry.switch_live(i).await.map_err(|e| e.to_string());
                    ctx.metrics.traffic_switched(t.elapsed());
                    res
                }
            };
            if let Err(e) = result {
                let what = match a {
                    Action::Fence(i) => format!("fencing {}'s database", names[*i]),
                    Action::Promote(i) => format!("promoting {}'s database", names[*i]),
                    Action::Route(i) => format!("routing to {}", names[*i]),
                };
                events.push(failover::Event {
                    reason: "FailoverStepFailed",
                    message: format!("{what}: {e}"),
                    warning: true,
                });
                break;
            }
        }
        if events.iter().any(|e| e.reason == "FailoverStepFailed") {
            break;
        }
        // Re-read the databases (not the health) and the route, and decide again.
        for v in &mut views {
            if let Some(c) = &v.conn {
                v.db = Some(postgres::observe(c, s.timeout.max(Duration::from_secs(2))).await);
            }
        }
    }

    // Drill bookkeeping after the moves of this pass (the route as last read: after the
    // last action, or unchanged when an action failed).
    drill::routed(&status, local, routed_to.map(|i| names[i].as_str()));
    for e in &events {
        if e.reason == "FailoverDone" || e.reason == "FailbackDone" {
            let took = memory
                .last_move
                .zip(
                    p.status
                        .as_ref()
                        .and_then(|s| s.moving.as_ref())
                        .map(|m| timestamp(&m.started)),
                )
                .map(|(a, b)| a.since(b))
                .unwrap_or_default();
            ctx.metrics
                .failed_over(&ns, &name, e.reason == "FailbackDone", took);
            status.failovers += 1;
        }
    }
    for e in events.iter().chain(drill_events.iter()) {
        publish(ctx, p, e.reason, &e.message, e.warning).await;
    }
    if let Some(report) = drill::finished(&mut status) {
        drill::write_report(ctx, p, &report, &mut status).await?;
        let verdict = report.verdict.clone().unwrap_or_default();
        ctx.metrics.drilled(&ns, &name, &verdict);
        publish(
            ctx,
            p,
            if verdict == "Passed" {
                "DrillPassed"
            } else {
                "DrillFailed"
            },
            &drill::summary(&report),
            verdict != "Passed",
        )
        .await;
    }

    // Status.
    let t = time(now());
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
    let hc = &p.spec.health_check;
    status.detection_budget_seconds = Some(
        s.interval.max(s.timeout).as_secs_f64() * f64::from(hc.failure_threshold.max(1))
            + s.timeout.as_secs_f64(),
    );
    status.members = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = memory.counters.get(i).copied().unwrap_or_default();
            let v = &views[i];
            let d = obs[i].data.as_ref();
            MemberStatus {
                name: n.clone(),
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
                    .get(n)
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
        })
        .collect();
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
    let standbys: Vec<(usize, Result<(), String>)> = (0..names.len())
        .filter(|&i| i != memory.active)
        .map(|i| (i, failover::data_gate(&s.policy, &obs[i])))
        .collect();
    if let Some(entry) = &entry_health {
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
    if let Some((_, gate)) = standbys.first() {
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
                Err(e) => format!(
                    "a failover to {} would be refused: {e}",
                    names[standbys[0].0]
                ),
            },
        });
    }
    status.conditions = merge(&status.conditions, &wanted, p.metadata.generation, &t);
    status.observed_generation = p.metadata.generation;
    ctx.metrics
        .set_failover_phase(&ns, &name, status.phase.as_deref().unwrap_or_default());
    write_status(ctx, p, &status).await?;
    Ok(if status.drill.is_some() {
        s.interval.min(Duration::from_millis(250))
    } else {
        s.interval
    })
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
