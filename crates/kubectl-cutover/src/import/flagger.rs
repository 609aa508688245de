//! Flagger `Canary` (with the `MetricTemplate`s it uses) → a `BlueGreenDeployment` of the
//! same name that adopts the target Deployment (`spec.workloadRef`, `scaleDown: OnSuccess`:
//! Flagger scales the target to zero too), plus the AnalysisTemplates `<name>-metrics` (the
//! analysis metrics) and `<name>-pre-rollout` (the pre-rollout webhooks).
//!
//! Flagger's strategies become steps:
//! - canary (`stepWeight`/`maxWeight` or `stepWeights`): `setWeight w` then an analysis for
//!   every weight (`w = step, 2·step, …` until `maxWeight` is reached, as Flagger counts);
//!   the metrics are measured once, an `interval` after the weight was set (a `pause` of one
//!   interval when there are no metrics). With `mirror`, one mirrored interval comes first.
//! - A/B testing (`match` + `iterations`): `setHeaderRoute` then an analysis of `iterations`
//!   measurements, one per `interval`, tolerating `threshold - 1` failed ones.
//! - blue/green (`iterations`; also the `kubernetes` provider, where Flagger does the same):
//!   no steps, the metrics in `prePromotionAnalysis` (`iterations` measurements); with
//!   `mirror`, a `setMirror` step and the analysis while mirrored.
//!
//! Pre-rollout webhooks run in `prePromotionAnalysis` as web metrics (a POST of Flagger's
//! payload); the old color is scaled to zero after promotion (`standby: Zero`), as Flagger
//! leaves no old version running; the progress deadline aborts, as Flagger rolls back.

use std::collections::BTreeMap;

use cutover_api::BlueGreenDeployment;
use cutover_api::BlueGreenDeploymentSpec;
use cutover_api::analysis::{
    AnalysisTemplate, AnalysisTemplateSpec, Metric, PrometheusProvider, Provider, WebHeader,
    WebProvider,
};
use cutover_api::blue_green::{
    AnalysisRef, AutoPromotion, GatewayApiRouting, HeaderMatch, HeaderRoute, IstioRouting, Mirror,
    Pause, ScaleDown, ServicePort, ServiceRouting, SmiRouting, Standby, StandbyMode, Step,
    Strategy, StringMatch, TemplateRef, TrafficRouting, VirtualServiceRef, WorkloadRef,
};
use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::argo::{MAX_STEPS, fits, owned_services};
use super::{
    Claim, Inventory, Options, Source, Translation, at, boolean, core_group, duration_seconds,
    entries, field, int, is_duration, items, metadata, name_of, namespace_of, required_name,
    seconds, text,
};

/// Which MetricTemplates (input indices) the Canaries used, and which were already reported.
#[derive(Debug)]
pub(crate) struct TemplateUse<'a> {
    pub used: &'a mut Vec<usize>,
    pub reported: &'a mut Vec<usize>,
}

/// Flagger's analysis interval when none is given.
const DEFAULT_INTERVAL: &str = "60s";
/// The window of a metric's query when none is given.
const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// Cutover's longest provider timeout.
const MAX_TIMEOUT_SECONDS: f64 = 300.0;

/// How traffic moves, from `spec.provider`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Router {
    /// `kubernetes`, or a provider with no counterpart: Flagger's blue/green.
    Service,
    Istio,
    Smi,
    Gateway,
}

impl Router {
    fn weighted(&self) -> bool {
        !matches!(self, Router::Service)
    }
}

/// The parts of `spec.analysis` the strategy is built from.
#[derive(Debug, Default)]
struct Analysis {
    interval: Option<String>,
    threshold: Option<i64>,
    max_weight: Option<i64>,
    step_weight: Option<i64>,
    step_weights: Vec<i64>,
    iterations: Option<i64>,
    /// The first match block's header conditions.
    header_match: Option<Vec<HeaderMatch>>,
    mirror: bool,
    mirror_weight: Option<i64>,
    metrics: Vec<Metric>,
    pre_rollout: Vec<Metric>,
}

/// Reports that Flagger generated the `kind` named `apex` from `spec.service`, where Cutover
/// weighs the `weighed` (`backendRefs of an HTTPRoute`) of one the user owns, with a `rule`
/// sending to the colors of `name`.
fn route_to_own(
    src: &mut Source<'_>,
    kind: &str,
    weighed: &str,
    rule: &str,
    apex: &str,
    name: &str,
) {
    src.skip(
        "spec.service",
        format!(
            "Flagger generated the {kind} {apex} from it; Cutover weighs the {weighed} you own: \
             create {apex} with a {rule} sending to {name}-blue (weight 100) and {name}-green \
             (weight 0)"
        ),
    );
}

