//! The BlueGreenDeployment reconciler: observe → decide (in `cutover-core`) → act.
//!
//! Each pass reads everything it needs (the colors' Deployments, the four Services, the
//! referenced ConfigMaps and Secrets, the route) from watch caches ([`crate::cache`]), asks
//! [`cutover_core::release::decide`] for a plan, applies the plan's actions in order through
//! the traffic interface ([`crate::traffic`]) and [`crate::objects`], then writes status.
//! Nothing is assumed from why the pass was triggered; [`reconcile_inner`] lists the steps.

pub mod config;
pub mod environments;
pub mod gates;
pub mod render;
pub mod status;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_api::analysis::{AnalysisRun, AnalysisTemplateSpec};
use cutover_api::k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_api::kube::api::DynamicObject;
use cutover_api::kube::api::{DeleteParams, ListParams};
use cutover_api::kube::runtime::controller::Action as Requeue;
use cutover_api::kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use cutover_api::kube::runtime::reflector::{ObjectRef, Store};
use cutover_api::kube::{Api, Client, Resource, ResourceExt as _};
use cutover_api::{
    BlueGreenDeployment, BlueGreenDeploymentStatus, REVISION_ANNOTATION, TEMPLATE_HASH_ANNOTATION,
    requests,
};
use cutover_core::release::{
    self, Action, ColorObservation, Desired, Gate, Gates, Input, Requests, StandbyPolicy,
};
use cutover_core::{Color, PerColor};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cache::{self, User, cached_or_read, lookup};
use crate::clock::now;
use crate::clusters::Clusters;
use crate::endpoint_mirror::{self, Endpoints};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::objects::{
    apply_fields, apply_owned, apply_status, controlled_by, create_once, owned_by, owned_labels,
    owner_reference, revision,
};
use crate::traffic::adopted;
use crate::traffic::live_endpoints::{LiveEndpoints, slice_color};
use crate::traffic::live_selector::LiveSelector;
use crate::traffic::route::{Route, header_of};
use crate::traffic::services::{self, ServiceRole};
use crate::traffic::{Live, RouteKind, Traffic, TrafficProvider as _};
use config::{ConfigKind, ConfigRef};
use environments::Place;

const KIND: &str = "BlueGreenDeployment";

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub events: crate::events::Events,
    /// Clients of the clusters colors run in (`spec.environments`).
    pub clusters: Arc<Clusters>,
    /// The home cluster's watch caches.
    pub cache: cache::Home,
    /// Route objects' watch caches.
    pub routes: Arc<cache::Routes>,
    /// Watch caches of the other places colors run in.
    pub places: cache::Places,
    /// The resourceVersion of each object's last write by this controller, so a pass
    /// never acts on a cached copy older than its own last status (the release's memory).
    pub written: std::sync::Mutex<BTreeMap<(String, String), u64>>,
    /// The configs in use at each place (by BlueGreenDeployment uid and place) when its
    /// snapshots were last pruned: pruning again before that changes would list for nothing.
    pub pruned: std::sync::Mutex<BTreeMap<(String, String), Vec<ConfigRef>>>,
    /// The last Deployment this controller applied for each color (by uid and color): a
    /// hash of what it applied and the generation the API server gave it.
    pub deployed: std::sync::Mutex<BTreeMap<(String, String), (u64, i64)>>,
    /// Owned objects read absent (not read again each pass until they exist).
    pub absent: cache::Absent,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Everything observed about one BlueGreenDeployment.
struct Snapshot {
    /// Where each color runs.
    places: PerColor<Place>,
    /// Whether a color runs away from home (the routed Services mirror endpoints).
    spread: bool,
    /// Each color's ready endpoints where it runs (read when `spread`).
    endpoints: PerColor<Endpoints>,
    /// Each color's Service `<name>-<color>` where it runs (when `spread`).
    color_services: PerColor<Option<Service>>,
    /// The mirrored EndpointSlices at home, by role (when `spread`).
    slices: BTreeMap<&'static str, Option<EndpointSlice>>,
    deployments: PerColor<Option<Deployment>>,
    /// The Services at home, by role.
    services: BTreeMap<&'static str, Option<Service>>,
    configs: Vec<(ConfigRef, config::ConfigData)>,
    /// Resolved analysis templates, per configured gate.
    templates: BTreeMap<String, Vec<(String, AnalysisTemplateSpec)>>,
    /// This BlueGreenDeployment's AnalysisRuns, by name.
    runs: BTreeMap<String, AnalysisRun>,
    /// The route object of a weighted provider (HTTPRoute, VirtualService, TrafficSplit).
    route: Option<DynamicObject>,
    /// The owned objects this pass knows first hand to be this BlueGreenDeployment's or
    /// absent ([`cache::Checked::Now`]), by [`checked_key`]: writing one of them needs no
    /// read before (`objects::apply_owned`).
    checked: BTreeSet<String>,
}

impl Snapshot {
    /// Record how the pass knows `kind` `name` at `place`.
    fn note(&mut self, how: cache::Checked, kind: &str, place: &str, name: &str) {
        if how == cache::Checked::Now {
            self.checked.insert(checked_key(kind, place, name));
        }
    }

    /// Whether this pass knows first hand that `kind` `name` at `place` is absent or ours.
    fn checked(&self, kind: &str, place: &str, name: &str) -> bool {
        self.checked.contains(&checked_key(kind, place, name))
    }

    /// [`Self::checked`] for a home Service without a selector and its mirrored
    /// EndpointSlice, both named `name`.
    fn checked_mirror(&self, name: &str) -> bool {
        self.checked("Service", "", name) && self.checked("EndpointSlice", "", name)
    }
}

fn checked_key(kind: &str, place: &str, name: &str) -> String {
    format!("{kind}/{place}/{name}")
}

/// Why the controller will not act on this object (no traffic is touched).
#[derive(Debug)]
pub struct Refusal {
    reason: &'static str,
    message: String,
}

fn role_key(role: ServiceRole) -> &'static str {
    match role {
        ServiceRole::Live => "live",
        ServiceRole::Preview => "preview",
        ServiceRole::Color(Color::Blue) => "blue",
        ServiceRole::Color(Color::Green) => "green",
    }
}

/// An object of the name the controller would use exists and is not this
/// BlueGreenDeployment's: it is never touched.
fn not_owned(kind: &str, name: &str, place: Option<&Place>) -> Refusal {
    let at = place
        .filter(|p| !p.home)
        .map(|p| format!(" in {}", p.describe()))
        .unwrap_or_default();
    Refusal {
        reason: "OwnershipConflict",
        message: format!(
            "{kind} {name}{at} exists and is not owned by this BlueGreenDeployment; rename or delete it"
        ),
    }
}

