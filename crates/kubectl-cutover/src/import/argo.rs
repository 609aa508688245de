//! Argo Rollouts `Rollout` → `BlueGreenDeployment` of the same name.
//!
//! - `spec.template` + `selector` carry over as they are; `workloadRef` becomes
//!   `spec.workloadRef` (`scaleDown` never/onsuccess/progressively → Never/OnSuccess/
//!   Progressively; Argo's default is never).
//! - `blueGreen`: `service` routing, no steps, `autoPromotionEnabled`/`autoPromotionSeconds` →
//!   `strategy.autoPromotion`, pre/post-promotion analyses as they are, and the old color is
//!   scaled down after `scaleDownDelaySeconds` (Argo's default 30) as Argo does.
//! - `canary`: steps (`setWeight`, `pause`, `analysis`, `setHeaderRoute`, `setMirrorRoute`),
//!   `analysis` → `backgroundAnalysis`, `trafficRouting` istio / smi / the Gateway API plugin
//!   → `trafficRouting` istio / smi / gatewayAPI.
//! - `spec.service` (the port of Cutover's Services) comes from the Service the Rollout
//!   names (active, then stable, then preview/canary) when it is in the input.

use cutover_api::blue_green::{
    AnalysisArg, AnalysisRef, AutoPromotion, GatewayApiRouting, HeaderMatch, HeaderRoute,
    IstioRouting, Mirror, Pause, ScaleDown, ServicePort, ServiceRouting, SmiRouting, Standby,
    StandbyMode, Step, Strategy, StringMatch, TemplateRef, TrafficRouting, VirtualServiceRef,
    WorkloadRef,
};
use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use cutover_api::{BlueGreenDeployment, BlueGreenDeploymentSpec};
use serde_json::Value;

use super::{
    Claim, Inventory, Source, Translation, at, boolean, core_group, entries, field, int,
    is_duration, items, metadata, name_of, namespace_of, required_name, scalar_text, seconds, text,
};

/// Cutover's limit on steps.
pub(crate) const MAX_STEPS: usize = 64;
/// Longest BlueGreenDeployment name (`<name>-preview` and `<name>-green` must stay valid).
pub(crate) const MAX_NAME: usize = 50;
/// Argo's scale-down delay of the old ReplicaSet when none is given.
const ARGO_SCALE_DOWN_DELAY: i64 = 30;

/// A route whose backends Cutover must weigh.
#[derive(Debug, Clone)]
struct RouteRef {
    kind: &'static str,
    group: &'static str,
    name: String,
    /// Field of the Rollout naming it.
    path: String,
    /// VirtualService HTTP routes (empty: all).
    routes: Vec<String>,
}

/// What the translation of one Rollout collects.
#[derive(Debug)]
struct State {
    name: String,
    strategy: Strategy,
    routing: Option<TrafficRouting>,
    /// Services the Rollout names, `(field, name)`, in the order their port is looked for.
    services: Vec<(String, String)>,
    /// Canary strategy: `(field, stable)`, `(field, canary)`.
    stable: Option<(String, String)>,
    canary: Option<(String, String)>,
    /// Steps that set weights can be translated.
    weighted: bool,
    /// Why not, when not.
    unweighted_why: String,
    smi: bool,
    /// Argo's total weight (`maxTrafficWeight`, default 100).
    max_weight: i64,
    route: Option<RouteRef>,
    claims: Vec<Claim>,
}

/// Whether `name` can name a BlueGreenDeployment (at most [`MAX_NAME`] characters);
/// reported when not, with `why` (what holds it to that, or nothing) after the limit.
pub(crate) fn fits(name: &str, why: &str, src: &mut Source<'_>) -> bool {
    if name.len() <= MAX_NAME {
        return true;
    }
    src.skip(
        "metadata.name",
        format!(
            "a BlueGreenDeployment name has at most {MAX_NAME} characters{why}; nothing was \
             written"
        ),
    );
    false
}