/// A Flagger Canary.
pub(crate) fn canary(
    doc: &Value,
    inv: &Inventory<'_>,
    options: &Options,
    src: &mut Source<'_>,
    templates: &mut TemplateUse<'_>,
) -> Translation {
    let Some(name) = required_name(doc, "a Canary", src) else {
        return Translation::default();
    };
    if !fits(name, "", src) {
        return Translation::default();
    }
    let meta = metadata(doc, name, src);
    let spec = doc.get("spec");
    let mut claims = Vec::new();

    // The target: adopted as it is.
    let Some(target) = target(spec.and_then(|s| s.get("targetRef")), src) else {
        return Translation::default();
    };
    let deployment = inv
        .find(|g| g == "apps", "Deployment", &target, doc)
        .map(|(_, d)| d);
    let replicas = match deployment {
        Some(d) => d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(1),
        None => {
            src.skip(
                "spec.targetRef",
                format!(
                    "Deployment {target} is not in the input, so its replicas are unknown: \
                     spec.replicas was set to 1; set it, or import the Deployment with the Canary"
                ),
            );
            1
        }
    };

    // The provider.
    let provider = spec.and_then(|s| s.get("provider")).and_then(Value::as_str);
    let (router, builtins) = match provider {
        None => {
            src.skip(
                "spec.provider",
                "not set: Flagger took it from its -mesh-provider flag (istio by default); \
                 translated for istio: set spec.provider to import it for another provider",
            );
            (Router::Istio, Some("istio"))
        }
        Some("istio") => (Router::Istio, Some("istio")),
        Some("linkerd") => (Router::Smi, Some("linkerd")),
        Some(p) if p == "smi" || p.starts_with("smi:") || p == "osm" => (Router::Smi, None),
        Some(p) if p.starts_with("gatewayapi") => (Router::Gateway, None),
        Some("kubernetes") => (Router::Service, None),
        Some(other) => {
            src.skip(
                "spec.provider",
                format!(
                    "Cutover routes with gatewayAPI (which most ingress controllers implement), \
                     istio, smi or service; {other} has no counterpart: translated as Flagger's \
                     kubernetes provider (blue/green, no weights)"
                ),
            );
            (Router::Service, None)
        }
    };

    // The Service.
    let mut service = ServicePort::default();
    let mut apex = target.clone();
    let service_value = spec.and_then(|s| s.get("service"));
    for (key, value) in entries(service_value) {
        let p = field("spec.service", key);
        match key {
            "port" => {
                service.port = int(value, &p, src)
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or_default();
            }
            "targetPort" => {
                service.target_port = match value {
                    Value::Number(n) => n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .map(IntOrString::Int),
                    Value::String(s) => Some(IntOrString::String(s.clone())),
                    _ => None,
                };
            }
            "portName" => service.name = text(value, &p, src).map(str::to_owned),
            "name" => apex = text(value, &p, src).unwrap_or(&apex).to_owned(),
            "portDiscovery" => {
                if boolean(value, &p, src) == Some(true) {
                    src.skip(
                        &p,
                        "Cutover's Services expose spec.service.port only; other container \
                         ports are not discovered",
                    );
                }
            }
            "appProtocol" => src.skip(&p, "Cutover's Services set no appProtocol"),
            "hosts" | "gateways" | "gatewayRefs" | "match" | "rewrite" | "retries" | "timeout"
            | "headers" | "corsPolicy" | "trafficPolicy" | "delegation" | "mirror"
            | "sessionAffinity" | "primary" | "canary" | "apex" | "backends" | "cookie" => {
                src.skip(
                    &p,
                    "part of the routing objects Flagger generated; Cutover does not generate \
                     them (put it in the route you own)",
                );
            }
            _ => src.unknown(&p),
        }
    }
    if service.port == 0 {
        match deployment
            .and_then(|d| d.pointer("/spec/template/spec/containers/0/ports/0/containerPort"))
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
        {
            Some(port) => service.port = port,
            None => {
                src.skip(
                    "spec.service.port",
                    "missing: spec.service.port was set to 80; check it",
                );
                service.port = 80;
            }
        }
    }
    if apex != name {
        src.skip(
            if service_value.and_then(|s| s.get("name")).is_some() {
                "spec.service.name"
            } else {
                "spec.targetRef.name"
            },
            format!(
                "Flagger's Service was {apex}; Cutover's live Service is named after the \
                 BlueGreenDeployment ({name}): point clients at {name}, or rename the Canary \
                 to {apex} before importing"
            ),
        );
    }
    let routing = match router {
        Router::Service => TrafficRouting {
            service: Some(ServiceRouting {}),
            ..TrafficRouting::default()
        },
        Router::Istio => {
            route_to_own(
                src,
                "VirtualService",
                "routes of a VirtualService",
                "route",
                &apex,
                name,
            );
            TrafficRouting {
                istio: Some(IstioRouting {
                    virtual_service: VirtualServiceRef {
                        name: apex.clone(),
                        routes: Vec::new(),
                    },
                }),
                ..TrafficRouting::default()
            }
        }
        Router::Gateway => {
            route_to_own(
                src,
                "HTTPRoute",
                "backendRefs of an HTTPRoute",
                "rule",
                &apex,
                name,
            );
            TrafficRouting {
                gateway_api: Some(GatewayApiRouting {
                    http_route: apex.clone(),
                }),
                ..TrafficRouting::default()
            }
        }
        Router::Smi => TrafficRouting {
            smi: Some(SmiRouting {
                traffic_split_name: apex.clone(),
            }),
            ..TrafficRouting::default()
        },
    };

    let mut strategy = Strategy {
        abort_on_deadline: true,
        standby: Some(Standby {
            mode: StandbyMode::Zero,
            scale_down_delay_seconds: 0,
        }),
        ..Strategy::default()
    };
    let mut analysis_value = None;
    for (key, value) in entries(spec) {
        let p = field("spec", key);
        match key {
            "targetRef" | "provider" | "service" => {}
            "analysis" | "canaryAnalysis" => analysis_value = Some((p, value)),
            "progressDeadlineSeconds" => {
                strategy.progress_deadline_seconds = int(value, &p, src).filter(|n| *n >= 1);
            }
            "autoscalerRef" => autoscaler(value, &p, doc, inv, name, &mut claims, src),
            "ingressRef" | "upstreamRef" => src.skip(
                &p,
                "Cutover routes with gatewayAPI, istio, smi or service; this routing object \
                 has no counterpart",
            ),
            "skipAnalysis" => {
                if boolean(value, &p, src) == Some(true) {
                    src.skip(
                        &p,
                        "Cutover always runs the analysis; to release without it, promote with \
                         `kubectl cutover promote --full`",
                    );
                }
            }
            // Cutover always gives the adopted Deployment its size back on deletion.
            "revertOnDeletion" => {}
            "suspend" => {
                if boolean(value, &p, src) == Some(true) {
                    src.skip(
                        &p,
                        "Cutover has no suspension; spec.paused holds a release at its step",
                    );
                }
            }
            _ => src.unknown(&p),
        }
    }

    let ctx = Context {
        name,
        namespace: namespace_of(doc),
        builtins,
        metrics_server: options.metrics_server.as_deref(),
    };
    let mut analysis = Analysis::default();
    if let Some((p, value)) = analysis_value {
        analysis = read_analysis(value, &p, &ctx, doc, inv, src, templates);
    }
    let interval = analysis
        .interval
        .clone()
        .unwrap_or_else(|| DEFAULT_INTERVAL.to_owned());
    let threshold = analysis.threshold.unwrap_or(1).max(1);
    let limit = i32::try_from(threshold - 1).unwrap_or(0);

    // The strategy, as Flagger picks it.
    #[derive(PartialEq)]
    enum Kind {
        Canary,
        AbTesting,
        BlueGreen,
    }
    let mut iterations = analysis.iterations.filter(|n| *n > 0);
    let mut kind = match (&analysis.header_match, iterations) {
        (Some(_), Some(_)) => Kind::AbTesting,
        (_, Some(_)) => Kind::BlueGreen,
        _ => Kind::Canary,
    };
    if !router.weighted() {
        // Flagger's own rule for the kubernetes provider.
        if analysis.header_match.is_some() {
            src.skip(
                "spec.analysis.match",
                "A/B testing needs weighted routing (Flagger ignores it for the kubernetes \
                 provider too)",
            );
        }
        if let Some(key) = (kind == Kind::Canary)
            .then(|| weight_field(&analysis))
            .flatten()
        {
            src.skip(
                &field("spec.analysis", key),
                "progressive traffic needs weighted routing; as Flagger does for the \
                 kubernetes provider, 10 iterations of blue/green were used",
            );
        }
        iterations = Some(iterations.unwrap_or(10));
        kind = Kind::BlueGreen;
    } else if analysis.header_match.is_some() && kind == Kind::Canary {
        src.skip(
            "spec.analysis.match",
            "matches narrow a progressive canary in Flagger; Cutover's header route is a step \
             of its own (A/B testing needs iterations)",
        );
    }
    let mirror = analysis.mirror
        && kind != Kind::AbTesting
        && match router {
            Router::Smi => {
                src.skip("spec.analysis.mirror", "SMI TrafficSplits cannot mirror");
                false
            }
            Router::Service => {
                src.skip("spec.analysis.mirror", "mirroring needs weighted routing");
                false
            }
            _ => true,
        };
    if analysis.mirror && kind == Kind::AbTesting {
        src.skip(
            "spec.analysis.mirror",
            "Flagger does not mirror during A/B testing either",
        );
    }
    let mirror_percent =
        i32::try_from(analysis.mirror_weight.unwrap_or(100).clamp(0, 100)).unwrap_or(100);

    // The AnalysisTemplates.
    let mut objects = Vec::new();
    let metrics_template = format!("{name}-metrics");
    let pre_rollout_template = format!("{name}-pre-rollout");
    let count = match kind {
        Kind::Canary => 1,
        _ => iterations.unwrap_or(1),
    };
    let has_metrics = !analysis.metrics.is_empty();
    if has_metrics {
        let metrics = analysis
            .metrics
            .iter()
            .map(|m| Metric {
                interval: Some(interval.clone()),
                count: i32::try_from(count).ok(),
                initial_delay: Some(interval.clone()),
                failure_limit: Some(if kind == Kind::Canary { 0 } else { limit }),
                inconclusive_limit: Some(if kind == Kind::Canary { 0 } else { limit }),
                consecutive_error_limit: Some(limit),
                ..m.clone()
            })
            .collect();
        objects.push(template(&metrics_template, &meta, metrics));
    }
    if !analysis.pre_rollout.is_empty() {
        let hooks = analysis
            .pre_rollout
            .iter()
            .map(|m| Metric {
                interval: Some(interval.clone()),
                count: Some(1),
                consecutive_error_limit: Some(limit),
                ..m.clone()
            })
            .collect();
        objects.push(template(&pre_rollout_template, &meta, hooks));
        strategy.pre_promotion_analysis = Some(reference(&pre_rollout_template));
    }
    if kind == Kind::Canary && threshold > 1 && has_metrics {
        src.skip(
            "spec.analysis.threshold",
            format!(
                "Flagger holds the weight after a failed check and checks again, rolling back \
                 after {threshold} failed checks in all; Cutover measures once per step and \
                 aborts on a failed measurement"
            ),
        );
    }

    // The steps.
    let check = |n: i64| -> Step {
        if has_metrics {
            Step {
                analysis: Some(reference(&metrics_template)),
                ..Step::default()
            }
        } else {
            let total = duration_seconds(&interval).unwrap_or(60.0) * n as f64;
            Step {
                pause: Some(Pause {
                    duration: Some(if n == 1 {
                        interval.clone()
                    } else {
                        seconds(total.ceil() as i64)
                    }),
                }),
                ..Step::default()
            }
        }
    };
    let mut steps = Vec::new();
    match kind {
        Kind::Canary => {
            let weights = weights(&analysis, src);
            if mirror {
                steps.push(Step {
                    set_mirror: Some(Mirror {
                        percent: mirror_percent,
                    }),
                    ..Step::default()
                });
                steps.push(check(1));
                steps.push(Step {
                    set_mirror: Some(Mirror { percent: 0 }),
                    ..Step::default()
                });
            }
            for w in weights {
                steps.push(Step {
                    set_weight: i32::try_from(w).ok(),
                    ..Step::default()
                });
                steps.push(check(1));
            }
        }
        Kind::AbTesting => {
            if router == Router::Smi {
                src.skip(
                    "spec.analysis.match",
                    "SMI TrafficSplits have no header routes; the A/B test runs without one",
                );
            } else if let Some(matches) = analysis.header_match.clone() {
                steps.push(Step {
                    set_header_route: Some(HeaderRoute { matches }),
                    ..Step::default()
                });
            }
            steps.push(check(count));
        }
        Kind::BlueGreen => {
            if mirror {
                steps.push(Step {
                    set_mirror: Some(Mirror {
                        percent: mirror_percent,
                    }),
                    ..Step::default()
                });
                steps.push(check(count));
            } else if has_metrics {
                let pre = strategy
                    .pre_promotion_analysis
                    .get_or_insert_with(|| AnalysisRef {
                        templates: Vec::new(),
                        args: Vec::new(),
                    });
                pre.templates.push(TemplateRef {
                    template_name: metrics_template.clone(),
                    cluster_scope: false,
                });
            } else {
                // No metrics: Flagger still waits `iterations` intervals before it switches.
                let total = duration_seconds(&interval).unwrap_or(60.0) * count as f64;
                strategy.auto_promotion = Some(AutoPromotion {
                    enabled: true,
                    after_seconds: total.ceil() as i64,
                });
            }
        }
    }
    if steps.len() > MAX_STEPS {
        src.skip(
            "spec.analysis",
            format!(
                "makes {} steps (a weight and a check for each weight); a BlueGreenDeployment \
                 has at most {MAX_STEPS}: no BlueGreenDeployment was written",
                steps.len()
            ),
        );
        return Translation { objects, claims };
    }
    strategy.steps = steps;

    // Services of the input with names Cutover gives its own; the live one is adopted.
    for owned in owned_services(name).into_iter().skip(1) {
        if let Some((index, _)) = inv.find(core_group, "Service", &owned, doc) {
            claims.push(Claim::Drop {
                index,
                why: format!("BlueGreenDeployment {name} creates and owns a Service of this name"),
            });
        }
    }

    let bgd = BlueGreenDeployment {
        metadata: meta,
        spec: BlueGreenDeploymentSpec {
            replicas,
            selector: Default::default(),
            template: Default::default(),
            workload_ref: Some(WorkloadRef {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                name: target,
                scale_down: ScaleDown::OnSuccess,
            }),
            service,
            strategy,
            traffic_routing: Some(routing),
            environments: None,
            paused: false,
            revision_history_limit: None,
        },
        status: None,
    };
    objects.push(serde_json::to_value(&bgd).unwrap_or_default());
    Translation { objects, claims }
}