/// Checks the controller makes before it acts: what the schema cannot express.
fn refuse_unsupported(bgd: &BlueGreenDeployment) -> Option<Refusal> {
    let spec = &bgd.spec;
    let routing = spec.traffic_routing.as_ref();
    let smi = routing.is_some_and(|r| r.smi.is_some());
    if smi
        && spec
            .strategy
            .steps
            .iter()
            .any(|s| s.set_header_route.is_some() || s.set_mirror.is_some())
    {
        return Some(Refusal {
            reason: "UnsupportedStep",
            message: "spec.strategy.steps: SMI TrafficSplits have no header routes or mirroring; use gatewayAPI or istio for setHeaderRoute and setMirror".into(),
        });
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in spec.selector.match_labels.iter().flatten() {
        if template_labels.get(k) != Some(v) {
            return Some(Refusal {
                reason: "SelectorMismatch",
                message: format!(
                    "spec.selector.matchLabels: {k}={v} is not among spec.template.metadata.labels"
                ),
            });
        }
    }
    None
}

/// The ConfigMaps and Secrets `bgd` references in its namespace: its template's, and the
/// kubeconfig Secrets of its colors' clusters.
pub fn referenced_names(bgd: &BlueGreenDeployment, workloads: &Store<Deployment>) -> Vec<String> {
    // With a workloadRef, the template is the Deployment's (when it is cached).
    let adopted = bgd.spec.workload_ref.as_ref().and_then(|w| {
        let ns = bgd.namespace().unwrap_or_default();
        workloads.get(&ObjectRef::new(&w.name).within(&ns))
    });
    let template = adopted
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .map_or(&bgd.spec.template, |s| &s.template);
    let mut names: Vec<String> = config::referenced(template)
        .into_iter()
        .map(|r| r.name)
        .collect();
    if let Some(envs) = &bgd.spec.environments {
        for env in [&envs.blue, &envs.green].into_iter().flatten() {
            if let Some(c) = &env.cluster_ref {
                names.push(c.secret_name.clone());
            }
        }
    }
    names
}

/// The watch cache of `place` (another namespace or cluster), synced, or why it is not.
async fn place_cache(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    place: &Place,
) -> Result<Arc<cache::PlaceCache>, Error> {
    let user = user_of(bgd);
    let cache = ctx
        .places
        .watch(&place.key, &place.watch_client, &place.namespace, &user);
    cache.synced().await.map_err(|message| Error::Remote {
        what: format!("watching {}", place.describe()),
        message,
    })?;
    Ok(cache)
}

fn user_of(bgd: &BlueGreenDeployment) -> User {
    User::Release(bgd.namespace().unwrap_or_default(), bgd.name_any())
}

async fn observe(
    bgd: &BlueGreenDeployment,
    ns: &str,
    ctx: &Context,
) -> Result<Result<Snapshot, Refusal>, Error> {
    let client = &ctx.client;
    let name = bgd.name_any();
    let uid = bgd.metadata.uid.clone().unwrap_or_default();
    let user = user_of(bgd);
    // A place this BlueGreenDeployment already watches exists (its namespace was checked).
    let known = |p: &Place| ctx.places.watching(&p.key, &user);
    let places = match environments::places(bgd, client, &ctx.clusters, known).await? {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Away from home every color's place is watched (its endpoints are mirrored home).
    let keys: Vec<String> = if environments::spread(bgd) {
        Color::ALL
            .iter()
            .map(|c| places.get(*c).key.clone())
            .collect()
    } else {
        Vec::new()
    };
    ctx.places.retain(&user, &keys);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut snap = Snapshot {
        spread: environments::spread(bgd),
        places,
        endpoints: PerColor::default(),
        color_services: PerColor::default(),
        slices: BTreeMap::new(),
        deployments: PerColor::default(),
        services: BTreeMap::new(),
        configs: Vec::new(),
        templates: BTreeMap::new(),
        runs: BTreeMap::new(),
        route: None,
        checked: BTreeSet::new(),
    };
    if let Some((kind, route)) = RouteKind::of(bgd) {
        let found = ctx
            .routes
            .get(&kind.api_resource(), ns, &route)
            .await
            .map_err(|source| Error::Read {
                kind: kind.kind(),
                name: route.clone(),
                source,
            })?;
        match found {
            // Cutover creates the TrafficSplit it owns on the first switch.
            None if kind.owned() => {}
            None => {
                return Ok(Err(Refusal {
                    reason: "MissingRoute",
                    message: format!(
                        "spec.trafficRouting: {} {route} does not exist in namespace {ns}; no traffic was moved",
                        kind.kind()
                    ),
                }));
            }
            Some(found) => {
                if kind.owned() && !controlled_by(&found.metadata, bgd) {
                    return Ok(Err(Refusal {
                        reason: "OwnershipConflict",
                        message: format!(
                            "{} {route} exists and is not owned by this BlueGreenDeployment",
                            kind.kind()
                        ),
                    }));
                }
                if let Err(message) = kind.observe(&found.data["spec"], bgd, &route) {
                    return Ok(Err(Refusal {
                        reason: "InvalidRoute",
                        message,
                    }));
                }
                snap.route = Some(found);
            }
        }
    }
    for color in Color::ALL {
        let place = snap.places.get(color);
        let deployments: Api<Deployment> = Api::namespaced(place.client.clone(), &place.namespace);
        let dname = render::deployment_name(&name, color);
        let store = if place.home {
            ctx.cache.deployments.clone()
        } else {
            place_cache(bgd, ctx, place).await?.deployments.clone()
        };
        let cached = cache::deployment(&store, &place.namespace, &dname);
        let (d, how) = cached_or_read(
            cached,
            &deployments,
            &dname,
            &ctx.absent,
            (&uid, &place.key),
        )
        .await
        .map_err(|e| environments::read_error(place, "Deployment", &dname, e))?;
        if let Some(d) = &d
            && !owned_by(&d.metadata, bgd)
        {
            return Ok(Err(not_owned("Deployment", &dname, Some(place))));
        }
        let key = place.key.clone();
        snap.note(how, "Deployment", &key, &dname);
        *snap.deployments.get_mut(color) = d;
    }
    for role in ServiceRole::ALL {
        let sname = role.service_name(&name);
        let (s, how) = cached_or_read(
            cache::service(&ctx.cache.services, ns, &sname),
            &services,
            &sname,
            &ctx.absent,
            (&uid, ""),
        )
        .await
        .map_err(|source| Error::Read {
            kind: "Service",
            name: sname.clone(),
            source,
        })?;
        // With a workloadRef, the user's Service of this name is switched, never owned.
        let adopted =
            role == ServiceRole::Live && s.as_ref().is_some_and(|s| adopted::adoptable(s, bgd));
        if let Some(s) = &s
            && !owned_by(&s.metadata, bgd)
            && !adopted
        {
            return Ok(Err(not_owned("Service", &sname, None)));
        }
        snap.note(how, "Service", "", &sname);
        snap.services.insert(role_key(role), s);
    }
    if snap.spread
        && let Err(refusal) = observe_spread(bgd, ns, ctx, &mut snap).await?
    {
        return Ok(Err(refusal));
    }
    for r in config::referenced(&bgd.spec.template) {
        let data = match r.kind {
            ConfigKind::ConfigMap => ctx
                .cache
                .configs
                .config_map(ns, &r.name)
                .await
                .map_err(|source| Error::Read {
                    kind: "ConfigMap",
                    name: r.name.clone(),
                    source,
                })?
                .map(|cm| {
                    let mut d: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    for (k, v) in cm.binary_data.unwrap_or_default() {
                        d.insert(k, v.0);
                    }
                    d
                }),
            ConfigKind::Secret => ctx
                .cache
                .configs
                .secret(ns, &r.name)
                .await
                .map_err(|source| Error::Read {
                    kind: "Secret",
                    name: r.name.clone(),
                    source,
                })?
                .map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect()
                }),
        };
        if data.is_none() && !r.optional {
            return Ok(Err(Refusal {
                reason: "MissingConfig",
                message: format!(
                    "spec.template references {} {}, which does not exist; create it (or mark the reference optional)",
                    r.kind.as_str(),
                    r.name
                ),
            }));
        }
        snap.configs.push((r, data));
    }
    for (gate, reference) in gates::gates(bgd) {
        let mut resolved = Vec::new();
        for t in &reference.templates {
            let spec = if t.cluster_scope {
                ctx.cache
                    .cluster_templates
                    .get(&ObjectRef::new(&t.template_name))
                    .map(|c| AnalysisTemplateSpec {
                        args: c.spec.args.clone(),
                        metrics: c.spec.metrics.clone(),
                    })
            } else {
                lookup(&ctx.cache.templates, ns, &t.template_name).map(|t| t.spec)
            };
            let Some(spec) = spec else {
                let kind = if t.cluster_scope {
                    "ClusterAnalysisTemplate"
                } else {
                    "AnalysisTemplate"
                };
                return Ok(Err(Refusal {
                    reason: "MissingAnalysisTemplate",
                    message: format!(
                        "{kind} {} (used by the {} analysis) does not exist",
                        t.template_name,
                        gate.name()
                    ),
                }));
            };
            resolved.push((t.template_name.clone(), spec));
        }
        // Check now that every argument resolves, so a release never starts a gate it
        // cannot run.
        if let Err(message) = gates::build_run(bgd, gate, 0, 0, Color::Green, reference, &resolved)?
        {
            return Ok(Err(Refusal {
                reason: "InvalidAnalysis",
                message,
            }));
        }
        snap.templates.insert(gate.name(), resolved);
    }
    if !snap.templates.is_empty() {
        for r in ctx.cache.runs.state() {
            let labelled = r.labels().get(cutover_api::INSTANCE_LABEL) == Some(&name);
            if r.namespace().as_deref() == Some(ns) && labelled && controlled_by(&r.metadata, bgd) {
                snap.runs.insert(r.name_any(), r.as_ref().clone());
            }
        }
    }
    Ok(Ok(snap))
}