/// A Rollout.
pub(crate) fn rollout(doc: &Value, inv: &Inventory<'_>, src: &mut Source<'_>) -> Translation {
    let Some(name) = required_name(doc, "a Rollout", src) else {
        return Translation::default();
    };
    if !fits(
        name,
        " (so that <name>-preview stays a valid Service name)",
        src,
    ) {
        return Translation::default();
    }
    let meta = metadata(doc, name, src);
    let mut state = State {
        name: name.to_owned(),
        strategy: Strategy::default(),
        routing: None,
        services: Vec::new(),
        stable: None,
        canary: None,
        weighted: false,
        unweighted_why: String::new(),
        smi: false,
        max_weight: 100,
        route: None,
        claims: Vec::new(),
    };
    let mut replicas = 1;
    let mut selector = None;
    let mut template = None;
    let mut workload_ref = None;
    let mut workload_broken = false;
    let mut paused = false;
    let mut revision_history_limit = None;
    let spec = doc.get("spec");
    for (key, value) in entries(spec) {
        let path = field("spec", key);
        match key {
            "replicas" => {
                if let Some(n) = int(value, &path, src).and_then(|n| i32::try_from(n).ok()) {
                    replicas = n;
                }
            }
            "selector" => selector = Some(value.clone()),
            "template" => template = Some(value.clone()),
            "workloadRef" => match workload(value, &path, src) {
                Some(w) => workload_ref = Some(w),
                None => workload_broken = true,
            },
            "strategy" => {}
            "minReadySeconds" => src.skip(
                &path,
                "Cutover counts a pod available as soon as it is ready; it sets no \
                 minReadySeconds on the colors' Deployments",
            ),
            "revisionHistoryLimit" => {
                if let Some(n) = int(value, &path, src) {
                    if (0..=100).contains(&n) {
                        revision_history_limit = i32::try_from(n).ok();
                    } else {
                        src.skip(&path, format!("{n}: Cutover keeps 0 to 100 old revisions"));
                    }
                }
            }
            "paused" => paused = boolean(value, &path, src).unwrap_or(false),
            "progressDeadlineSeconds" => {
                if let Some(n) = int(value, &path, src).filter(|n| *n >= 1) {
                    state.strategy.progress_deadline_seconds = Some(n);
                }
            }
            "progressDeadlineAbort" => {
                state.strategy.abort_on_deadline = boolean(value, &path, src).unwrap_or(false);
            }
            "restartAt" => src.skip(&path, "Cutover has no scheduled restart of the pods"),
            "rollbackWindow" => src.skip(
                &path,
                "Cutover has no rollback window; its previous color stays warm, and `kubectl \
                 cutover undo` to that revision switches without new pods",
            ),
            "analysis" => src.skip(
                &path,
                "Cutover has no setting for how many AnalysisRuns are kept",
            ),
            _ => src.unknown(&path),
        }
    }
    if workload_broken {
        return Translation::default();
    }
    match (&workload_ref, &template) {
        (Some(_), Some(_)) => {
            src.skip(
                "spec.template",
                "spec.workloadRef supplies the pod template; this one is not used (as in Argo)",
            );
            template = None;
        }
        (None, None) => {
            src.skip(
                "spec.template",
                "missing (and no workloadRef): a BlueGreenDeployment needs a pod template; \
                 nothing was written",
            );
            return Translation::default();
        }
        _ => {}
    }
    if workload_ref.is_some() {
        // The Deployment's selector is used (Argo requires it to match).
        selector = None;
    }

    let strategy = spec.and_then(|s| s.get("strategy"));
    let mut kinds = entries(strategy).into_iter();
    match kinds.next() {
        Some(("blueGreen", v)) => blue_green(v, "spec.strategy.blueGreen", doc, &mut state, src),
        Some(("canary", v)) => canary(v, "spec.strategy.canary", doc, inv, &mut state, src),
        Some((other, _)) => src.unknown(&field("spec.strategy", other)),
        None => src.skip(
            "spec.strategy",
            "missing: Argo then replaces pods in place; the BlueGreenDeployment switches all \
             traffic at once after the new color is ready",
        ),
    }
    for (other, _) in kinds {
        src.skip(
            &field("spec.strategy", other),
            "a Rollout has one strategy; the first was translated",
        );
    }
    if state.strategy.steps.len() > MAX_STEPS {
        src.skip(
            "spec.strategy.canary.steps",
            format!(
                "{} steps: a BlueGreenDeployment has at most {MAX_STEPS}; nothing was written",
                state.strategy.steps.len()
            ),
        );
        return Translation::default();
    }

    // The port of Cutover's Services.
    let pod_template = match &workload_ref {
        Some(w) => inv
            .find(|g| g == "apps", "Deployment", &w.name, doc)
            .and_then(|(_, d)| d.pointer("/spec/template")),
        None => template.as_ref(),
    };
    let service = service_port(inv, doc, &state.name, &state.services, pod_template, src);

    // What Cutover makes itself, the route it weighs, the autoscaler it is scaled by.
    let adopted_live = workload_ref.is_some().then_some(name);
    leave_out_services(doc, inv, &mut state, adopted_live);
    weigh_route(doc, inv, &mut state, src);
    retarget_autoscalers(doc, inv, &mut state);

    let bgd = BlueGreenDeployment {
        metadata: meta,
        spec: BlueGreenDeploymentSpec {
            replicas,
            selector: Default::default(),
            template: Default::default(),
            workload_ref,
            service,
            strategy: state.strategy,
            traffic_routing: state.routing,
            environments: None,
            paused,
            revision_history_limit,
        },
        status: None,
    };
    let mut object = serde_json::to_value(&bgd).unwrap_or_default();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        // As written: the typed PodTemplateSpec would drop fields it does not know.
        if let Some(selector) = selector {
            spec.insert("selector".to_owned(), selector);
        }
        if let Some(template) = template {
            spec.insert("template".to_owned(), template);
        }
    }
    Translation {
        objects: vec![object],
        claims: state.claims,
    }
}

/// Leaves out the input's Services that the Rollout names or that have the names Cutover gives
/// its own; with `workloadRef` the live one (`adopted`) is kept: Cutover adopts it.
fn leave_out_services(doc: &Value, inv: &Inventory<'_>, state: &mut State, adopted: Option<&str>) {
    let name = state.name.clone();
    let named = state.services.iter().map(|(_, s)| (s.clone(), true));
    let owned = owned_services(&name).into_iter().map(|s| (s, false));
    let mut dropped: Vec<String> = Vec::new();
    for (svc, by_rollout) in named.chain(owned).collect::<Vec<_>>() {
        if adopted == Some(svc.as_str()) || dropped.contains(&svc) {
            continue;
        }
        let Some((index, _)) = inv.find(core_group, "Service", &svc, doc) else {
            continue;
        };
        let why = if by_rollout {
            format!(
                "Rollout {name} names it; BlueGreenDeployment {name} routes through Services it \
                 creates and owns ({name}, {name}-preview, {name}-blue, {name}-green)"
            )
        } else {
            format!("BlueGreenDeployment {name} creates and owns a Service of this name")
        };
        state.claims.push(Claim::Drop { index, why });
        dropped.push(svc);
    }
}

/// Points the input's autoscalers of the Rollout at the BlueGreenDeployment.
fn retarget_autoscalers(doc: &Value, inv: &Inventory<'_>, state: &mut State) {
    for (index, hpa) in inv.all() {
        let target = |field: &str| {
            hpa.pointer(&format!("/spec/scaleTargetRef/{field}"))
                .and_then(Value::as_str)
        };
        let same_namespace = namespace_of(hpa)
            .zip(namespace_of(doc))
            .is_none_or(|(a, b)| a == b);
        if super::kind_of(hpa) == Some("HorizontalPodAutoscaler")
            && target("kind") == Some("Rollout")
            && target("name") == Some(state.name.as_str())
            && same_namespace
        {
            state.claims.push(Claim::Retarget {
                index,
                name: state.name.clone(),
            });
        }
    }
}

/// The Services a BlueGreenDeployment named `name` creates.
pub(crate) fn owned_services(name: &str) -> [String; 4] {
    [
        name.to_owned(),
        format!("{name}-preview"),
        format!("{name}-blue"),
        format!("{name}-green"),
    ]
}

fn workload(v: &Value, path: &str, src: &mut Source<'_>) -> Option<WorkloadRef> {
    let mut w = WorkloadRef {
        scale_down: ScaleDown::Never,
        ..WorkloadRef::default()
    };
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "apiVersion" => w.api_version = text(value, &p, src).unwrap_or_default().to_owned(),
            "kind" => w.kind = text(value, &p, src).unwrap_or_default().to_owned(),
            "name" => w.name = text(value, &p, src).unwrap_or_default().to_owned(),
            "scaleDown" => {
                w.scale_down = match value.as_str().map(str::to_ascii_lowercase).as_deref() {
                    Some("never") => ScaleDown::Never,
                    Some("onsuccess") => ScaleDown::OnSuccess,
                    Some("progressively") => ScaleDown::Progressively,
                    _ => {
                        src.skip(
                            &p,
                            format!("{value}: expected never, onsuccess or progressively; Never was used"),
                        );
                        ScaleDown::Never
                    }
                }
            }
            _ => src.unknown(&p),
        }
    }
    if w.kind != "Deployment" || w.api_version != "apps/v1" || w.name.is_empty() {
        src.skip(
            path,
            "Cutover adopts a Deployment (apiVersion apps/v1, kind Deployment, a name) and \
             nothing else; nothing was written",
        );
        return None;
    }
    Some(w)
}