/// The field that asks for progressive weights, if any.
fn weight_field(a: &Analysis) -> Option<&'static str> {
    if a.step_weight.is_some() {
        Some("stepWeight")
    } else if !a.step_weights.is_empty() {
        Some("stepWeights")
    } else {
        a.max_weight.map(|_| "maxWeight")
    }
}

/// What the queries and webhooks of one Canary are rewritten with.
#[derive(Debug)]
struct Context<'a> {
    name: &'a str,
    namespace: Option<&'a str>,
    /// The mesh whose built-in metrics can be written (istio, linkerd).
    builtins: Option<&'static str>,
    metrics_server: Option<&'a str>,
}

fn reference(template: &str) -> AnalysisRef {
    AnalysisRef {
        templates: vec![TemplateRef {
            template_name: template.to_owned(),
            cluster_scope: false,
        }],
        args: Vec::new(),
    }
}

fn template(
    name: &str,
    owner: &cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    metrics: Vec<Metric>,
) -> Value {
    let mut t = AnalysisTemplate::new(
        name,
        AnalysisTemplateSpec {
            args: Vec::new(),
            metrics,
        },
    );
    t.metadata.namespace = owner.namespace.clone();
    t.metadata.labels = owner.labels.clone();
    serde_json::to_value(&t).unwrap_or_default()
}