/// The colors' Services and endpoints where they run, and the mirrored EndpointSlices at
/// home (`spec.environments`).
async fn observe_spread(
    bgd: &BlueGreenDeployment,
    ns: &str,
    ctx: &Context,
    snap: &mut Snapshot,
) -> Result<Result<(), Refusal>, Error> {
    let name = bgd.name_any();
    let uid = bgd.metadata.uid.clone().unwrap_or_default();
    let port_name = services::port_name(bgd);
    for color in Color::ALL {
        let place = snap.places.get(color).clone();
        let sname = ServiceRole::Color(color).service_name(&name);
        let cache = place_cache(bgd, ctx, &place).await?;
        let svc = if place.home {
            snap.services
                .get(role_key(ServiceRole::Color(color)))
                .cloned()
                .flatten()
        } else {
            let api: Api<Service> = Api::namespaced(place.client.clone(), &place.namespace);
            let (s, how) = cached_or_read(
                cache::service(&cache.services, &place.namespace, &sname),
                &api,
                &sname,
                &ctx.absent,
                (&uid, &place.key),
            )
            .await
            .map_err(|e| environments::read_error(&place, "Service", &sname, e))?;
            if let Some(s) = &s
                && !owned_by(&s.metadata, bgd)
            {
                return Ok(Err(not_owned("Service", &sname, Some(&place))));
            }
            snap.note(how, "Service", &place.key, &sname);
            s
        };
        *snap.color_services.get_mut(color) = svc;
        *snap.endpoints.get_mut(color) =
            cache.endpoints(&place.namespace, &sname, bgd.spec.service.port, &port_name);
    }
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    for role in ServiceRole::ALL {
        if let ServiceRole::Color(c) = role
            && snap.places.get(c).home
        {
            continue;
        }
        let sname = role.service_name(&name);
        let (slice, how) = cached_or_read(
            lookup(&ctx.cache.slices, ns, &sname),
            &slices,
            &sname,
            &ctx.absent,
            (&uid, ""),
        )
        .await
        .map_err(|source| Error::Read {
            kind: "EndpointSlice",
            name: sname.clone(),
            source,
        })?;
        if let Some(s) = &slice
            && !owned_by(&s.metadata, bgd)
        {
            return Ok(Err(not_owned("EndpointSlice", &sname, None)));
        }
        snap.note(how, "EndpointSlice", "", &sname);
        snap.slices.insert(role_key(role), slice);
    }
    Ok(Ok(()))
}

fn color_observation(d: Option<&Deployment>) -> ColorObservation {
    let Some(d) = d else {
        return ColorObservation::default();
    };
    let ann = d.metadata.annotations.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    ColorObservation {
        exists: true,
        template_hash: ann.get(TEMPLATE_HASH_ANNOTATION).cloned(),
        revision: ann.get(REVISION_ANNOTATION).and_then(|r| r.parse().ok()),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: st.observed_generation.unwrap_or(0),
        spec_replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        replicas: st.replicas.unwrap_or(0),
        updated_replicas: st.updated_replicas.unwrap_or(0),
        ready_replicas: st.ready_replicas.unwrap_or(0),
        available_replicas: st.available_replicas.unwrap_or(0),
    }
}

/// The size the live color runs at: `spec.replicas`, or less while a regional
/// FailoverPolicy keeps this member at its pilot-light size.
fn serving_replicas(bgd: &BlueGreenDeployment) -> i32 {
    match bgd.pilot_light_replicas() {
        Some(n) => n.min(bgd.spec.replicas),
        None => bgd.spec.replicas,
    }
}

fn desired(bgd: &BlueGreenDeployment, template_hash: String) -> Desired {
    let s = &bgd.spec.strategy;
    let auto = s.auto_promotion.clone().unwrap_or_default();
    let standby = s.standby.clone().unwrap_or_default();
    let secs = |n: i64| Duration::from_secs(u64::try_from(n).unwrap_or(0));
    Desired {
        template_hash,
        replicas: serving_replicas(bgd),
        auto_promotion: auto.enabled.then(|| secs(auto.after_seconds)),
        standby: match standby.mode {
            cutover_api::blue_green::StandbyMode::Warm => StandbyPolicy::Warm,
            cutover_api::blue_green::StandbyMode::ScaleDown => {
                StandbyPolicy::ScaleDownAfter(secs(standby.scale_down_delay_seconds))
            }
            cutover_api::blue_green::StandbyMode::Zero => StandbyPolicy::Zero,
        },
        progress_deadline: secs(s.progress_deadline_seconds.unwrap_or(600)),
        abort_on_deadline: s.abort_on_deadline,
        paused: bgd.spec.paused,
        analysis: Gates {
            pre: s.pre_promotion_analysis.is_some(),
            background: s.background_analysis.is_some(),
            post: s.post_promotion_analysis.is_some(),
            step: false,
        },
        steps: s.steps.iter().map(core_step).collect(),
    }
}

/// A spec step as the core sees it.
fn core_step(step: &cutover_api::blue_green::Step) -> release::Step {
    if let Some(w) = step.set_weight {
        return release::Step::SetWeight(u8::try_from(w.clamp(0, 100)).unwrap_or(100));
    }
    if let Some(p) = &step.pause {
        let d = p
            .duration
            .as_deref()
            .and_then(|d| d.parse::<cutover_api::kube::core::Duration>().ok())
            .map(Duration::from);
        return release::Step::Pause(d);
    }
    if step.analysis.is_some() {
        return release::Step::Analysis;
    }
    if let Some(h) = &step.set_header_route {
        return release::Step::SetHeaderRoute(!h.matches.is_empty());
    }
    let pct = step
        .set_mirror
        .as_ref()
        .map_or(0, |m| m.percent.clamp(0, 100));
    release::Step::SetMirror(u8::try_from(pct).unwrap_or(0))
}

/// New request annotations: those whose value differs from the handled one.
fn new_requests(bgd: &BlueGreenDeployment) -> (Requests, BTreeMap<String, String>) {
    let ann = bgd.annotations();
    let handled = bgd
        .status
        .as_ref()
        .map(|s| s.handled_requests.clone())
        .unwrap_or_default();
    let mut now_handled = handled.clone();
    let mut is_new = |key: &str| match ann.get(key) {
        Some(v) if handled.get(key) != Some(v) => {
            now_handled.insert(key.to_string(), v.clone());
            true
        }
        _ => false,
    };
    let req = Requests {
        promote: is_new(requests::PROMOTE),
        promote_full: is_new(requests::PROMOTE_FULL),
        abort: is_new(requests::ABORT),
        retry: is_new(requests::RETRY),
    };
    (req, now_handled)
}