fn blue_green(v: &Value, path: &str, doc: &Value, state: &mut State, src: &mut Source<'_>) {
    state.routing = Some(TrafficRouting {
        service: Some(ServiceRouting {}),
        ..TrafficRouting::default()
    });
    state.unweighted_why = "blue-green switches all traffic at once".to_owned();
    let name = state.name.clone();
    let mut auto_enabled = None;
    let mut auto_seconds = None;
    let mut delay = ARGO_SCALE_DOWN_DELAY;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "activeService" => {
                let Some(svc) = text(value, &p, src) else {
                    continue;
                };
                state.services.insert(0, (p.clone(), svc.to_owned()));
                if svc != name {
                    src.skip(
                        &p,
                        format!(
                            "Cutover's live Service is named after the BlueGreenDeployment \
                             ({name}), not {svc}: point clients at {name}, or rename the \
                             Rollout to {svc} before importing"
                        ),
                    );
                }
            }
            "previewService" => {
                let Some(svc) = text(value, &p, src) else {
                    continue;
                };
                state.services.push((p.clone(), svc.to_owned()));
                if svc != format!("{name}-preview") {
                    src.skip(
                        &p,
                        format!(
                            "Cutover's preview Service is {name}-preview, not {svc}: point \
                             testers at {name}-preview"
                        ),
                    );
                }
            }
            "autoPromotionEnabled" => auto_enabled = boolean(value, &p, src),
            "autoPromotionSeconds" => auto_seconds = int(value, &p, src).filter(|n| *n >= 0),
            "scaleDownDelaySeconds" => {
                if let Some(n) = int(value, &p, src).filter(|n| *n >= 0) {
                    delay = n;
                }
            }
            "prePromotionAnalysis" => {
                state.strategy.pre_promotion_analysis = analysis_ref(value, &p, doc, src);
            }
            "postPromotionAnalysis" => {
                state.strategy.post_promotion_analysis = analysis_ref(value, &p, doc, src);
            }
            "previewReplicaCount" => src.skip(
                &p,
                "Cutover brings the new color to full size before it is checked; it has no \
                 reduced preview",
            ),
            "abortScaleDownDelaySeconds" => {
                src.skip(&p, "on abort Cutover scales the new color down at once")
            }
            _ => common_field(key, &p, value, src),
        }
    }
    state.strategy.auto_promotion = match (auto_enabled, auto_seconds) {
        // Argo ignores autoPromotionSeconds when auto-promotion is off.
        (Some(false), _) => Some(AutoPromotion {
            enabled: false,
            after_seconds: 0,
        }),
        (_, Some(n)) => Some(AutoPromotion {
            enabled: true,
            after_seconds: n,
        }),
        (Some(true), None) => Some(AutoPromotion::default()),
        (None, None) => None,
    };
    state.strategy.standby = Some(Standby {
        mode: StandbyMode::ScaleDown,
        scale_down_delay_seconds: delay,
    });
}

/// Fields both strategies have, and the fallback for unknown ones.
fn common_field(key: &str, path: &str, _value: &Value, src: &mut Source<'_>) {
    let why = match key {
        "antiAffinity" => {
            "Cutover sets no anti-affinity between the colors; put it in the pod template"
        }
        "activeMetadata" | "previewMetadata" | "canaryMetadata" | "stableMetadata" => {
            "Cutover labels the pods of a color with cutover.dev/color only; it adds no \
             per-role labels or annotations"
        }
        "maxUnavailable" | "maxSurge" => {
            "Cutover replaces no pods in place: the new color is a separate Deployment brought \
             to full size"
        }
        "minPodsPerReplicaSet" => "the new color always runs spec.replicas pods",
        "scaleDownDelayRevisionLimit" => {
            "Cutover keeps one previous color (the standby); older revisions never run"
        }
        "abortScaleDownDelaySeconds" => "on abort Cutover scales the new color down at once",
        "dynamicStableScale" => {
            "the live color keeps its full size during a release (instant rollback)"
        }
        "pingPong" => {
            "Cutover's colors already have fixed Services (<name>-blue, <name>-green) whose \
             selectors never change during a release"
        }
        _ => {
            src.unknown(path);
            return;
        }
    };
    src.skip(path, why);
}

fn canary(
    v: &Value,
    path: &str,
    doc: &Value,
    inv: &Inventory<'_>,
    state: &mut State,
    src: &mut Source<'_>,
) {
    for (key, slot) in [("stableService", true), ("canaryService", false)] {
        let p = field(path, key);
        if let Some(svc) = v.get(key).and_then(|s| text(s, &p, src)) {
            let entry = (p, svc.to_owned());
            if slot {
                state.services.insert(0, entry.clone());
                state.stable = Some(entry);
            } else {
                state.services.push(entry.clone());
                state.canary = Some(entry);
            }
        }
    }
    match v.get("trafficRouting") {
        Some(tr) => traffic_routing(tr, &field(path, "trafficRouting"), doc, inv, state, src),
        None => {
            state.routing = Some(TrafficRouting {
                service: Some(ServiceRouting {}),
                ..TrafficRouting::default()
            });
            state.unweighted_why = "without trafficRouting Argo approximates weights with pod \
                                    counts; Cutover moves weights only through gatewayAPI, \
                                    istio or smi routing"
                .to_owned();
        }
    }
    if !state.weighted
        && let Some((p, stable)) = &state.stable
        && *stable != state.name
    {
        // Without a route, clients call the stable Service itself.
        src.skip(
            p,
            format!(
                "Cutover's live Service is named after the BlueGreenDeployment ({name}), not \
                 {stable}: point clients at {name}, or rename the Rollout to {stable} before \
                 importing",
                name = state.name
            ),
        );
    }
    let mut delay = ARGO_SCALE_DOWN_DELAY;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "stableService" | "canaryService" | "trafficRouting" => {}
            "steps" => {
                for (i, step) in items(Some(value)).iter().enumerate() {
                    steps(step, &at(&p, i), doc, state, src);
                }
            }
            "analysis" => {
                state.strategy.background_analysis = analysis_ref(value, &p, doc, src);
            }
            "scaleDownDelaySeconds" => {
                if let Some(n) = int(value, &p, src).filter(|n| *n >= 0) {
                    delay = n;
                }
            }
            _ => common_field(key, &p, value, src),
        }
    }
    state.strategy.standby = Some(Standby {
        mode: StandbyMode::ScaleDown,
        scale_down_delay_seconds: delay,
    });
}