/// The Deployment the Canary targets.
fn target(v: Option<&Value>, src: &mut Source<'_>) -> Option<String> {
    let api_version = v.and_then(|t| t.get("apiVersion")).and_then(Value::as_str);
    let kind = v.and_then(|t| t.get("kind")).and_then(Value::as_str);
    let name = v.and_then(|t| t.get("name")).and_then(Value::as_str);
    for (key, _) in entries(v) {
        if !matches!(key, "apiVersion" | "kind" | "name") {
            src.unknown(&field("spec.targetRef", key));
        }
    }
    match (api_version, kind, name) {
        (Some("apps/v1") | None, Some("Deployment"), Some(n)) if !n.is_empty() => {
            Some(n.to_owned())
        }
        (_, Some(other), _) if other != "Deployment" => {
            src.skip(
                "spec.targetRef.kind",
                format!(
                    "Cutover adopts Deployments only; a {other} has no counterpart: nothing was \
                     written"
                ),
            );
            None
        }
        _ => {
            src.skip(
                "spec.targetRef",
                "needs apiVersion apps/v1, kind Deployment and a name: nothing was written",
            );
            None
        }
    }
}

fn autoscaler(
    v: &Value,
    path: &str,
    doc: &Value,
    inv: &Inventory<'_>,
    name: &str,
    claims: &mut Vec<Claim>,
    src: &mut Source<'_>,
) {
    for (key, _) in entries(Some(v)) {
        match key {
            "apiVersion" | "kind" | "name" => {}
            _ => src.skip(
                &field(path, key),
                "Cutover scales the BlueGreenDeployment (both colors) through its scale \
                 subresource; it creates no primary autoscaler",
            ),
        }
    }
    let Some(hpa) = v.get("name").and_then(Value::as_str) else {
        src.skip(path, "names no autoscaler");
        return;
    };
    match inv.find(|g| g == "autoscaling", "HorizontalPodAutoscaler", hpa, doc) {
        Some((index, _)) => claims.push(Claim::Retarget {
            index,
            name: name.to_owned(),
        }),
        None => src.skip(
            path,
            format!(
                "HorizontalPodAutoscaler {hpa} is not in the input: point its scaleTargetRef at \
                 BlueGreenDeployment {name} (apiVersion cutover.dev/v1alpha1), or Cutover leaves \
                 the adopted Deployment alone while the autoscaler scales it"
            ),
        ),
    }
}

