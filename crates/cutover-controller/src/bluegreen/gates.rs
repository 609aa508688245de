//! From a BlueGreenDeployment's analysis references to AnalysisRuns, and back to what a run
//! means for the release. Building a run is pure (templates and arguments in, run out), so
//! argument substitution and defaults are unit-tested.

use std::collections::BTreeMap;

use cutover_api::BlueGreenDeployment;
use cutover_api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunSpec, AnalysisTemplateSpec, ArgSpec, Metric,
};
use cutover_api::blue_green::AnalysisRef;
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_core::Color;
use cutover_core::release::{Gate, GateResult};

use crate::error::Error;
use crate::objects;

/// Label on an AnalysisRun naming its gate.
pub const GATE_LABEL: &str = "cutover.dev/gate";
/// Label on an AnalysisRun naming the revision it checks.
pub const REVISION_LABEL: &str = "cutover.dev/revision";

/// The run of `gate` for `revision`, attempt `attempt`, of BlueGreenDeployment `name`.
pub fn run_name(name: &str, revision: i64, attempt: u32, gate: Gate) -> String {
    format!("{name}-{revision}-{attempt}-{}", gate.name())
}

/// The analysis reference of `gate` in the spec.
pub fn reference(bgd: &BlueGreenDeployment, gate: Gate) -> Option<&AnalysisRef> {
    let s = &bgd.spec.strategy;
    match gate {
        Gate::PrePromotion => s.pre_promotion_analysis.as_ref(),
        Gate::Background => s.background_analysis.as_ref(),
        Gate::PostPromotion => s.post_promotion_analysis.as_ref(),
        Gate::Step(i) => s
            .steps
            .get(i as usize)
            .and_then(|step| step.analysis.as_ref()),
    }
}

/// Every gate of `bgd` that has an analysis reference, in order: the three release-wide
/// gates, then the steps.
pub fn gates(bgd: &BlueGreenDeployment) -> Vec<(Gate, &AnalysisRef)> {
    let steps =
        (0..bgd.spec.strategy.steps.len()).map(|i| Gate::Step(u32::try_from(i).unwrap_or(0)));
    [Gate::PrePromotion, Gate::Background, Gate::PostPromotion]
        .into_iter()
        .chain(steps)
        .filter_map(|g| reference(bgd, g).map(|r| (g, r)))
        .collect()
}

/// Whether `bgd` uses template `name` (a ClusterAnalysisTemplate when `cluster_scope`).
pub fn uses_template(bgd: &BlueGreenDeployment, name: &str, cluster_scope: bool) -> bool {
    gates(bgd).iter().any(|(_, r)| {
        r.templates
            .iter()
            .any(|t| t.template_name == name && t.cluster_scope == cluster_scope)
    })
}

/// Values of the built-in arguments.
pub fn builtin_args(
    bgd: &BlueGreenDeployment,
    revision: i64,
    new: Color,
) -> BTreeMap<String, String> {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let live = new.other();
    BTreeMap::from([
        (
            "namespace".into(),
            bgd.metadata.namespace.clone().unwrap_or_default(),
        ),
        ("name".into(), name.clone()),
        ("revision".into(), revision.to_string()),
        ("color".into(), new.as_str().into()),
        ("liveColor".into(), live.as_str().into()),
        ("liveService".into(), name.clone()),
        ("previewService".into(), format!("{name}-preview")),
        ("newService".into(), format!("{name}-{new}")),
        ("liveColorService".into(), format!("{name}-{live}")),
    ])
}

/// Replace every `{{args.NAME}}` in `text`; an unknown name is an error naming it.
pub fn substitute(text: &str, args: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let key = after[..end].trim();
        match key.strip_prefix("args.") {
            Some(arg) => match args.get(arg) {
                Some(v) => out.push_str(v),
                None => return Err(format!("argument `{arg}` has no value")),
            },
            // Not ours (e.g. `{{color}}` of compare, resolved per color at measure time).
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Build the AnalysisRun of `gate` from the resolved templates (name, spec).
pub fn build_run(
    bgd: &BlueGreenDeployment,
    gate: Gate,
    revision: i64,
    attempt: u32,
    new: Color,
    reference: &AnalysisRef,
    templates: &[(String, AnalysisTemplateSpec)],
) -> Result<Result<AnalysisRun, String>, Error> {
    let mut args = builtin_args(bgd, revision, new);
    let mut metrics: Vec<Metric> = Vec::new();
    for (template, spec) in templates {
        let mut local = args.clone();
        for a in &spec.args {
            if let Some(v) = &a.value {
                local.entry(a.name.clone()).or_insert_with(|| v.clone());
            }
        }
        for a in &reference.args {
            local.insert(a.name.clone(), a.value.clone());
        }
        for a in &spec.args {
            if !local.contains_key(&a.name) {
                return Ok(Err(format!(
                    "AnalysisTemplate {template}: argument `{}` has no value; give it in the analysis args",
                    a.name
                )));
            }
        }
        for m in &spec.metrics {
            let json = serde_json::to_string(m).map_err(|source| Error::Serialize {
                what: "metric",
                source,
            })?;
            let resolved = match substitute(&json, &local) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(format!(
                        "AnalysisTemplate {template}, metric {}: {e}",
                        m.name
                    )));
                }
            };
            let mut metric: Metric =
                serde_json::from_str(&resolved).map_err(|source| Error::Serialize {
                    what: "metric",
                    source,
                })?;
            // A gate that must conclude takes one measurement unless told otherwise.
            if gate != Gate::Background && metric.count.is_none() {
                metric.count = Some(1);
            }
            metrics.push(metric);
        }
        args = local;
    }
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let mut labels = objects::owned_labels(&name, None);
    labels.insert(GATE_LABEL.into(), gate.name());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    Ok(Ok(AnalysisRun {
        metadata: ObjectMeta {
            name: Some(run_name(&name, revision, attempt, gate)),
            namespace: bgd.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![objects::owner_reference(bgd)?]),
            ..ObjectMeta::default()
        },
        spec: AnalysisRunSpec {
            metrics,
            args: args
                .into_iter()
                .map(|(name, value)| ArgSpec {
                    name,
                    value: Some(value),
                })
                .collect(),
            gate: Some(gate.name()),
            revision: Some(revision),
            terminate: false,
        },
        status: None,
    }))
}