fn traffic_routing(
    v: &Value,
    path: &str,
    doc: &Value,
    inv: &Inventory<'_>,
    state: &mut State,
    src: &mut Source<'_>,
) {
    let name = state.name.clone();
    let mut chosen: Option<String> = None;
    let mut untranslated: Option<String> = None;
    let mut take = |provider: &str, p: &str, src: &mut Source<'_>| -> bool {
        if let Some(first) = &chosen {
            src.skip(
                p,
                format!("a BlueGreenDeployment routes through one provider; {first} was used"),
            );
            return false;
        }
        chosen = Some(provider.to_owned());
        true
    };
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "istio" => {
                if !take("istio", &p, src) {
                    continue;
                }
                if let Some(vs) = istio(value, &p, src) {
                    state.route = Some(RouteRef {
                        kind: "VirtualService",
                        group: "networking.istio.io",
                        name: vs.name.clone(),
                        path: field(&p, "virtualService"),
                        routes: vs.routes.clone(),
                    });
                    state.routing = Some(TrafficRouting {
                        istio: Some(IstioRouting {
                            virtual_service: vs,
                        }),
                        ..TrafficRouting::default()
                    });
                }
            }
            "smi" => {
                if !take("smi", &p, src) {
                    continue;
                }
                let mut split = name.clone();
                let mut root = state.stable.clone();
                for (k, val) in entries(Some(value)) {
                    let kp = field(&p, k);
                    match k {
                        "trafficSplitName" => {
                            split = text(val, &kp, src).unwrap_or(&split).to_owned();
                        }
                        "rootService" => {
                            root = text(val, &kp, src).map(|r| (kp.clone(), r.to_owned()));
                            // Left out like the other Services the Rollout names.
                            state.services.extend(root.clone());
                        }
                        _ => src.unknown(&kp),
                    }
                }
                if let Some((rp, root)) = root
                    && root != name
                {
                    src.skip(
                        &rp,
                        format!(
                            "the TrafficSplit's root Service is {root} in Argo; Cutover's is \
                             {name} (its live Service): point clients at {name}"
                        ),
                    );
                }
                if let Some((index, _)) =
                    inv.find(|g| g == "split.smi-spec.io", "TrafficSplit", &split, doc)
                {
                    state.claims.push(Claim::Drop {
                        index,
                        why: format!(
                            "BlueGreenDeployment {name} creates and owns the TrafficSplit {split}"
                        ),
                    });
                }
                state.smi = true;
                state.routing = Some(TrafficRouting {
                    smi: Some(SmiRouting {
                        traffic_split_name: split,
                    }),
                    ..TrafficRouting::default()
                });
            }
            "plugins" => {
                for (plugin, config) in entries(Some(value)) {
                    let pp = field(&p, plugin);
                    if plugin != "argoproj-labs/gatewayAPI" {
                        src.skip(
                            &pp,
                            "Cutover has no traffic router plugins (it routes with gatewayAPI, \
                             istio, smi or service)",
                        );
                        untranslated.get_or_insert_with(|| plugin.to_owned());
                        continue;
                    }
                    if !take("the Gateway API plugin", &pp, src) {
                        continue;
                    }
                    if let Some(route) = gateway_api(config, &pp, doc, src) {
                        state.route = Some(RouteRef {
                            kind: "HTTPRoute",
                            group: "gateway.networking.k8s.io",
                            name: route.clone(),
                            path: pp.clone(),
                            routes: Vec::new(),
                        });
                        state.routing = Some(TrafficRouting {
                            gateway_api: Some(GatewayApiRouting { http_route: route }),
                            ..TrafficRouting::default()
                        });
                    }
                }
            }
            "managedRoutes" => {
                // Cutover names and orders the routes it manages itself.
            }
            "maxTrafficWeight" => {
                if let Some(n) = int(value, &p, src).filter(|n| *n > 0) {
                    state.max_weight = n;
                }
            }
            "nginx" | "alb" | "ambassador" | "appMesh" | "traefik" | "apisix" => {
                src.skip(
                    &p,
                    format!(
                        "Cutover routes with gatewayAPI (which most ingress controllers \
                         implement), istio, smi or service; {key} has no counterpart"
                    ),
                );
                untranslated.get_or_insert_with(|| key.to_owned());
            }
            _ => src.unknown(&p),
        }
    }
    if state.routing.is_some() {
        state.weighted = true;
        return;
    }
    state.routing = Some(TrafficRouting {
        service: Some(ServiceRouting {}),
        ..TrafficRouting::default()
    });
    state.unweighted_why = match untranslated {
        Some(provider) => {
            format!("it needs weighted traffic routing, and {provider} (above) has no counterpart")
        }
        None => "it needs weighted traffic routing, and none was translated".to_owned(),
    };
}

fn istio(v: &Value, path: &str, src: &mut Source<'_>) -> Option<VirtualServiceRef> {
    let mut found: Option<VirtualServiceRef> = None;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "virtualService" => found = virtual_service(value, &p, src),
            "virtualServices" => {
                for (i, vs) in items(Some(value)).iter().enumerate() {
                    let ip = at(&p, i);
                    if i == 0 && found.is_none() {
                        found = virtual_service(vs, &ip, src);
                    } else {
                        src.skip(
                            &ip,
                            "Cutover manages the routes of one VirtualService; the first was \
                             used",
                        );
                    }
                }
            }
            "destinationRule" => src.skip(
                &p,
                "Cutover splits traffic by Service (<name>-blue, <name>-green), not by \
                 DestinationRule subsets: the VirtualService's routes must send to those \
                 Services",
            ),
            _ => src.unknown(&p),
        }
    }
    if found.is_none() {
        src.skip(path, "names no VirtualService; service routing was used");
    }
    found
}