/// The weights of a progressive canary, as Flagger steps through them.
fn weights(a: &Analysis, src: &mut Source<'_>) -> Vec<i64> {
    if !a.step_weights.is_empty() {
        return a.step_weights.iter().map(|w| (*w).clamp(0, 100)).collect();
    }
    let Some(step) = a.step_weight.filter(|s| *s > 0) else {
        src.skip(
            "spec.analysis.stepWeight",
            "missing (and no stepWeights or iterations): no weight steps were written",
        );
        return Vec::new();
    };
    let max = a.max_weight.filter(|m| *m > 0).unwrap_or(100).min(100);
    let mut out = Vec::new();
    let mut w = 0;
    while w < max {
        w = (w + step).min(100);
        out.push(w);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn read_analysis(
    v: &Value,
    path: &str,
    ctx: &Context<'_>,
    doc: &Value,
    inv: &Inventory<'_>,
    src: &mut Source<'_>,
    templates: &mut TemplateUse<'_>,
) -> Analysis {
    let mut a = Analysis::default();
    for (key, value) in entries(Some(v)) {
        let p = field(path, key);
        match key {
            "interval" => match value.as_str() {
                Some(s) if is_duration(s) => a.interval = Some(s.to_owned()),
                _ => src.skip(&p, format!("{value} is not a duration; 60s was used")),
            },
            "threshold" => a.threshold = int(value, &p, src),
            "maxWeight" => a.max_weight = int(value, &p, src),
            "stepWeight" => a.step_weight = int(value, &p, src),
            "stepWeights" => {
                a.step_weights = items(Some(value))
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| int(w, &at(&p, i), src))
                    .collect();
            }
            "stepWeightPromotion" => {
                if value.as_i64() != Some(100) {
                    src.skip(
                        &p,
                        "Cutover promotes at once after the last step; it does not move the \
                         traffic back in stages",
                    );
                }
            }
            "iterations" => a.iterations = int(value, &p, src),
            "match" => a.header_match = header_match(value, &p, src),
            "mirror" => a.mirror = boolean(value, &p, src).unwrap_or(false),
            "mirrorWeight" => a.mirror_weight = int(value, &p, src),
            "metrics" => {
                for (i, m) in items(Some(value)).iter().enumerate() {
                    if let Some(metric) = metric(m, &at(&p, i), ctx, doc, inv, src, templates) {
                        a.metrics.push(metric);
                    }
                }
            }
            "webhooks" => {
                for (i, h) in items(Some(value)).iter().enumerate() {
                    if let Some(hook) = webhook(h, &at(&p, i), ctx, src) {
                        a.pre_rollout.push(hook);
                    }
                }
            }
            "alerts" => src.skip(
                &p,
                "Cutover notifies through NotificationChannels (spec.notify); Flagger's alert \
                 providers are not translated",
            ),
            "primaryReadyThreshold" | "canaryReadyThreshold" => {
                if value.as_i64() != Some(100) {
                    src.skip(
                        &p,
                        "Cutover moves traffic only to a color whose pods are all ready",
                    );
                }
            }
            "sessionAffinity" => src.skip(
                &p,
                "Cutover has no cookie-based session affinity during a release",
            ),
            _ => src.unknown(&p),
        }
    }
    a
}

/// The header conditions of the first match block (Cutover's header route is one block:
/// all of its conditions must hold).
fn header_match(v: &Value, path: &str, src: &mut Source<'_>) -> Option<Vec<HeaderMatch>> {
    let blocks = items(Some(v));
    let mut out = None;
    for (i, block) in blocks.iter().enumerate() {
        let bp = at(path, i);
        if i > 0 {
            src.skip(
                &bp,
                "Cutover's header route is one set of conditions that must all hold; Flagger's \
                 alternatives (any block) have no counterpart: only the first block was used",
            );
            continue;
        }
        let mut matches = Vec::new();
        for (key, value) in entries(Some(block)) {
            let kp = field(&bp, key);
            if key != "headers" {
                src.skip(&kp, "Cutover's header route matches request headers only");
                continue;
            }
            for (header, condition) in entries(Some(value)) {
                let hp = field(&kp, header);
                let mut m = StringMatch::default();
                let mut set = 0;
                for (how, s) in entries(Some(condition)) {
                    let Some(s) = s.as_str() else {
                        src.skip(&field(&hp, how), "expected a string");
                        continue;
                    };
                    set += 1;
                    match how {
                        "exact" => m.exact = Some(s.to_owned()),
                        "prefix" => m.prefix = Some(s.to_owned()),
                        "regex" => m.regex = Some(s.to_owned()),
                        // The same test as a regular expression, anchored at the end.
                        "suffix" => m.regex = Some(format!(".*{}$", regex_escape(s))),
                        _ => {
                            set -= 1;
                            src.unknown(&field(&hp, how));
                        }
                    }
                }
                if set != 1 {
                    src.skip(
                        &hp,
                        "a header condition needs exactly one of exact, prefix, suffix, regex",
                    );
                    continue;
                }
                matches.push(HeaderMatch {
                    header_name: Some(header.to_owned()),
                    cookie_name: None,
                    header_value: m,
                });
            }
        }
        if !matches.is_empty() {
            out = Some(matches);
        }
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `thresholdRange` as a success condition.
fn threshold_condition(range: &Value, path: &str, src: &mut Source<'_>) -> Option<String> {
    let mut parts = Vec::new();
    for (key, value) in entries(Some(range)) {
        let p = field(path, key);
        let Some(n) = value.as_f64().map(|_| value.to_string()) else {
            src.skip(&p, "expected a number");
            continue;
        };
        match key {
            "min" => parts.push(format!("result >= {n}")),
            "max" => parts.push(format!("result <= {n}")),
            _ => src.unknown(&p),
        }
    }
    // `min` before `max`, whatever the order of the keys.
    parts.sort_by_key(|p| !p.contains(">="));
    (!parts.is_empty()).then(|| parts.join(" && "))
}

/// Flagger's query template (Go template variables) with Cutover's arguments.
fn query(q: &str, interval: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("a `{{` is not closed".to_owned());
        };
        let inner = after[..end].trim();
        rest = &after[end + 2..];
        let mut suffix = |s: &str| -> bool {
            match rest.strip_prefix(s) {
                Some(r) => {
                    rest = r;
                    true
                }
                None => false,
            }
        };
        let replacement = match inner {
            "namespace" => "{{args.namespace}}".to_owned(),
            "name" => "{{args.name}}".to_owned(),
            // Flagger's target Deployment runs the new version; its `-primary` the old one.
            "target" if suffix("-primary") => "{{args.name}}-{{args.liveColor}}".to_owned(),
            "target" => "{{args.name}}-{{args.color}}".to_owned(),
            "service" if suffix("-canary") => "{{args.newService}}".to_owned(),
            "service" if suffix("-primary") => "{{args.liveColorService}}".to_owned(),
            "service" => "{{args.liveService}}".to_owned(),
            "interval" => interval.to_owned(),
            "ingress" => {
                return Err("{{ ingress }}: Cutover has no ingress reference".to_owned());
            }
            other => match other.strip_prefix("variables.") {
                Some(var) => variables.get(var).cloned().ok_or_else(|| {
                    format!("{{{{ {other} }}}} has no value in templateVariables")
                })?,
                None => {
                    return Err(format!(
                        "{{{{ {other} }}}}: only namespace, name, target, service, interval \
                         and variables.* carry over"
                    ));
                }
            },
        };
        out.push_str(&replacement);
    }
    out.push_str(rest);
    Ok(out)
}

/// Flagger's built-in checks, per mesh: PromQL with Flagger's template variables.
fn builtin_query(mesh: &str, metric: &str) -> Option<&'static str> {
    Some(match (mesh, metric) {
        ("istio", "request-success-rate") => concat!(
            "sum(rate(istio_requests_total{reporter=\"destination\",",
            "destination_workload_namespace=\"{{ namespace }}\",destination_workload=~\"{{ target }}\",",
            "response_code!~\"5.*\"}[{{ interval }}])) / sum(rate(istio_requests_total{",
            "reporter=\"destination\",destination_workload_namespace=\"{{ namespace }}\",",
            "destination_workload=~\"{{ target }}\"}[{{ interval }}])) * 100"
        ),
        ("istio", "request-duration") => concat!(
            "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{",
            "reporter=\"destination\",destination_workload_namespace=\"{{ namespace }}\",",
            "destination_workload=~\"{{ target }}\"}[{{ interval }}])) by (le))"
        ),
        ("linkerd", "request-success-rate") => concat!(
            "sum(rate(response_total{namespace=\"{{ namespace }}\",deployment=~\"{{ target }}\",",
            "classification!=\"failure\",direction=\"inbound\"}[{{ interval }}])) / ",
            "sum(rate(response_total{namespace=\"{{ namespace }}\",deployment=~\"{{ target }}\",",
            "direction=\"inbound\"}[{{ interval }}])) * 100"
        ),
        ("linkerd", "request-duration") => concat!(
            "histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{",
            "namespace=\"{{ namespace }}\",deployment=~\"{{ target }}\",direction=\"inbound\"}",
            "[{{ interval }}])) by (le))"
        ),
        _ => return None,
    })
}