/// What a run says to the release.
pub fn gate_result(run: &AnalysisRun) -> GateResult {
    let status = run.status.as_ref();
    let message = status
        .and_then(|s| s.message.clone())
        .unwrap_or_else(|| "no message".to_string());
    match status.and_then(|s| s.phase) {
        None | Some(AnalysisPhase::Running) => GateResult::Running,
        Some(AnalysisPhase::Successful) => GateResult::Successful,
        Some(AnalysisPhase::Failed) => GateResult::Failed(message),
        Some(AnalysisPhase::Inconclusive) => GateResult::Inconclusive(message),
        Some(AnalysisPhase::Error) => GateResult::Error(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_args_and_leaves_other_placeholders() {
        let args = BTreeMap::from([("service".to_string(), "shop-green".to_string())]);
        assert_eq!(
            substitute(
                r#"rate(x{svc="{{args.service}}",color="{{color}}"}[1m])"#,
                &args
            ),
            Ok(r#"rate(x{svc="shop-green",color="{{color}}"}[1m])"#.to_string())
        );
        assert_eq!(
            substitute("{{ args.missing }}", &args),
            Err("argument `missing` has no value".to_string())
        );
    }

    fn bgd() -> BlueGreenDeployment {
        let mut b: BlueGreenDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{ "name": "a", "image": "i" }] } },
                "service": { "port": 80 }
            }
        }))
        .expect("valid");
        b.metadata.uid = Some("u".into());
        b
    }

    fn template() -> AnalysisTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "args": [{ "name": "service" }, { "name": "threshold", "value": "0.01" }],
            "metrics": [{
                "name": "error-rate",
                "successCondition": "result < {{args.threshold}}",
                "provider": { "prometheus": { "address": "http://p:9090", "query": "q{s=\"{{args.service}}\",ns=\"{{args.namespace}}\"}" } }
            }]
        }))
        .expect("valid")
    }

    #[test]
    fn a_run_gets_builtins_defaults_and_release_args() {
        let reference = AnalysisRef {
            templates: vec![],
            args: vec![cutover_api::blue_green::AnalysisArg {
                name: "service".into(),
                value: "{{args.previewService}}".into(),
            }],
        };
        // A release arg may itself name a built-in only by value; give it literally here.
        let reference = AnalysisRef {
            args: vec![cutover_api::blue_green::AnalysisArg {
                name: "service".into(),
                value: "shop-preview".into(),
            }],
            ..reference
        };
        let run = build_run(
            &bgd(),
            Gate::PrePromotion,
            7,
            0,
            Color::Green,
            &reference,
            &[("error-rate".into(), template())],
        )
        .expect("no I/O error")
        .expect("resolves");
        assert_eq!(run.metadata.name.as_deref(), Some("shop-7-0-pre"));
        let m = &run.spec.metrics[0];
        assert_eq!(m.success_condition.as_deref(), Some("result < 0.01"));
        assert_eq!(
            m.provider.prometheus.as_ref().map(|p| p.query.as_str()),
            Some("q{s=\"shop-preview\",ns=\"prod\"}")
        );
        assert_eq!(m.count, Some(1), "a pre-promotion metric concludes");
    }

    #[test]
    fn a_missing_argument_is_reported_with_the_template() {
        let reference = AnalysisRef::default();
        let err = build_run(
            &bgd(),
            Gate::PrePromotion,
            1,
            0,
            Color::Green,
            &reference,
            &[("error-rate".into(), template())],
        )
        .expect("no I/O error")
        .expect_err("service has no value");
        assert!(
            err.contains("error-rate") && err.contains("service"),
            "{err}"
        );
    }
}