fn virtual_service(v: &Value, path: &str, src: &mut Source<'_>) -> Option<VirtualServiceRef> {
    let mut out = VirtualServiceRef::default();
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "name" => out.name = text(value, &p, src).unwrap_or_default().to_owned(),
            "routes" => {
                out.routes = items(Some(value))
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
            }
            "tlsRoutes" | "tcpRoutes" => src.skip(
                &p,
                "Cutover weighs HTTP routes only; TLS and TCP routes are not managed",
            ),
            _ => src.unknown(&p),
        }
    }
    (!out.name.is_empty()).then_some(out)
}

/// The Gateway API plugin's configuration: the HTTPRoute's name.
fn gateway_api(v: &Value, path: &str, doc: &Value, src: &mut Source<'_>) -> Option<String> {
    let mut route = None;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "httpRoute" => route = text(value, &p, src).map(str::to_owned),
            "httpRoutes" => {
                for (i, r) in items(Some(value)).iter().enumerate() {
                    let ip = at(&p, i);
                    let name = r.get("name").and_then(Value::as_str);
                    if route.is_none() && name.is_some() {
                        route = name.map(str::to_owned);
                    } else {
                        src.skip(&ip, "Cutover manages one HTTPRoute; the first was used");
                    }
                }
            }
            "namespace" => {
                if value.as_str() != namespace_of(doc) {
                    src.skip(
                        &p,
                        "Cutover's HTTPRoute is in the BlueGreenDeployment's namespace",
                    );
                }
            }
            "grpcRoute" | "grpcRoutes" | "tcpRoute" | "tcpRoutes" | "tlsRoute" | "tlsRoutes" => {
                src.skip(&p, "Cutover weighs HTTPRoutes only")
            }
            // Where the plugin keeps its own state, and its header-route switch.
            "configMap" | "useHeaderRoutes" => {}
            _ => src.unknown(&p),
        }
    }
    if route.is_none() {
        src.skip(path, "names no HTTPRoute; service routing was used");
    }
    route
}

/// Points the route at Cutover's per-color Services (in the input), or says that it must be.
fn weigh_route(doc: &Value, inv: &Inventory<'_>, state: &mut State, src: &mut Source<'_>) {
    let Some(route) = state.route.clone() else {
        return;
    };
    let name = &state.name;
    let mut renames = Vec::new();
    for (old, new, weight) in [
        (&state.stable, format!("{name}-blue"), 100),
        (&state.canary, format!("{name}-green"), 0),
    ] {
        if let Some((_, old)) = old
            && *old != new
        {
            renames.push((old.clone(), new, weight));
        }
    }
    if renames.is_empty() {
        if state.stable.is_none() {
            src.skip(
                &route.path,
                format!(
                    "no stableService/canaryService: {} {} must send to Cutover's per-color \
                     Services {name}-blue and {name}-green",
                    route.kind, route.name
                ),
            );
        }
        return;
    }
    let group = route.group;
    match inv.find(|g| g == group, route.kind, &route.name, doc) {
        Some((index, _)) => state.claims.push(Claim::RenameBackends {
            index,
            renames,
            routes: route.routes.clone(),
        }),
        None => {
            let list: Vec<String> = renames
                .iter()
                .map(|(old, new, _)| format!("{new} (now {old})"))
                .collect();
            let path = state
                .stable
                .as_ref()
                .map_or(route.path.clone(), |(p, _)| p.clone());
            src.skip(
                &path,
                format!(
                    "{} {} is not in the input: its backends must name Cutover's per-color \
                     Services {}; import it with the Rollout, or edit it",
                    route.kind,
                    route.name,
                    list.join(" and ")
                ),
            );
        }
    }
}

/// One step of a canary (normally one field; each field becomes a Cutover step).
fn steps(step: &Value, path: &str, doc: &Value, state: &mut State, src: &mut Source<'_>) {
    for (key, value) in entries(Some(step)) {
        let p = field(path, key);
        let needs_weights = |src: &mut Source<'_>, state: &State| -> bool {
            if state.weighted {
                return true;
            }
            src.skip(
                &p,
                format!("{}; the step was left out", state.unweighted_why),
            );
            false
        };
        // Header and mirror routes: weights, through a router other than SMI (`smi_cannot`:
        // what its TrafficSplits cannot do).
        let needs_routes = |src: &mut Source<'_>, state: &State, smi_cannot: &str| -> bool {
            if !needs_weights(src, state) {
                return false;
            }
            if state.smi {
                src.skip(
                    &p,
                    format!("SMI TrafficSplits {smi_cannot}; the step was left out"),
                );
                return false;
            }
            true
        };
        match key {
            "setWeight" => {
                if !needs_weights(src, state) {
                    continue;
                }
                let Some(w) = int(value, &p, src) else {
                    continue;
                };
                let scaled = w * 100;
                if scaled % state.max_weight != 0
                    || !(0..=100).contains(&(scaled / state.max_weight))
                {
                    src.skip(
                        &p,
                        format!(
                            "{w} of maxTrafficWeight {} is not a whole percent; Cutover's \
                             weights are percents",
                            state.max_weight
                        ),
                    );
                    continue;
                }
                state.strategy.steps.push(Step {
                    set_weight: i32::try_from(scaled / state.max_weight).ok(),
                    ..Step::default()
                });
            }
            "pause" => {
                let mut pause = Pause::default();
                let mut ok = true;
                for (k, d) in entries(Some(value)) {
                    let dp = field(&p, k);
                    if k != "duration" {
                        src.unknown(&dp);
                        continue;
                    }
                    match pause_duration(d) {
                        Some(s) => pause.duration = Some(s),
                        None => {
                            src.skip(
                                &dp,
                                format!(
                                    "{d} is not a duration Cutover accepts (e.g. 30s, 1h); \
                                     the step was left out"
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                if ok {
                    state.strategy.steps.push(Step {
                        pause: Some(pause),
                        ..Step::default()
                    });
                }
            }
            "analysis" => {
                if let Some(a) = analysis_ref(value, &p, doc, src) {
                    state.strategy.steps.push(Step {
                        analysis: Some(a),
                        ..Step::default()
                    });
                }
            }
            "setHeaderRoute" => {
                if needs_routes(src, state, "have no header routes")
                    && let Some(route) = header_route(value, &p, src)
                {
                    state.strategy.steps.push(Step {
                        set_header_route: Some(route),
                        ..Step::default()
                    });
                }
            }
            "setMirrorRoute" => {
                if needs_routes(src, state, "cannot mirror")
                    && let Some(mirror) = mirror_route(value, &p, src)
                {
                    state.strategy.steps.push(Step {
                        set_mirror: Some(mirror),
                        ..Step::default()
                    });
                }
            }
            "setCanaryScale" => src.skip(
                &p,
                "Cutover runs the new color at full size from the start; its scale is not set \
                 per step (the step was left out)",
            ),
            "experiment" => src.skip(
                &p,
                "Cutover has no experiments; the compare provider of an analysis judges the \
                 new color against the live one (the step was left out)",
            ),
            "plugin" => src.skip(&p, "Cutover has no step plugins (the step was left out)"),
            _ => src.unknown(&p),
        }
    }
}

/// A pause's duration: Argo takes seconds as a number or a Go duration.
fn pause_duration(d: &Value) -> Option<String> {
    match d {
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0).map(seconds),
        Value::String(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Some(seconds(n)),
            _ => is_duration(s).then(|| s.clone()),
        },
        _ => None,
    }
}

fn string_match(v: &Value, path: &str, src: &mut Source<'_>) -> Option<StringMatch> {
    let mut out = StringMatch::default();
    let mut set = 0;
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        let s = match scalar_text(value) {
            Some(s) => s,
            None => {
                src.skip(&p, "expected a string");
                continue;
            }
        };
        let slot = match key {
            "exact" => &mut out.exact,
            "prefix" => &mut out.prefix,
            "regex" => &mut out.regex,
            _ => {
                src.unknown(&p);
                continue;
            }
        };
        set += 1;
        if set > 1 {
            src.skip(
                &p,
                "a match has one of exact, prefix, regex; the first was used",
            );
            continue;
        }
        *slot = Some(s);
    }
    (set > 0).then_some(out)
}

fn header_route(v: &Value, path: &str, src: &mut Source<'_>) -> Option<HeaderRoute> {
    let mut route = HeaderRoute::default();
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            // Cutover names its header route itself.
            "name" => {}
            "match" => {
                for (i, m) in items(Some(value)).iter().enumerate() {
                    let mp = at(&p, i);
                    let mut header = HeaderMatch::default();
                    let mut value_match = None;
                    for (k, val) in entries(Some(m)) {
                        let kp = field(&mp, k);
                        match k {
                            "headerName" => header.header_name = val.as_str().map(str::to_owned),
                            "headerValue" => value_match = string_match(val, &kp, src),
                            _ => src.unknown(&kp),
                        }
                    }
                    match (header.header_name.is_some(), value_match) {
                        (true, Some(v)) => {
                            header.header_value = v;
                            route.matches.push(header);
                        }
                        _ => {
                            src.skip(&mp, "a header match needs headerName and headerValue; the step was left out");
                            return None;
                        }
                    }
                }
            }
            _ => src.unknown(&p),
        }
    }
    Some(route)
}