/// Reconcile one BlueGreenDeployment.
pub async fn reconcile(bgd: Arc<BlueGreenDeployment>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    // Status is the release's memory. A cached object older than this controller's own
    // last write would replay a step already taken: wait for the write's watch event (it
    // triggers the next pass); the short requeue only guards against a lost event.
    if behind(&ctx, &bgd) {
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    // A pass on caches that have not listed yet would take what exists for missing.
    if tokio::time::timeout(Duration::from_secs(30), ctx.cache.ready())
        .await
        .is_err()
    {
        return Err(Error::NotSynced);
    }
    let uid = bgd.metadata.uid.clone().unwrap_or_default();
    let result =
        if environments::spread(&bgd) || bgd.spec.workload_ref.is_some() || has_finalizer(&bgd) {
            // Objects away from home have no owner reference to go with: the finalizer deletes
            // them first. It is added before anything is made there. An adopted Deployment
            // (workloadRef) is given its size back under the same finalizer.
            let api: Api<BlueGreenDeployment> =
                Api::namespaced(ctx.client.clone(), &bgd.namespace().unwrap_or_default());
            let name = bgd.name_any();
            finalizer(&api, environments::FINALIZER, bgd, |event| async {
                match event {
                    FinalizerEvent::Apply(b) => reconcile_inner(&b, &ctx).await,
                    FinalizerEvent::Cleanup(b) => {
                        finalize(&b, &ctx).await?;
                        forget(&ctx, &b);
                        Ok(Requeue::await_change())
                    }
                }
            })
            .await
            .map_err(|e| Error::from_finalizer(e, name))
        } else if bgd.metadata.deletion_timestamp.is_some() {
            // Owned objects go with it (owner references). Nothing to route.
            forget(&ctx, &bgd);
            Ok(Requeue::await_change())
        } else {
            reconcile_inner(&bgd, &ctx).await
        };
    if let Err(Error::Taken { .. }) = &result {
        // Made since a pass read it absent: the next pass reads again and refuses.
        ctx.absent.forget_owner(&uid);
    }
    ctx.metrics.reconcile_finished(KIND, started.elapsed());
    result
}

fn key_of(bgd: &BlueGreenDeployment) -> (String, String) {
    (bgd.namespace().unwrap_or_default(), bgd.name_any())
}

/// Whether the cached `bgd` predates this controller's last write to it.
fn behind(ctx: &Context, bgd: &BlueGreenDeployment) -> bool {
    let Ok(written) = ctx.written.lock() else {
        return false;
    };
    match (written.get(&key_of(bgd)), revision(&bgd.metadata)) {
        (Some(w), Some(seen)) => seen < *w,
        _ => false,
    }
}

/// Remember the resourceVersion this controller's write to `bgd` produced.
fn wrote(ctx: &Context, bgd: &BlueGreenDeployment, written_meta: &ObjectMeta) {
    if let (Some(v), Ok(mut written)) = (revision(written_meta), ctx.written.lock()) {
        written.insert(key_of(bgd), v);
    }
}

/// A BlueGreenDeployment is gone: forget its series, its last write and its places.
pub fn forget(ctx: &Context, bgd: &BlueGreenDeployment) {
    let (ns, name) = key_of(bgd);
    ctx.metrics.forget(&ns, &name);
    if let Ok(mut written) = ctx.written.lock() {
        written.remove(&(ns, name));
    }
    ctx.places.retain(&user_of(bgd), &[]);
    let uid = bgd.metadata.uid.clone().unwrap_or_default();
    if let Ok(mut pruned) = ctx.pruned.lock() {
        pruned.retain(|(u, _), _| *u != uid);
    }
    if let Ok(mut deployed) = ctx.deployed.lock() {
        deployed.retain(|(u, _), _| *u != uid);
    }
    ctx.absent.forget_owner(&uid);
}

/// One pass over a BlueGreenDeployment, in order: take the template from its workload
/// (`workloadRef`), observe what is there, decide (in the core), make sure its Services
/// exist, act, publish what changed, write the status, scale the adopted workload.
async fn reconcile_inner(bgd: &BlueGreenDeployment, ctx: &Context) -> Result<Requeue, Error> {
    let ns = bgd
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let resolved = match adopt(bgd, ctx, &ns).await? {
        Ok(resolved) => resolved,
        Err(refusal) => return refuse(bgd, ctx, &ns, &refusal).await,
    };
    let bgd = resolved.as_ref().unwrap_or(bgd);
    let snap = match observed(bgd, &ns, ctx).await? {
        Observation::Ready(snap) => snap,
        Observation::Refused(refusal) => return refuse(bgd, ctx, &ns, &refusal).await,
        Observation::Unreachable(why) => return unreachable(bgd, ctx, &ns, &why).await,
    };
    let template_hash = config::template_hash(&bgd.spec.template, &snap.configs);
    let traffic = traffic_of(bgd, ctx, &snap);
    let input = input(bgd, &snap, &traffic, &template_hash)?;
    let plan = release::decide(&input);
    tracing::debug!(?plan, "plan");
    ensure_services(bgd, ctx, &ns, &snap).await?;
    for action in &plan.actions {
        act(bgd, ctx, &ns, &snap, &template_hash, action, &traffic).await?;
    }
    if plan.actions.is_empty() && plan.memory.release.is_none() {
        // Settled: config snapshots neither color uses any more can go.
        prune_snapshots(bgd, ctx, &snap).await?;
    }
    announce(bgd, ctx, &ns, &plan.transitions).await;
    let workload = workload_condition(bgd, ctx, &ns).await;
    let autoscaled = workload.as_ref().is_some_and(|w| w.status);
    let st = status_of(bgd, &snap, &input, &plan, template_hash, workload);
    ctx.metrics
        .set_phase(&ns, &bgd.name_any(), &format!("{:?}", plan.phase));
    ctx.metrics.set_weight(&ns, &bgd.name_any(), plan.weight);
    write_status(bgd, ctx, st).await?;
    if !autoscaled {
        scale_workload(bgd, ctx, &ns, &snap, &plan).await?;
    }
    // Every object a pass reads is watched (at home and at the colors' places), so a change
    // triggers the next pass; the long resync is only a safety net, and costs no request.
    Ok(Requeue::requeue(
        plan.requeue_after.unwrap_or(Duration::from_secs(300)),
    ))
}

/// With `spec.workloadRef`: `bgd` with the Deployment's selector and template (whose
/// configs are then referenced, so their data is cached).
async fn adopt(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Option<BlueGreenDeployment>, Refusal>, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let resolved = workload::resolve(bgd, &ctx.cache.workloads, &api).await?;
    if let Ok(Some(b)) = &resolved {
        for r in config::referenced(&b.spec.template) {
            ctx.cache.referenced.add(ns, &r.name);
        }
    }
    Ok(resolved)
}

/// With `spec.workloadRef`: whether a HorizontalPodAutoscaler still scales the adopted
/// Deployment (condition `WorkloadAutoscaled`, with a Warning Event when it turns true).
async fn workload_condition(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
) -> Option<crate::conditions::Wanted> {
    let wref = bgd.spec.workload_ref.as_ref()?;
    let hpa = workload::autoscaler_of(&ctx.cache.autoscalers, ns, &wref.name);
    let wanted = workload::autoscaled_condition(bgd, &wref.name, hpa.as_deref());
    if wanted.status && !workload::autoscaled(bgd) {
        publish(ctx, bgd, "AutoscalerTargetsWorkload", &wanted.message, true).await;
    }
    Some(wanted)
}

/// With `spec.workloadRef`: scale the adopted Deployment down as `scaleDown` says, once
/// the color serving in its place has pods ready. Not called while an autoscaler still
/// scales it (the two would fight; `WorkloadAutoscaled` says what to change).
async fn scale_workload(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
    plan: &release::Plan,
) -> Result<(), Error> {
    let Some(wref) = &bgd.spec.workload_ref else {
        return Ok(());
    };
    let Some(d) = lookup(&ctx.cache.workloads, ns, &wref.name) else {
        return Ok(());
    };
    // The live color, or before the first switch the color being rolled out.
    let serving = plan.memory.active.or_else(|| {
        Color::ALL
            .into_iter()
            .find(|c| snap.deployments.get(*c).is_some())
    });
    let live_ready = serving.map(|c| observed_color(snap, c).available_replicas);
    let settled = plan.memory.active.is_some()
        && plan.phase == release::Phase::Healthy
        && live_ready.is_some_and(|r| r >= serving_replicas(bgd));
    let before = workload::replicas_before(&d);
    let Some(replicas) = workload::wanted_replicas(wref.scale_down, before, live_ready, settled)
    else {
        return Ok(());
    };
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    workload::scale(&api, &d, replicas).await
}

/// What a pass found.
enum Observation {
    /// Everything it needs.
    Ready(Box<Snapshot>),
    /// A spec it will not act on (no traffic is touched).
    Refused(Refusal),
    /// A color's place does not answer: the release waits.
    Unreachable(String),
}

/// Observe `bgd`, or say why the pass stops here.
async fn observed(
    bgd: &BlueGreenDeployment,
    ns: &str,
    ctx: &Context,
) -> Result<Observation, Error> {
    if let Some(r) = refuse_unsupported(bgd) {
        return Ok(Observation::Refused(r));
    }
    match observe(bgd, ns, ctx).await {
        Ok(Ok(snap)) => Ok(Observation::Ready(Box::new(snap))),
        Ok(Err(refusal)) => Ok(Observation::Refused(refusal)),
        Err(Error::Remote { what, message }) => {
            Ok(Observation::Unreachable(format!("{what}: {message}")))
        }
        Err(e) => Err(e),
    }
}

/// Not acting: Degraded with the reason, one Event per new message; looked at again in a
/// minute (or when something it reads changes).
async fn refuse(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    refusal: &Refusal,
) -> Result<Requeue, Error> {
    tracing::warn!(reason = refusal.reason, "not acting: {}", refusal.message);
    let old = bgd.status.clone().unwrap_or_default();
    let mut st = old.clone();
    st.phase = Some(cutover_api::Phase::Degraded);
    st.message = Some(refusal.message.clone());
    st.observed_generation = bgd.metadata.generation;
    let wanted = status::invalid_spec_conditions(refusal.reason, &refusal.message);
    st.conditions = crate::conditions::merge(
        &old.conditions,
        &wanted,
        bgd.metadata.generation,
        &crate::clock::time(now()),
    );
    if old.message != st.message || old.phase != st.phase {
        publish(ctx, bgd, refusal.reason, &refusal.message, true).await;
    }
    ctx.metrics.set_phase(ns, &bgd.name_any(), "Degraded");
    write_status(bgd, ctx, st).await?;
    Ok(Requeue::requeue(Duration::from_secs(60)))
}

/// What the core decides on: the spec, the analysis gates, the traffic as read back, the
/// colors, and the memory in status.
fn input(
    bgd: &BlueGreenDeployment,
    snap: &Snapshot,
    traffic: &Traffic<'_>,
    template_hash: &str,
) -> Result<Input, Error> {
    let name = bgd.name_any();
    let observed = traffic.read()?;
    let preview = if snap.spread {
        snap.slices
            .get("preview")
            .and_then(|s| s.as_ref())
            .and_then(slice_color)
    } else {
        snap.services
            .get("preview")
            .and_then(|s| s.as_ref())
            .and_then(services::selected_color)
    };
    let memory = status::memory_from(bgd.status.as_ref());
    let run_of = |gate: Gate| {
        let r = memory.release.as_ref()?;
        let run = snap
            .runs
            .get(&gates::run_name(&name, r.revision, r.attempt, gate))?;
        Some(gates::gate_result(run))
    };
    let gates = Gates {
        pre: run_of(Gate::PrePromotion),
        background: run_of(Gate::Background),
        post: run_of(Gate::PostPromotion),
        step: memory
            .release
            .as_ref()
            .and_then(|r| run_of(Gate::Step(r.step_index))),
    };
    let (requests, _) = new_requests(bgd);
    Ok(Input {
        now: now(),
        desired: desired(bgd, template_hash.to_string()),
        analysis: gates,
        traffic: observed.split,
        memory,
        colors: PerColor {
            blue: observed_color(snap, Color::Blue),
            green: observed_color(snap, Color::Green),
        },
        live: observed.live,
        preview,
        requests,
    })
}

/// The per-color Services (and, with a color away from home, the mirrored ones).
async fn ensure_services(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
) -> Result<(), Error> {
    if snap.spread {
        ensure_spread_services(bgd, ctx, ns, snap).await
    } else {
        ensure_color_services(bgd, ctx, ns, snap).await
    }
}

/// Log, publish and count the release's transitions of this pass.
async fn announce(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    transitions: &[release::Transition],
) {
    let name = bgd.name_any();
    for t in transitions {
        tracing::info!(reason = t.reason, "{}", t.message);
        publish(ctx, bgd, t.reason, &t.message, t.warning).await;
        match t.reason {
            "Promoted" => ctx.metrics.promoted(ns, &name),
            "Aborted" => ctx.metrics.rolled_back(ns, &name, "abort"),
            // A warning when analysis failed after promotion; normal for an undo.
            "RolledBack" if t.warning => ctx.metrics.rolled_back(ns, &name, "analysis"),
            "RolledBack" => ctx.metrics.rolled_back(ns, &name, "undo"),
            _ => {}
        }
    }
}

/// The status after this pass.
fn status_of(
    bgd: &BlueGreenDeployment,
    snap: &Snapshot,
    input: &Input,
    plan: &release::Plan,
    template_hash: String,
    workload: Option<crate::conditions::Wanted>,
) -> BlueGreenDeploymentStatus {
    let old = bgd.status.clone().unwrap_or_default();
    let mut st = old.clone();
    status::write_memory(&mut st, &plan.memory);
    st.phase = Some(status::api_phase(plan.phase));
    st.message = Some(plan.message.clone());
    st.weight = plan.weight;
    st.current_step_index = Some(plan.memory.release.as_ref().map_or(
        i32::try_from(bgd.spec.strategy.steps.len()).unwrap_or(0),
        |r| i32::try_from(r.step_index).unwrap_or(0),
    ));
    st.observed_generation = bgd.metadata.generation;
    st.handled_requests = new_requests(bgd).1;
    st.current_template_hash = Some(template_hash);
    st.blue = color_status(
        &input.colors.blue,
        snap.deployments.blue.as_ref(),
        &snap.places.blue,
    );
    st.green = color_status(
        &input.colors.green,
        snap.deployments.green.as_ref(),
        &snap.places.green,
    );
    if let Some(active) = plan.memory.active {
        st.replicas = input.colors.get(active).ready_replicas;
    }
    st.selector = Some(selector_string(bgd, plan.memory.active));
    let mut wanted = status::conditions_for(plan.phase, plan.cause, &plan.message);
    wanted.extend(workload);
    st.conditions = crate::conditions::merge(
        &old.conditions,
        &wanted,
        bgd.metadata.generation,
        &crate::clock::time(now()),
    );
    st
}

/// A color's namespace or cluster did not answer: touch no release state, keep the
/// mirrored endpoints of the colors that answer in step with their pods, and say why the
/// release waits.
async fn unreachable(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    why: &str,
) -> Result<Requeue, Error> {
    let old_status = &bgd.status.clone().unwrap_or_default();
    let name = bgd.name_any();
    ctx.metrics.reconcile_failed(KIND, "remote");
    if let Err(e) = keep_mirrors(bgd, ctx, ns).await {
        tracing::warn!(namespace = %ns, name = %name, error = %e, "refreshing the mirrored endpoints");
    }
    let message = format!("{why}; the release waits, traffic stays where it is");
    tracing::warn!(namespace = %ns, name = %name, "{message}");
    let mut st = old_status.clone();
    st.phase = Some(cutover_api::Phase::Degraded);
    st.message = Some(message.clone());
    st.conditions = crate::conditions::merge(
        &old_status.conditions,
        &status::unreachable_conditions(&message),
        bgd.metadata.generation,
        &crate::clock::time(now()),
    );
    if old_status.message != st.message {
        publish(ctx, bgd, "ClusterUnreachable", &message, true).await;
    }
    ctx.metrics.set_phase(ns, &name, "Degraded");
    write_status(bgd, ctx, st).await?;
    Ok(Requeue::requeue(UNREACHABLE_RESYNC))
}

/// Rewrite each mirrored EndpointSlice at home whose color can be reached and whose
/// endpoints there changed. Colors that cannot be reached keep their last endpoints.
async fn keep_mirrors(bgd: &BlueGreenDeployment, ctx: &Context, ns: &str) -> Result<(), Error> {
    let name = bgd.name_any();
    let port_name = services::port_name(bgd);
    let mut places: PerColor<Option<Place>> = PerColor::default();
    for color in Color::ALL {
        if let Ok(Ok(p)) = environments::place_of(bgd, color, &ctx.client, &ctx.clusters).await {
            *places.get_mut(color) = Some(p);
        }
    }
    for role in ServiceRole::ALL {
        let sname = role.service_name(&name);
        let Some(slice) = lookup(&ctx.cache.slices, ns, &sname) else {
            continue;
        };
        if !owned_by(&slice.metadata, bgd) {
            continue;
        }
        let Some(color) = slice_color(&slice) else {
            continue;
        };
        let Some(place) = places.get(color) else {
            continue;
        };
        let source = ServiceRole::Color(color).service_name(&name);
        // Only a place whose watch answers has endpoints worth copying.
        let Ok(cache) = place_cache(bgd, ctx, place).await else {
            continue;
        };
        let eps = cache.endpoints(&place.namespace, &source, bgd.spec.service.port, &port_name);
        if mirrors(&slice, color, &eps, &port_name) {
            continue;
        }
        let want = crate::traffic::live_endpoints::role_slice(bgd, role, color, &eps)?;
        endpoint_mirror::apply_slice(&ctx.client, ns, &want)
            .await
            .map_err(|source| Error::Apply {
                kind: "EndpointSlice",
                name: sname.clone(),
                source,
            })?;
        tracing::info!(namespace = %ns, name = %name, slice = %sname, color = %color, "followed the pods of a reachable color");
    }
    Ok(())
}

/// How often a BlueGreenDeployment waiting for an unreachable place is looked at again
/// (the place's watch also triggers a pass when it answers again).
const UNREACHABLE_RESYNC: Duration = Duration::from_secs(10);

/// A color as the release sees it. Away from home, a pod counts as ready only once its
/// address is among the color's ready endpoints (what the mirrored Services send to), so
/// traffic never moves to a color before it can be reached.
fn observed_color(snap: &Snapshot, color: Color) -> ColorObservation {
    let mut obs = color_observation(snap.deployments.get(color).as_ref());
    if snap.spread {
        let reachable =
            i32::try_from(snap.endpoints.get(color).addresses.len()).unwrap_or(i32::MAX);
        obs.ready_replicas = obs.ready_replicas.min(reachable);
        obs.available_replicas = obs.available_replicas.min(reachable);
    }
    obs
}

fn has_finalizer(bgd: &BlueGreenDeployment) -> bool {
    bgd.finalizers()
        .iter()
        .any(|f| f == environments::FINALIZER)
}

/// Delete what this BlueGreenDeployment owns away from home (the finalizer then lets it go).
async fn finalize(bgd: &BlueGreenDeployment, ctx: &Context) -> Result<(), Error> {
    if let Some(wref) = &bgd.spec.workload_ref {
        // The adopted Deployment serves again before the colors go.
        let api: Api<Deployment> =
            Api::namespaced(ctx.client.clone(), &bgd.namespace().unwrap_or_default());
        if let Some(d) = crate::objects::get(&api, "Deployment", &wref.name).await?
            && !workload::give_back(&api, &d).await?
        {
            return Err(Error::Waiting {
                what: format!("Deployment {} to be available again", wref.name),
            });
        }
        // Then the user's route sends to the user's Service again (not to the colors'
        // Services, which go with the colors)...
        if let Some(route) = Route::of(bgd, ctx.client.clone(), None) {
            route.remove().await?;
        }
        // ...and that Service selects its pods again (and the colors', until they go).
        adopted::give_back(
            &ctx.client,
            &bgd.namespace().unwrap_or_default(),
            &bgd.name_any(),
            bgd,
        )
        .await?;
    }
    let (places, lost) = environments::places_for_cleanup(bgd, &ctx.client, &ctx.clusters).await?;
    for place in &places {
        let n = environments::clean_up(bgd, place).await?;
        tracing::info!(namespace = ?bgd.namespace(), name = %bgd.name_any(), place = %place.describe(), deleted = n, "deleted the objects of a remote color");
    }
    if !lost.is_empty() {
        let message = format!(
            "could not delete {}: delete them by hand (label {}={})",
            lost.join(", "),
            environments::OWNER_UID_LABEL,
            bgd.metadata.uid.as_deref().unwrap_or_default()
        );
        tracing::warn!(namespace = ?bgd.namespace(), name = %bgd.name_any(), "{message}");
        publish(ctx, bgd, "CleanupIncomplete", &message, true).await;
    }
    Ok(())
}

/// The live pods' selector for the scale subresource (an HPA must count the live color
/// only, not the warm standby).
fn selector_string(bgd: &BlueGreenDeployment, active: Option<Color>) -> String {
    let mut labels = bgd.spec.selector.match_labels.clone().unwrap_or_default();
    if let Some(c) = active {
        labels.insert(cutover_api::COLOR_LABEL.to_string(), c.as_str().to_string());
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn color_status(
    obs: &ColorObservation,
    d: Option<&Deployment>,
    place: &Place,
) -> Option<cutover_api::blue_green::ColorStatus> {
    let d = d?;
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    Some(cutover_api::blue_green::ColorStatus {
        revision: obs.revision.unwrap_or(0),
        pod_template_hash: obs.template_hash.clone().unwrap_or_default(),
        image,
        replicas: obs.spec_replicas,
        ready_replicas: obs.ready_replicas,
        namespace: (!place.home).then(|| place.namespace.clone()),
        cluster: place.cluster.clone(),
    })
}

async fn publish(
    ctx: &Context,
    bgd: &BlueGreenDeployment,
    reason: &str,
    message: &str,
    warning: bool,
) {
    let object = bgd.object_ref(&());
    ctx.events
        .publish(&object, "Reconcile", reason, message, warning)
        .await;
}

/// Write `new` (server-side apply, the controller's field manager) unless it is what the
/// object already says.
async fn write_status(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    new: BlueGreenDeploymentStatus,
) -> Result<(), Error> {
    if bgd.status.as_ref() == Some(&new) || (bgd.status.is_none() && new == Default::default()) {
        return Ok(());
    }
    let api: Api<BlueGreenDeployment> =
        Api::namespaced(ctx.client.clone(), &bgd.namespace().unwrap_or_default());
    let written = apply_status(&api, &bgd.name_any(), &new).await?;
    wrote(ctx, bgd, &written.metadata);
    Ok(())
}

/// The per-color Services always exist and select their color.
async fn ensure_color_services(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
) -> Result<(), Error> {
    for color in Color::ALL {
        let role = ServiceRole::Color(color);
        let want = services::service(bgd, role, color)?;
        let have = snap.services.get(role_key(role)).and_then(|s| s.as_ref());
        let same = same_service(have, &want);
        if !same {
            let sname = role.service_name(&bgd.name_any());
            let checked = snap.checked("Service", "", &sname);
            apply_owned(&ctx.client, ns, &sname, &want, "Service", (bgd, checked)).await?;
        }
    }
    Ok(())
}

/// With a color away from home: each color's Service `<name>-<color>` where it runs (with
/// a selector), and at home the Services traffic is routed through, without a selector,
/// whose EndpointSlices follow the ready endpoints of the color they stand for.
async fn ensure_spread_services(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
) -> Result<(), Error> {
    let name = bgd.name_any();
    let port_name = services::port_name(bgd);
    for color in Color::ALL {
        let role = ServiceRole::Color(color);
        let place = snap.places.get(color);
        let mut want = services::service(bgd, role, color)?;
        environments::locate(&mut want.metadata, bgd, place);
        let have = snap.color_services.get(color).as_ref();
        if !same_service(have, &want) {
            let sname = role.service_name(&name);
            let checked = snap.checked("Service", &place.key, &sname);
            apply_owned(
                &place.client,
                &place.namespace,
                &sname,
                &want,
                "Service",
                (bgd, checked),
            )
            .await?;
        }
    }
    for role in ServiceRole::ALL {
        let color = match role {
            ServiceRole::Color(c) if snap.places.get(c).home => continue,
            ServiceRole::Color(c) => Some(c),
            // Live and preview exist once the release has pointed them at a color.
            _ => snap
                .slices
                .get(role_key(role))
                .and_then(|s| s.as_ref())
                .and_then(slice_color),
        };
        let Some(color) = color else { continue };
        let eps = snap.endpoints.get(color);
        let have = snap.slices.get(role_key(role)).and_then(|s| s.as_ref());
        let in_sync = have.is_some_and(|s| mirrors(s, color, eps, &port_name));
        let service = snap.services.get(role_key(role)).and_then(|s| s.as_ref());
        let adopted = service.filter(|s| adopted::adoptable(s, bgd));
        let service_ok = match adopted {
            Some(user) => adopted::selects(user, bgd, color),
            None => same_service(service, &services::mirror_service(bgd, role)?),
        };
        if !in_sync || !service_ok {
            let checked = snap.checked_mirror(role.service_name(&name).as_str());
            crate::traffic::live_endpoints::point(
                bgd,
                &ctx.client,
                ns,
                (role, checked),
                color,
                eps,
                adopted,
            )
            .await?;
        }
    }
    Ok(())
}

/// Whether the mirrored EndpointSlice `slice` holds `color`'s endpoints `eps` now.
fn mirrors(slice: &EndpointSlice, color: Color, eps: &Endpoints, port_name: &str) -> bool {
    slice_color(slice) == Some(color)
        && endpoint_mirror::from_slices(std::slice::from_ref(slice), eps.service_port, port_name)
            == *eps
}

/// Whether Service `have` has `want`'s selector and ports.
fn same_service(have: Option<&Service>, want: &Service) -> bool {
    let ports = |s: &Service| {
        s.spec.as_ref().and_then(|s| s.ports.as_ref()).map(|p| {
            p.iter()
                .map(|p| (p.name.clone(), p.port, p.target_port.clone()))
                .collect::<Vec<_>>()
        })
    };
    let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone());
    have.is_some_and(|h| selector(h) == selector(want) && ports(h) == ports(want))
}

/// Label on config snapshots naming the ConfigMap or Secret they copy.
const SNAPSHOT_OF_LABEL: &str = "cutover.dev/snapshot-of";

/// Delete the config snapshots of `bgd` that neither color's Deployment references.
async fn prune_snapshots(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    snap: &Snapshot,
) -> Result<(), Error> {
    for (i, color) in Color::ALL.into_iter().enumerate() {
        let place = snap.places.get(color);
        // Each place once: the first color found there prunes it.
        if i > 0 && place.same_as(snap.places.get(color.other())) {
            continue;
        }
        prune_snapshots_at(bgd, ctx, snap, place).await?;
    }
    Ok(())
}

/// Prune the snapshots at `place` that the Deployments there do not reference.
async fn prune_snapshots_at(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    snap: &Snapshot,
    place: &Place,
) -> Result<(), Error> {
    let mut in_use: Vec<ConfigRef> = Color::ALL
        .iter()
        .filter(|c| snap.places.get(**c).same_as(place))
        .filter_map(|c| snap.deployments.get(*c).as_ref())
        .filter_map(|d| d.spec.as_ref())
        .flat_map(|s| config::referenced(&s.template))
        .collect();
    in_use.sort();
    let memo = (
        bgd.metadata.uid.clone().unwrap_or_default(),
        place.key.clone(),
    );
    if ctx
        .pruned
        .lock()
        .is_ok_and(|p| p.get(&memo) == Some(&in_use))
    {
        return Ok(());
    }
    let used =
        |kind: ConfigKind, name: &str| in_use.iter().any(|r| r.kind == kind && r.name == name);
    let selector = format!(
        "{}={},{SNAPSHOT_OF_LABEL}",
        cutover_api::INSTANCE_LABEL,
        bgd.name_any()
    );
    let lp = ListParams::default().labels(&selector);
    let config_maps: Api<ConfigMap> = Api::namespaced(place.client.clone(), &place.namespace);
    let secrets: Api<Secret> = Api::namespaced(place.client.clone(), &place.namespace);
    delete_unused(&config_maps, &lp, bgd, |name| {
        used(ConfigKind::ConfigMap, name)
    })
    .await?;
    delete_unused(&secrets, &lp, bgd, |name| used(ConfigKind::Secret, name)).await?;
    if let Ok(mut p) = ctx.pruned.lock() {
        p.insert(memo, in_use);
    }
    Ok(())
}

/// Delete the objects `lp` selects that `bgd` controls and `used` does not keep.
async fn delete_unused<K>(
    api: &Api<K>,
    lp: &ListParams,
    bgd: &BlueGreenDeployment,
    used: impl Fn(&str) -> bool,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let kind: &'static str = if kind == "Secret" {
        "Secret"
    } else {
        "ConfigMap"
    };
    let list = api.list_metadata(lp).await.map_err(|source| Error::Read {
        kind,
        name: lp.label_selector.clone().unwrap_or_default(),
        source,
    })?;
    for obj in list.items {
        let name = obj.name_any();
        if owned_by(&obj.metadata, bgd) && !used(&name) {
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|source| Error::Apply {
                    kind,
                    name: name.clone(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Copy each referenced config into an immutable snapshot owned by `bgd`, named as
/// [`snapshot_names`] says.
async fn snapshot_configs(
    bgd: &BlueGreenDeployment,
    place: &Place,
    snap: &Snapshot,
) -> Result<(), Error> {
    let (client, ns) = (&place.client, place.namespace.as_str());
    let owner = owner_reference(bgd)?;
    for (r, data) in &snap.configs {
        let Some(data) = data else { continue };
        let snap_name = config::snapshot_name(&r.name, &config::data_hash(data));
        let mut labels = owned_labels(&bgd.name_any(), None);
        labels.insert(SNAPSHOT_OF_LABEL.into(), r.name.clone());
        let mut meta = ObjectMeta {
            name: Some(snap_name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        };
        environments::locate(&mut meta, bgd, place);
        match r.kind {
            ConfigKind::ConfigMap => {
                let (text, binary): (BTreeMap<_, _>, BTreeMap<_, _>) = data
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .partition(|(_, v)| std::str::from_utf8(v).is_ok());
                let cm = ConfigMap {
                    metadata: meta,
                    immutable: Some(true),
                    data: Some(
                        text.into_iter()
                            .map(|(k, v)| (k, String::from_utf8(v).unwrap_or_default()))
                            .collect(),
                    ),
                    binary_data: (!binary.is_empty()).then(|| {
                        binary
                            .into_iter()
                            .map(|(k, v)| (k, cutover_api::k8s_openapi::ByteString(v)))
                            .collect()
                    }),
                };
                create_once(client, ns, &snap_name, &cm, "ConfigMap").await?;
            }
            ConfigKind::Secret => {
                let secret = Secret {
                    metadata: meta,
                    immutable: Some(true),
                    data: Some(
                        data.iter()
                            .map(|(k, v)| {
                                (k.clone(), cutover_api::k8s_openapi::ByteString(v.clone()))
                            })
                            .collect(),
                    ),
                    ..Secret::default()
                };
                create_once(client, ns, &snap_name, &secret, "Secret").await?;
            }
        }
    }
    Ok(())
}

/// Record the revision's template in a ControllerRevision (once; they are immutable) and
/// prune the oldest beyond `spec.revisionHistoryLimit` (default 10), keeping the ones
/// either color runs. Only revisions this BlueGreenDeployment controls are deleted.
async fn record_revision(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    template_hash: &str,
    revision: i64,
) -> Result<(), Error> {
    let name = bgd.name_any();
    let cr = render::controller_revision(bgd, template_hash, revision)?;
    create_once(
        &ctx.client,
        ns,
        &render::revision_name(&name, template_hash),
        &cr,
        "ControllerRevision",
    )
    .await?;
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{}={}", cutover_api::INSTANCE_LABEL, name);
    let mut revisions: Vec<ControllerRevision> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Read {
            kind: "ControllerRevision",
            name: selector.clone(),
            source,
        })?
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, bgd))
        .collect();
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let limit = usize::try_from(bgd.spec.revision_history_limit.unwrap_or(10))
        .unwrap_or(10)
        .max(2);
    let in_use: Vec<String> = Color::ALL
        .iter()
        .map(|c| {
            render::revision_name(
                &name,
                &bgd.status
                    .as_ref()
                    .and_then(|s| s.color(status::api_color(*c)))
                    .map(|cs| cs.pod_template_hash.clone())
                    .unwrap_or_default(),
            )
        })
        .chain([render::revision_name(&name, template_hash)])
        .collect();
    for old in revisions.iter().skip(limit) {
        let old_name = old.name_any();
        if in_use.contains(&old_name) {
            continue;
        }
        api.delete(&old_name, &DeleteParams::background())
            .await
            .map_err(|source| Error::Apply {
                kind: "ControllerRevision",
                name: old_name,
                source,
            })?;
    }
    Ok(())
}

async fn act(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
    template_hash: &str,
    action: &Action,
    traffic: &Traffic<'_>,
) -> Result<(), Error> {
    let name = bgd.name_any();
    match *action {
        Action::Deploy {
            color,
            revision,
            replicas,
        } => deploy(bgd, ctx, ns, snap, template_hash, color, revision, replicas).await,
        Action::Scale { color, replicas } => {
            let dname = render::deployment_name(&name, color);
            let place = snap.places.get(color);
            let api: Api<Deployment> = Api::namespaced(place.client.clone(), &place.namespace);
            apply_fields(
                &api,
                &dname,
                "scale",
                json!({ "spec": { "replicas": replicas } }),
            )
            .await
        }
        Action::Preview { color } if snap.spread => {
            let checked = snap.checked_mirror(&ServiceRole::Preview.service_name(&name));
            crate::traffic::live_endpoints::point(
                bgd,
                &ctx.client,
                ns,
                (ServiceRole::Preview, checked),
                color,
                snap.endpoints.get(color),
                None,
            )
            .await
        }
        Action::Preview { color } => {
            let svc = services::service(bgd, ServiceRole::Preview, color)?;
            let sname = ServiceRole::Preview.service_name(&name);
            let checked = snap.checked("Service", "", &sname);
            apply_owned(&ctx.client, ns, &sname, &svc, "Service", (bgd, checked))
                .await
                .map(|_| ())
        }
        Action::StartAnalysis {
            gate,
            revision,
            attempt,
        } => start_analysis(bgd, ctx, ns, snap, gate, revision, attempt).await,
        Action::StopAnalysis {
            gate,
            revision,
            attempt,
        } => {
            let run_name = gates::run_name(&name, revision, attempt, gate);
            if !snap.runs.contains_key(&run_name) {
                return Ok(());
            }
            let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), ns);
            apply_fields(
                &api,
                &run_name,
                "terminate",
                json!({ "spec": { "terminate": true } }),
            )
            .await
        }
        Action::SetWeight { canary, weight } => traffic.set_weight(canary.other(), weight).await,
        Action::SetHeaderRoute { canary, step } => {
            let header = step.map(|i| header_of(bgd, i));
            traffic.set_header_route(canary.other(), header).await
        }
        Action::SetMirror { canary, percent } => traffic.set_mirror(canary.other(), percent).await,
        Action::SwitchLive { color } => {
            let started = Instant::now();
            traffic.switch_live(color).await?;
            ctx.metrics.traffic_switched(started.elapsed());
            tracing::info!(namespace = %ns, name = %name, color = %color, "switched live traffic");
            Ok(())
        }
    }
}

/// Apply `color`'s Deployment (recording its revision and config snapshots first), unless
/// this controller applied exactly that and nobody changed the Deployment's spec since
/// (same generation): the core asks for it on every pass of a rollout, and each apply costs
/// a write plus the revision's reads.
#[allow(clippy::too_many_arguments)]
async fn deploy(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
    template_hash: &str,
    color: Color,
    revision: i64,
    replicas: i32,
) -> Result<(), Error> {
    let place = snap.places.get(color);
    let mut d = render::color_deployment(bgd, color, template_hash, revision, replicas)?;
    if let Some(spec) = d.spec.as_mut() {
        spec.template = config::with_snapshots(&spec.template, &snapshot_names(snap));
    }
    environments::locate(&mut d.metadata, bgd, place);
    let rendered = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&d)
            .map_err(|source| Error::Serialize {
                what: "Deployment",
                source,
            })?
            .hash(&mut h);
        h.finish()
    };
    let key = (
        bgd.metadata.uid.clone().unwrap_or_default(),
        color.as_str().to_string(),
    );
    let generation = snap
        .deployments
        .get(color)
        .as_ref()
        .and_then(|d| d.metadata.generation);
    let unchanged = ctx.deployed.lock().is_ok_and(|applied| {
        applied
            .get(&key)
            .is_some_and(|(h, g)| *h == rendered && Some(*g) == generation)
    });
    if unchanged {
        return Ok(());
    }
    record_revision(bgd, ctx, ns, template_hash, revision).await?;
    snapshot_configs(bgd, place, snap).await?;
    let dname = render::deployment_name(&bgd.name_any(), color);
    let checked = snap.checked("Deployment", &place.key, &dname);
    let applied = apply_owned(
        &place.client,
        &place.namespace,
        &dname,
        &d,
        "Deployment",
        (bgd, checked),
    )
    .await?;
    if let (Some(g), Ok(mut deployed)) = (applied.metadata.generation, ctx.deployed.lock()) {
        deployed.insert(key, (rendered, g));
    }
    Ok(())
}