/// One metric of the analysis; its schedule is set by the strategy.
#[allow(clippy::too_many_arguments)]
fn metric(
    m: &Value,
    path: &str,
    ctx: &Context<'_>,
    doc: &Value,
    inv: &Inventory<'_>,
    src: &mut Source<'_>,
    templates: &mut TemplateUse<'_>,
) -> Option<Metric> {
    let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        src.skip(path, "a metric needs a name; it was left out");
        return None;
    }
    let mut interval = DEFAULT_METRIC_INTERVAL.to_owned();
    let mut variables = BTreeMap::new();
    let mut success = None;
    for (key, value) in entries(Some(m)) {
        let p = field(path, key);
        match key {
            "name" | "templateRef" | "query" => {}
            "interval" => match value.as_str() {
                Some(s) => interval = s.to_owned(),
                None => src.skip(&p, "expected a duration"),
            },
            "thresholdRange" => success = threshold_condition(value, &p, src),
            "templateVariables" => {
                variables = entries(Some(value))
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned())))
                    .collect();
            }
            _ => src.unknown(&p),
        }
    }
    let (address, raw_query) = if let Some(r) = m.get("templateRef") {
        let rp = field(path, "templateRef");
        let t_name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let near = match r.get("namespace").and_then(Value::as_str) {
            Some(ns) => json!({ "metadata": { "namespace": ns } }),
            None => doc.clone(),
        };
        let Some((index, t)) = inv.find(|g| g == "flagger.app", "MetricTemplate", t_name, &near)
        else {
            src.skip(
                &rp,
                format!(
                    "MetricTemplate {t_name} is not in the input; import it with the Canary (the \
                     metric was left out)"
                ),
            );
            return None;
        };
        if !templates.used.contains(&index) {
            templates.used.push(index);
        }
        let first_report = !templates.reported.contains(&index);
        if first_report {
            templates.reported.push(index);
        }
        metric_template(t, &rp, first_report, src)?
    } else if let Some(q) = m.get("query").and_then(Value::as_str) {
        match ctx.metrics_server {
            Some(server) => (server.to_owned(), q.to_owned()),
            None => {
                src.skip(
                    &field(path, "query"),
                    "a query without templateRef runs on the Prometheus given to Flagger \
                     (-metrics-server), which the Canary does not name: pass --metrics-server \
                     URL to translate it (the metric was left out)",
                );
                return None;
            }
        }
    } else {
        let Some(mesh) = ctx.builtins else {
            src.skip(
                path,
                format!(
                    "Flagger's built-in {name} reads the metrics of this provider's proxies, \
                     which Cutover has no query for (istio and linkerd only): write it as a \
                     MetricTemplate (the metric was left out)"
                ),
            );
            return None;
        };
        let Some(builtin) = builtin_query(mesh, name) else {
            src.skip(
                path,
                format!("{name} is not one of Flagger's built-in metrics and has no templateRef (the metric was left out)"),
            );
            return None;
        };
        let Some(server) = ctx.metrics_server else {
            src.skip(
                path,
                format!(
                    "Flagger's built-in {name} queries the Prometheus given to Flagger \
                     (-metrics-server), which the Canary does not name: pass --metrics-server \
                     URL to translate it (the metric was left out)"
                ),
            );
            return None;
        };
        (server.to_owned(), builtin.to_owned())
    };
    let query = match query(&raw_query, &interval, &variables) {
        Ok(q) => q,
        Err(why) => {
            src.skip(path, format!("its query: {why} (the metric was left out)"));
            return None;
        }
    };
    Some(Metric {
        name: name.to_owned(),
        success_condition: success,
        provider: Provider {
            prometheus: Some(PrometheusProvider {
                address,
                query,
                timeout_seconds: None,
            }),
            ..Provider::default()
        },
        ..Metric::default()
    })
}

/// A MetricTemplate's address and query; what does not carry over is reported (once, on
/// the MetricTemplate) when `report`.
fn metric_template(
    t: &Value,
    path: &str,
    report: bool,
    src: &mut Source<'_>,
) -> Option<(String, String)> {
    let label = format!("MetricTemplate/{}", name_of(t).unwrap_or_default());
    let mut other = src.other(label.clone());
    let spec = t.get("spec");
    let provider = spec.and_then(|s| s.get("provider"));
    let kind = provider
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("prometheus");
    if kind != "prometheus" {
        if report {
            other.skip(
                "spec.provider.type",
                format!(
                    "Cutover queries Prometheus; {kind} has no counterpart (the metrics using \
                     it were left out)"
                ),
            );
        }
        return None;
    }
    if report {
        for (key, value) in entries(provider) {
            let p = field("spec.provider", key);
            match key {
                "type" | "address" => {}
                "secretRef" => other.skip(
                    &p,
                    "Cutover's Prometheus provider has no credentials; put an authenticating \
                     proxy in front of Prometheus",
                ),
                "insecureSkipVerify" => {
                    if value.as_bool() == Some(true) {
                        other.skip(&p, "Cutover always verifies the Prometheus TLS certificate");
                    }
                }
                _ => other.unknown(&p),
            }
        }
        for (key, _) in entries(spec) {
            if !matches!(key, "provider" | "query") {
                other.unknown(&field("spec", key));
            }
        }
    }
    let address = provider
        .and_then(|p| p.get("address"))
        .and_then(Value::as_str);
    let query = spec.and_then(|s| s.get("query")).and_then(Value::as_str);
    match (address, query) {
        (Some(a), Some(q)) => Some((a.to_owned(), q.to_owned())),
        _ => {
            src.skip(
                path,
                format!(
                    "{label} needs spec.provider.address and spec.query (the metric was left out)"
                ),
            );
            None
        }
    }
}