/// Whether a mirror match block takes every request (no method or header condition, and
/// no path or the path prefix `/`).
fn matches_everything(block: &Value) -> bool {
    entries(Some(block)).into_iter().all(|(k, v)| match k {
        "path" => entries(Some(v)) == vec![("prefix", &Value::String("/".to_owned()))],
        _ => false,
    })
}

fn mirror_route(v: &Value, path: &str, src: &mut Source<'_>) -> Option<Mirror> {
    let mut percent = 100;
    let mut blocks: &[Value] = &[];
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "name" => {}
            "percentage" => {
                if let Some(n) = int(value, &p, src).filter(|n| (0..=100).contains(n)) {
                    percent = n;
                }
            }
            "match" => blocks = items(Some(value)),
            _ => src.unknown(&p),
        }
    }
    if blocks.is_empty() {
        // Argo: a mirror route without matches removes the mirror.
        return Some(Mirror { percent: 0 });
    }
    if !blocks.iter().all(matches_everything) {
        src.skip(
            &field(path, "match"),
            "Cutover mirrors a share of all requests; choosing which (method, path, headers) \
             has no counterpart, so the step was left out",
        );
        return None;
    }
    Some(Mirror {
        percent: i32::try_from(percent).unwrap_or(100),
    })
}

/// Splits a field path (`metadata.labels['app']`, `spec.template.metadata.labels.version`).
fn field_path(path: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let quote = after.chars().next()?;
            if quote != '\'' && quote != '"' {
                return None;
            }
            let end = after[1..].find(quote)?;
            out.push(after[1..1 + end].to_owned());
            rest = after[1 + end + 1..].strip_prefix(']')?;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    Some(out)
}

/// The arguments of an analysis reference. `None` for an argument that needs no value
/// (Cutover's built-in of the same name gives it).
fn analysis_arg(
    a: &Value,
    path: &str,
    doc: &Value,
    src: &mut Source<'_>,
) -> Option<Option<AnalysisArg>> {
    let name = a.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        src.skip(path, "an argument needs a name");
        return None;
    }
    for (key, _) in entries(Some(a)) {
        if !matches!(key, "name" | "value" | "valueFrom") {
            src.unknown(&field(path, key));
        }
    }
    let arg = |value: String| {
        Some(Some(AnalysisArg {
            name: name.to_owned(),
            value,
        }))
    };
    if let Some(v) = a.get("value") {
        return match scalar_text(v) {
            Some(v) => arg(super::argo_analysis::placeholders(&v)),
            None => {
                src.skip(&field(path, "value"), "expected a string");
                None
            }
        };
    }
    let from_path = field(path, "valueFrom");
    for (key, value) in entries(a.get("valueFrom")) {
        let p = field(&from_path, key);
        match key {
            "podTemplateHashValue" => src.skip(
                &p,
                "Cutover tells the colors apart by the label cutover.dev/color, not a pod \
                 template hash: use {{args.color}} (the new color) or {{args.liveColor}} in the \
                 template's queries; the argument was left out",
            ),
            "fieldRef" => {
                let fp = value
                    .get("fieldPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let segments = field_path(fp).unwrap_or_default();
                if segments.first().map(String::as_str) == Some("status") {
                    src.skip(
                        &p,
                        format!(
                            "{fp} is a status field of the Rollout, known only while it runs; \
                             Cutover has no counterpart (the argument was left out)"
                        ),
                    );
                    continue;
                }
                if fp == "metadata.namespace" && namespace_of(doc).is_none() {
                    if name == "namespace" {
                        // Cutover's built-in `namespace` is the same value.
                        return Some(None);
                    }
                    src.skip(
                        &p,
                        "the Rollout's namespace is not in the input; give the value, or use \
                         Cutover's built-in {{args.namespace}} in the template (the argument \
                         was left out)",
                    );
                    continue;
                }
                let mut at_value = Some(doc);
                for s in &segments {
                    at_value = at_value.and_then(|v| v.get(s));
                }
                match at_value.and_then(scalar_text) {
                    Some(v) if !segments.is_empty() => return arg(v),
                    _ => src.skip(
                        &p,
                        format!(
                            "{fp:?} is not set in the Rollout (Cutover's arguments are values, \
                             resolved here); the argument was left out"
                        ),
                    ),
                }
            }
            _ => src.unknown(&p),
        }
    }
    None
}