/// The names of the config snapshots this pass's configs would have (pure: content-derived).
fn snapshot_names(snap: &Snapshot) -> BTreeMap<(ConfigKind, String), String> {
    snap.configs
        .iter()
        .filter_map(|(r, data)| {
            let data = data.as_ref()?;
            Some((
                (r.kind, r.name.clone()),
                config::snapshot_name(&r.name, &config::data_hash(data)),
            ))
        })
        .collect()
}

/// The providers of `bgd`'s traffic, over what this pass observed.
fn traffic_of<'a>(bgd: &'a BlueGreenDeployment, ctx: &Context, snap: &'a Snapshot) -> Traffic<'a> {
    let live = ServiceRole::Live.service_name(&bgd.name_any());
    let live = if snap.spread {
        Live::Endpoints(LiveEndpoints::new(
            bgd,
            ctx.client.clone(),
            &snap.endpoints,
            (
                snap.slices.get("live").and_then(Option::as_ref),
                snap.checked_mirror(&live),
            ),
            snap.services
                .get("live")
                .and_then(Option::as_ref)
                .filter(|s| adopted::adoptable(s, bgd)),
        ))
    } else {
        Live::Selector(LiveSelector::new(
            bgd,
            ctx.client.clone(),
            (
                snap.services.get("live").and_then(Option::as_ref),
                snap.checked("Service", "", &live),
            ),
        ))
    };
    Traffic {
        route: Route::of(bgd, ctx.client.clone(), snap.route.as_ref()),
        live,
    }
}