/// A webhook: pre-rollout ones become web metrics; the others are reported.
fn webhook(h: &Value, path: &str, ctx: &Context<'_>, src: &mut Source<'_>) -> Option<Metric> {
    let kind = h.get("type").and_then(Value::as_str).unwrap_or("rollout");
    let why = match kind {
        "pre-rollout" => None,
        "rollout" => Some(
            "Flagger calls rollout webhooks (load tests) at every interval of the analysis; \
             Cutover makes no such calls: run the load generator outside the release",
        ),
        "confirm-rollout" | "confirm-traffic-increase" | "confirm-promotion" => Some(
            "Cutover has no approval webhooks; a release can wait for `kubectl cutover promote` \
             (a pause step, or strategy.autoPromotion.enabled: false)",
        ),
        "post-rollout" | "event" => {
            Some("Cutover reports releases through NotificationChannels (spec.notify) and Events")
        }
        "rollback" => Some("Cutover aborts on `kubectl cutover abort` or a failed analysis"),
        _ => Some("not a webhook type the importer knows"),
    };
    if let Some(why) = why {
        src.skip(path, format!("a {kind} webhook: {why}"));
        return None;
    }
    let mut url = None;
    let mut name = None;
    let mut timeout = None;
    let mut metadata = serde_json::Map::new();
    for (key, value) in entries(Some(h)) {
        let p = field(path, key);
        match key {
            "type" | "muteAlert" => {}
            "name" => name = text(value, &p, src).map(str::to_owned),
            "url" => url = text(value, &p, src).map(str::to_owned),
            "timeout" => match value.as_str().and_then(duration_seconds) {
                Some(s) if s <= MAX_TIMEOUT_SECONDS => {
                    timeout = i32::try_from(s.ceil() as i64).ok()
                }
                Some(_) => {
                    src.skip(
                        &p,
                        "longer than Cutover's 300 s limit for a web metric; 300 s was used",
                    );
                    timeout = Some(300);
                }
                None => src.skip(&p, "expected a duration; the default (10 s) applies"),
            },
            "metadata" => {
                for (k, v) in entries(Some(value)) {
                    metadata.insert(k.to_owned(), v.clone());
                }
            }
            "retries" => {
                if value.as_i64() != Some(0) {
                    src.skip(
                        &p,
                        "Cutover calls again at the next interval (up to threshold - 1 errors in \
                         a row), not at once",
                    );
                }
            }
            "disableTLS" => {
                if value.as_bool() == Some(true) {
                    src.skip(
                        &p,
                        "Cutover always verifies TLS certificates of web metrics",
                    );
                }
            }
            _ => src.unknown(&p),
        }
    }
    let (Some(name), Some(url)) = (name, url) else {
        src.skip(path, "a webhook needs a name and a url; it was left out");
        return None;
    };
    // Flagger's payload; Cutover fills in the namespace when the Canary has none here.
    let body = json!({
        "name": ctx.name,
        "namespace": ctx.namespace.unwrap_or("{{args.namespace}}"),
        "phase": "Progressing",
        "metadata": metadata,
    });
    Some(Metric {
        name,
        provider: Provider {
            web: Some(WebProvider {
                url,
                method: Some("POST".to_owned()),
                headers: vec![WebHeader {
                    key: "Content-Type".to_owned(),
                    value: "application/json".to_owned(),
                }],
                body: Some(body.to_string()),
                json_path: None,
                timeout_seconds: timeout,
            }),
            ..Provider::default()
        },
        ..Metric::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Options, import};
    use super::*;

    fn canary(analysis: Value, provider: &str) -> Value {
        json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": { "name": "podinfo", "namespace": "test" },
            "spec": {
                "provider": provider,
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo" },
                "service": { "port": 9898, "targetPort": "http" },
                "analysis": analysis
            }
        })
    }

    fn deployment() -> Value {
        json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "podinfo", "namespace": "test" },
            "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "podinfo" } },
                "template": { "metadata": { "labels": { "app": "podinfo" } },
                    "spec": { "containers": [ { "name": "app", "image": "podinfo:1" } ] } } } })
    }

    fn metric_template() -> Value {
        json!({ "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": { "name": "error-rate", "namespace": "test" },
            "spec": { "provider": { "type": "prometheus", "address": "http://prometheus:9090" },
                "query": "sum(rate(errors{pod=~\"{{ target }}-[0-9a-z]+(-[0-9a-z]+)\",ns=\"{{ namespace }}\",d=\"{{ variables.direction }}\"}[{{ interval }}]))" } })
    }

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} in {objects:#?}"))
    }

    #[test]
    fn step_weights_give_a_weight_then_an_analysis_each() {
        let docs = [
            deployment(),
            metric_template(),
            canary(
                json!({
                    "interval": "30s", "threshold": 1, "stepWeight": 10, "maxWeight": 30,
                    "metrics": [ { "name": "errors", "templateRef": { "name": "error-rate" },
                        "thresholdRange": { "max": 1, "min": 0 }, "interval": "2m",
                        "templateVariables": { "direction": "inbound" } } ]
                }),
                "linkerd",
            ),
        ];
        let imported = import(&docs, &Options::default());
        assert_eq!(imported.untranslated, vec![]);
        let bgd = find(&imported.objects, "BlueGreenDeployment", "podinfo");
        let analysis =
            json!({ "analysis": { "templates": [ { "templateName": "podinfo-metrics" } ] } });
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([
                { "setWeight": 10 }, analysis,
                { "setWeight": 20 }, analysis,
                { "setWeight": 30 }, analysis
            ])
        );
        assert_eq!(
            bgd["spec"]["workloadRef"],
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo", "scaleDown": "OnSuccess" })
        );
        assert_eq!(bgd["spec"]["replicas"], 3);
        assert_eq!(
            bgd["spec"]["service"],
            json!({ "port": 9898, "targetPort": "http" })
        );
        assert_eq!(
            bgd["spec"]["trafficRouting"],
            json!({ "smi": { "trafficSplitName": "podinfo" } })
        );
        assert_eq!(
            bgd["spec"]["strategy"]["standby"],
            json!({ "mode": "Zero", "scaleDownDelaySeconds": 0 })
        );
        let metrics = find(&imported.objects, "AnalysisTemplate", "podinfo-metrics");
        assert_eq!(
            metrics["spec"]["metrics"][0],
            json!({
                "name": "errors", "interval": "30s", "count": 1, "initialDelay": "30s",
                "failureLimit": 0, "inconclusiveLimit": 0, "consecutiveErrorLimit": 0,
                "successCondition": "result >= 0 && result <= 1",
                "provider": { "prometheus": { "address": "http://prometheus:9090",
                    "query": "sum(rate(errors{pod=~\"{{args.name}}-{{args.color}}-[0-9a-z]+(-[0-9a-z]+)\",ns=\"{{args.namespace}}\",d=\"inbound\"}[2m]))" } }
            })
        );
        // The MetricTemplate is folded in, not passed through.
        assert!(
            imported
                .objects
                .iter()
                .all(|o| o["kind"] != "MetricTemplate")
        );
    }

    #[test]
    fn ab_testing_blue_green_and_webhooks() {
        let docs = [
            deployment(),
            canary(
                json!({
                    "interval": "1m", "threshold": 3, "iterations": 5,
                    "match": [ { "headers": { "x-canary": { "exact": "insider" }, "user-agent": { "suffix": "Safari" } } },
                               { "headers": { "cookie": { "regex": "canary=always" } } } ],
                    "webhooks": [
                        { "name": "smoke", "type": "pre-rollout", "url": "http://tester/", "timeout": "30s",
                          "metadata": { "cmd": "test" } },
                        { "name": "load", "url": "http://loadtester/" }
                    ]
                }),
                "gatewayapi:v1",
            ),
        ];
        let imported = import(&docs, &Options::default());
        let paths: Vec<&str> = imported
            .untranslated
            .iter()
            .map(|u| u.path.as_str())
            .collect();
        assert_eq!(
            paths,
            vec![
                "spec.service",
                "spec.analysis.match[1]",
                "spec.analysis.webhooks[1]"
            ]
        );
        let bgd = find(&imported.objects, "BlueGreenDeployment", "podinfo");
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([
                { "setHeaderRoute": { "match": [
                    { "headerName": "user-agent", "headerValue": { "regex": ".*Safari$" } },
                    { "headerName": "x-canary", "headerValue": { "exact": "insider" } }
                ] } },
                { "pause": { "duration": "300s" } }
            ])
        );
        assert_eq!(
            bgd["spec"]["strategy"]["prePromotionAnalysis"],
            json!({ "templates": [ { "templateName": "podinfo-pre-rollout" } ] })
        );
        let hooks = find(&imported.objects, "AnalysisTemplate", "podinfo-pre-rollout");
        let hook = &hooks["spec"]["metrics"][0];
        assert_eq!(hook["count"], 1);
        assert_eq!(hook["consecutiveErrorLimit"], 2);
        assert_eq!(hook["provider"]["web"]["method"], "POST");
        assert_eq!(hook["provider"]["web"]["timeoutSeconds"], 30);
        let body: Value =
            serde_json::from_str(hook["provider"]["web"]["body"].as_str().expect("body"))
                .expect("JSON body");
        assert_eq!(
            body,
            json!({ "name": "podinfo", "namespace": "test", "phase": "Progressing", "metadata": { "cmd": "test" } })
        );
    }

    #[test]
    fn builtin_metrics_need_the_metrics_server() {
        let analysis = json!({
            "interval": "1m", "iterations": 4,
            "metrics": [ { "name": "request-success-rate", "thresholdRange": { "min": 99 }, "interval": "1m" } ]
        });
        let docs = [deployment(), canary(analysis, "kubernetes")];
        let without = import(&docs, &Options::default());
        let paths: Vec<&str> = without
            .untranslated
            .iter()
            .map(|u| u.path.as_str())
            .collect();
        assert_eq!(paths, vec!["spec.analysis.metrics[0]"]);

        let docs = [
            deployment(),
            canary(
                json!({
                    "interval": "1m", "iterations": 4,
                    "metrics": [ { "name": "request-duration", "thresholdRange": { "max": 500 }, "interval": "1m" } ]
                }),
                "istio",
            ),
        ];
        let with = import(
            &docs,
            &Options {
                metrics_server: Some("http://prometheus:9090".into()),
            },
        );
        let metrics = find(&with.objects, "AnalysisTemplate", "podinfo-metrics");
        let m = &metrics["spec"]["metrics"][0];
        assert_eq!(m["successCondition"], "result <= 500");
        assert_eq!(m["count"], 4);
        assert_eq!(m["failureLimit"], 0);
        let q = m["provider"]["prometheus"]["query"]
            .as_str()
            .expect("query");
        assert!(
            q.contains("destination_workload=~\"{{args.name}}-{{args.color}}\"")
                && q.contains("[1m]"),
            "{q}"
        );
        // Blue/green: the metrics gate the promotion.
        let bgd = find(&with.objects, "BlueGreenDeployment", "podinfo");
        assert_eq!(
            bgd["spec"]["strategy"]["prePromotionAnalysis"],
            json!({ "templates": [ { "templateName": "podinfo-metrics" } ] })
        );
        assert_eq!(bgd["spec"]["strategy"].get("steps"), None);
    }

    #[test]
    fn flagger_queries_map_their_variables() {
        let vars = BTreeMap::from([("d".to_owned(), "in".to_owned())]);
        assert_eq!(
            query("{{ target }}-primary {{target}} {{ service }}-canary {{ service }}-primary {{ service }} {{ variables.d }} {{ interval }} {{ name }}", "5m", &vars),
            Ok("{{args.name}}-{{args.liveColor}} {{args.name}}-{{args.color}} {{args.newService}} {{args.liveColorService}} {{args.liveService}} in 5m {{args.name}}".to_owned())
        );
        assert!(query("{{ ingress }}", "1m", &vars).is_err());
        assert!(query("{{ variables.missing }}", "1m", &vars).is_err());
        assert!(query("{{ if x }}", "1m", &vars).is_err());
    }

    #[test]
    fn mirror_then_step_weights() {
        let docs = [
            deployment(),
            canary(
                json!({
                    "interval": "1m", "mirror": true, "mirrorWeight": 50, "stepWeights": [5, 10, 50]
                }),
                "istio",
            ),
        ];
        let imported = import(&docs, &Options::default());
        let bgd = find(&imported.objects, "BlueGreenDeployment", "podinfo");
        let pause = json!({ "pause": { "duration": "1m" } });
        assert_eq!(
            bgd["spec"]["strategy"]["steps"],
            json!([
                { "setMirror": { "percent": 50 } }, pause, { "setMirror": { "percent": 0 } },
                { "setWeight": 5 }, pause, { "setWeight": 10 }, pause, { "setWeight": 50 }, pause
            ])
        );
    }
}