/// An analysis reference (steps, pre/post-promotion, background).
fn analysis_ref(v: &Value, path: &str, doc: &Value, src: &mut Source<'_>) -> Option<AnalysisRef> {
    let mut out = AnalysisRef::default();
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "templates" => {
                for (i, t) in items(Some(value)).iter().enumerate() {
                    let tp = at(&p, i);
                    let mut r = TemplateRef::default();
                    for (k, val) in entries(Some(t)) {
                        let kp = field(&tp, k);
                        match k {
                            "templateName" => {
                                r.template_name =
                                    text(val, &kp, src).unwrap_or_default().to_owned();
                            }
                            "clusterScope" => {
                                r.cluster_scope = boolean(val, &kp, src).unwrap_or(false);
                            }
                            _ => src.unknown(&kp),
                        }
                    }
                    if r.template_name.is_empty() {
                        src.skip(&tp, "names no template");
                    } else {
                        out.templates.push(r);
                    }
                }
            }
            "args" => {
                for (i, a) in items(Some(value)).iter().enumerate() {
                    if let Some(Some(arg)) = analysis_arg(a, &at(&p, i), doc, src) {
                        out.args.push(arg);
                    }
                }
            }
            "dryRun" => src.skip(
                &p,
                "Cutover has no dry-run metrics: every metric of a template gates the release",
            ),
            "measurementRetention" => src.skip(
                &p,
                "Cutover keeps the 10 newest measurements of each metric (and counts them all)",
            ),
            "analysisRunMetadata" => src.skip(
                &p,
                "Cutover labels its AnalysisRuns itself (gate, revision, BlueGreenDeployment)",
            ),
            "startingStep" => src.skip(
                &p,
                "Cutover's background analysis runs from the start of the release to the \
                 promotion; it cannot start at a later step",
            ),
            _ => src.unknown(&p),
        }
    }
    if out.templates.is_empty() {
        src.skip(path, "no template to run; the analysis was left out");
        return None;
    }
    Some(out)
}

/// The port of Cutover's Services: the first Service the Rollout names that is in the
/// input, else a Service named like the BlueGreenDeployment, else the pods' first port.
fn service_port(
    inv: &Inventory<'_>,
    doc: &Value,
    name: &str,
    named: &[(String, String)],
    pod_template: Option<&Value>,
    src: &mut Source<'_>,
) -> ServicePort {
    for (path, svc) in named {
        if let Some((_, service)) = inv.find(core_group, "Service", svc, doc)
            && let Some(port) = port_of(service, path, src)
        {
            return port;
        }
    }
    if named.is_empty()
        && let Some((_, service)) = inv.find(core_group, "Service", name, doc)
        && let Some(port) = port_of(service, "spec", src)
    {
        return port;
    }
    let container_port = pod_template
        .and_then(|t| t.pointer("/spec/containers/0/ports/0/containerPort"))
        .and_then(Value::as_i64)
        .and_then(|p| i32::try_from(p).ok());
    match (named.first(), container_port) {
        (None, Some(port)) => ServicePort {
            port,
            ..ServicePort::default()
        },
        (Some((path, svc)), Some(port)) => {
            src.skip(
                path,
                format!(
                    "Service {svc} is not in the input, so its port is unknown: spec.service.port \
                     was set to the pods' first container port, {port}; check it, or import the \
                     Service with the Rollout"
                ),
            );
            ServicePort {
                port,
                ..ServicePort::default()
            }
        }
        (first, None) => {
            src.skip(
                first.map_or("spec", |(p, _)| p.as_str()),
                "neither a Service of the input nor a container port says which port to serve: \
                 spec.service.port was set to 80; check it",
            );
            ServicePort {
                port: 80,
                ..ServicePort::default()
            }
        }
    }
}