/// How many AnalysisRuns of one BlueGreenDeployment are kept.
const RUNS_KEPT: usize = 10;

/// Create the run of `gate` for this release attempt (once), and prune old runs.
async fn start_analysis(
    bgd: &BlueGreenDeployment,
    ctx: &Context,
    ns: &str,
    snap: &Snapshot,
    gate: Gate,
    revision: i64,
    attempt: u32,
) -> Result<(), Error> {
    let name = bgd.name_any();
    let run_name = gates::run_name(&name, revision, attempt, gate);
    if snap.runs.contains_key(&run_name) {
        return Ok(());
    }
    let (Some(reference), Some(templates)) = (
        gates::reference(bgd, gate),
        snap.templates.get(&gate.name()),
    ) else {
        return Ok(());
    };
    let new_color = bgd
        .status
        .as_ref()
        .and_then(|s| s.release.as_ref())
        .and_then(|r| r.color)
        .map(status::core_color)
        .unwrap_or(Color::Green);
    let run = match gates::build_run(
        bgd, gate, revision, attempt, new_color, reference, templates,
    )? {
        Ok(run) => run,
        // Checked in observe; a template edited in between is caught on the next pass.
        Err(message) => {
            tracing::warn!(namespace = %ns, name = %name, "{message}");
            return Ok(());
        }
    };
    create_once(&ctx.client, ns, &run_name, &run, "AnalysisRun").await?;
    let mut old: Vec<&AnalysisRun> = snap.runs.values().collect();
    old.sort_by_key(|r| std::cmp::Reverse(r.metadata.creation_timestamp.clone()));
    let api: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), ns);
    for r in old.into_iter().skip(RUNS_KEPT.saturating_sub(1)) {
        let old_name = r.name_any();
        api.delete(&old_name, &DeleteParams::background())
            .await
            .map_err(|source| Error::Apply {
                kind: "AnalysisRun",
                name: old_name,
                source,
            })?;
    }
    Ok(())
}

/// What to do after a failed reconcile: a log line, the error metric, and a retry.
pub fn error_policy(bgd: Arc<BlueGreenDeployment>, error: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(namespace = ?bgd.namespace(), name = %bgd.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(KIND, error.kind());
    Requeue::requeue(Duration::from_secs(5))
}