/// The first port of a Service, reporting (at `path`) the ports that do not carry over.
pub(crate) fn port_of(service: &Value, path: &str, src: &mut Source<'_>) -> Option<ServicePort> {
    let ports = items(service.pointer("/spec/ports"));
    let first = ports.first()?;
    let port = i32::try_from(first.get("port")?.as_i64()?).ok()?;
    let svc = name_of(service).unwrap_or_default();
    if ports.len() > 1 {
        src.skip(
            path,
            format!(
                "Service {svc} has {} ports; Cutover's Services expose one (spec.service): the \
                 first, {port}, was taken",
                ports.len()
            ),
        );
    }
    let target_port = match first.get("targetPort") {
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(IntOrString::Int),
        Some(Value::String(s)) => Some(IntOrString::String(s.clone())),
        _ => None,
    };
    Some(ServicePort {
        port,
        target_port,
        name: first.get("name").and_then(Value::as_str).map(str::to_owned),
        protocol: first
            .get("protocol")
            .and_then(Value::as_str)
            .filter(|p| *p != "TCP")
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Options, import};
    use super::*;

    fn bgd_of(docs: &[Value]) -> (Value, Vec<String>) {
        let imported = import(docs, &Options::default());
        let bgd = imported
            .objects
            .iter()
            .find(|o| o["kind"] == "BlueGreenDeployment")
            .cloned()
            .expect("a BlueGreenDeployment");
        let paths = imported
            .untranslated
            .iter()
            .map(|u| format!("{}: {}", u.source, u.path))
            .collect();
        (bgd, paths)
    }

    fn service(name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name },
            "spec": { "selector": { "app": "shop" }, "ports": [ { "port": 80, "targetPort": 8080 } ] } })
    }

    fn canary(steps: Value) -> Value {
        json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "shop" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [ { "name": "app", "image": "shop:1",
                        "ports": [ { "containerPort": 8080 } ] } ] } },
                "strategy": { "canary": {
                    "stableService": "shop-blue", "canaryService": "shop-green",
                    "trafficRouting": { "plugins": { "argoproj-labs/gatewayAPI": { "httpRoute": "shop" } } },
                    "steps": steps
                } }
            }
        })
    }

    #[test]
    fn canary_steps_carry_over_exactly() {
        let (bgd, untranslated) = bgd_of(&[
            service("shop-blue"),
            canary(json!([
                { "setWeight": 20 },
                { "pause": { "duration": 30 } },
                { "analysis": { "templates": [ { "templateName": "error-rate" } ] } },
                { "setWeight": 50 },
                { "pause": {} }
            ])),
        ]);
        assert_eq!(untranslated, Vec::<String>::new());
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([
                { "setWeight": 20 },
                { "pause": { "duration": "30s" } },
                { "analysis": { "templates": [ { "templateName": "error-rate" } ] } },
                { "setWeight": 50 },
                { "pause": {} }
            ])
        );
        assert_eq!(
            bgd["spec"]["trafficRouting"],
            json!({ "gatewayAPI": { "httpRoute": "shop" } })
        );
        assert_eq!(
            bgd["spec"]["service"],
            json!({ "port": 80, "targetPort": 8080 })
        );
        assert_eq!(
            bgd["spec"]["strategy"]["standby"],
            json!({ "mode": "ScaleDown", "scaleDownDelaySeconds": 30 })
        );
    }

    #[test]
    fn header_and_mirror_routes() {
        let (bgd, untranslated) = bgd_of(&[
            service("shop-blue"),
            canary(json!([
                { "setHeaderRoute": { "name": "beta", "match": [
                    { "headerName": "x-beta", "headerValue": { "exact": "1" } } ] } },
                { "setMirrorRoute": { "name": "m", "percentage": 20, "match": [ { "path": { "prefix": "/" } } ] } },
                { "setMirrorRoute": { "name": "m" } },
                { "setMirrorRoute": { "name": "m", "match": [ { "method": { "exact": "GET" } } ] } },
                { "setHeaderRoute": { "name": "beta" } },
                { "experiment": { "templates": [] } }
            ])),
        ]);
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([
                { "setHeaderRoute": { "match": [ { "headerName": "x-beta", "headerValue": { "exact": "1" } } ] } },
                { "setMirror": { "percent": 20 } },
                { "setMirror": { "percent": 0 } },
                { "setHeaderRoute": { "match": [] } }
            ])
        );
        assert_eq!(
            untranslated,
            vec![
                "Rollout/shop: spec.strategy.canary.steps[3].setMirrorRoute.match",
                "Rollout/shop: spec.strategy.canary.steps[5].experiment",
                // The HTTPRoute is not in the input: its backends are already named right.
            ]
        );
    }

    #[test]
    fn weights_need_weighted_routing() {
        let mut rollout = canary(json!([ { "setWeight": 20 }, { "pause": { "duration": "1m" } } ]));
        rollout["spec"]["strategy"]["canary"]
            .as_object_mut()
            .expect("canary")
            .remove("trafficRouting");
        let (bgd, untranslated) = bgd_of(&[rollout, service("shop-blue")]);
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([ { "pause": { "duration": "1m" } } ])
        );
        assert_eq!(bgd["spec"]["trafficRouting"], json!({ "service": {} }));
        assert_eq!(
            untranslated,
            vec![
                // Without a route, clients call the stable Service, named differently.
                "Rollout/shop: spec.strategy.canary.stableService",
                "Rollout/shop: spec.strategy.canary.steps[0].setWeight",
            ]
        );
    }

    #[test]
    fn blue_green_with_its_services_and_analysis_args() {
        let rollout = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "shop", "namespace": "prod", "labels": { "region": "eu" } },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [ { "name": "app", "image": "shop:1" } ] } },
                "strategy": { "blueGreen": {
                    "activeService": "shop", "previewService": "shop-preview",
                    "autoPromotionEnabled": true, "autoPromotionSeconds": 60,
                    "scaleDownDelaySeconds": 120,
                    "prePromotionAnalysis": {
                        "templates": [ { "templateName": "smoke", "clusterScope": true } ],
                        "args": [
                            { "name": "svc", "value": "shop-preview" },
                            { "name": "region", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['region']" } } },
                            { "name": "ns", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                            { "name": "hash", "valueFrom": { "podTemplateHashValue": "Latest" } }
                        ]
                    }
                } }
            }
        });
        let service = |name: &str| {
            json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": name, "namespace": "prod" },
                "spec": { "selector": { "app": "shop" }, "ports": [ { "port": 80, "targetPort": 8080, "name": "web" } ] } })
        };
        let docs = [
            rollout,
            service("shop"),
            service("shop-preview"),
            service("unrelated"),
        ];
        let imported = import(&docs, &Options::default());
        assert_eq!(
            imported.objects.len(),
            2,
            "the two Services of the Rollout are left out"
        );
        assert_eq!(imported.notes.len(), 2, "{:?}", imported.notes);
        let bgd = &imported.objects[0];
        assert_eq!(
            bgd["metadata"],
            json!({ "name": "shop", "namespace": "prod", "labels": { "region": "eu" } })
        );
        assert_eq!(bgd["spec"]["replicas"], 3);
        assert_eq!(
            bgd["spec"]["service"],
            json!({ "port": 80, "targetPort": 8080, "name": "web" })
        );
        assert_eq!(bgd["spec"]["trafficRouting"], json!({ "service": {} }));
        assert_eq!(
            bgd["spec"]["strategy"],
            json!({
                "autoPromotion": { "enabled": true, "afterSeconds": 60 },
                "standby": { "mode": "ScaleDown", "scaleDownDelaySeconds": 120 },
                "prePromotionAnalysis": {
                    "templates": [ { "templateName": "smoke", "clusterScope": true } ],
                    "args": [
                        { "name": "svc", "value": "shop-preview" },
                        { "name": "region", "value": "eu" },
                        { "name": "ns", "value": "prod" }
                    ]
                }
            })
        );
        let paths: Vec<&str> = imported
            .untranslated
            .iter()
            .map(|u| u.path.as_str())
            .collect();
        assert_eq!(
            paths,
            vec![
                "spec.strategy.blueGreen.prePromotionAnalysis.args[3].valueFrom.podTemplateHashValue"
            ]
        );
    }

    #[test]
    fn field_paths_split() {
        assert_eq!(
            field_path("metadata.labels['app.kubernetes.io/name']"),
            Some(vec![
                "metadata".into(),
                "labels".into(),
                "app.kubernetes.io/name".into()
            ])
        );
        assert_eq!(
            field_path("spec.template.metadata.labels.version"),
            Some(vec![
                "spec".into(),
                "template".into(),
                "metadata".into(),
                "labels".into(),
                "version".into()
            ])
        );
        assert_eq!(field_path("a..b"), None);
    }
}
