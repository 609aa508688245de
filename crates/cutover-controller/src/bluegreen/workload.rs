//! `spec.workloadRef`: a BlueGreenDeployment that takes its pods from a Deployment the user
//! keeps (a Helm chart, Argo CD, kubectl). Its selector and pod template stand in for
//! `spec.selector` and `spec.template`, so a change of its template is a release like any
//! other. The Deployment stays the user's: the controller writes only its `replicas` (as
//! `scaleDown` says, with a field manager of its own) and an annotation remembering the
//! size it had, and gives that size back when the BlueGreenDeployment is deleted.
//!
//! Adoption loses no request: the colors' pods carry the template's labels, so the
//! Services that select the Deployment's pods select them too; the Deployment is scaled
//! down only once the first color is live and fully available (`OnSuccess`), or by as many
//! pods as the color has ready (`Progressively`).

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::ScaleDown;
use cutover_api::k8s_openapi::api::apps::v1::Deployment;
use cutover_api::k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use cutover_api::kube::runtime::reflector::Store;
use cutover_api::kube::{Api, ResourceExt as _};
use serde_json::json;

use super::Refusal;
use crate::cache::lookup;
use crate::conditions::Wanted;
use crate::error::Error;
use crate::objects::apply_fields;

/// Annotation on an adopted Deployment: its `replicas` before the controller first scaled
/// it, given back when the BlueGreenDeployment goes.
pub const REPLICAS_BEFORE: &str = "cutover.dev/replicas-before-adoption";

/// The field manager part the controller scales an adopted Deployment with.
const PART: &str = "workload";

/// `bgd` with the selector and template of the Deployment its `workloadRef` names, or `bgd`
/// itself without one; a refusal when that Deployment cannot be used.
pub async fn resolve(
    bgd: &BlueGreenDeployment,
    workloads: &Store<Deployment>,
    api: &Api<Deployment>,
) -> Result<Result<Option<BlueGreenDeployment>, Refusal>, Error> {
    let Some(wref) = &bgd.spec.workload_ref else {
        return Ok(Ok(None));
    };
    let ns = bgd.namespace().unwrap_or_default();
    let cached = lookup(workloads, &ns, &wref.name);
    let found = match cached {
        Some(d) if !d.annotations().contains_key(crate::cache::WITHOUT_DATA) => Some(d),
        // Seen before anything referenced it: its template was not kept.
        Some(_) => crate::objects::get(api, "Deployment", &wref.name).await?,
        None => None,
    };
    let Some(d) = found else {
        return Ok(Err(Refusal {
            reason: "WorkloadNotFound",
            message: format!(
                "spec.workloadRef: Deployment {} not found in {ns}",
                wref.name
            ),
        }));
    };
    Ok(adopted(bgd, &d).map(Some))
}

/// `bgd` as if its selector and template were Deployment `d`'s (pure).
pub fn adopted(bgd: &BlueGreenDeployment, d: &Deployment) -> Result<BlueGreenDeployment, Refusal> {
    if crate::objects::is_cutovers(&d.metadata) {
        return Err(Refusal {
            reason: "InvalidWorkloadRef",
            message: format!(
                "spec.workloadRef: Deployment {} is a color Cutover runs, not a workload to adopt",
                d.name_any()
            ),
        });
    }
    // A Deployment another controller runs (Flagger's `<name>-primary`, an operator's):
    // scaling it down would fight that controller, which scales it back.
    if let Some(owner) = d
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
    {
        return Err(Refusal {
            reason: "InvalidWorkloadRef",
            message: format!(
                "spec.workloadRef: Deployment {} is controlled by {} {} ({}); adopt the workload that controller was given instead",
                d.name_any(),
                owner.kind,
                owner.name,
                owner.api_version
            ),
        });
    }
    let Some(spec) = &d.spec else {
        return Err(Refusal {
            reason: "InvalidWorkloadRef",
            message: format!("spec.workloadRef: Deployment {} has no spec", d.name_any()),
        });
    };
    let mut out = bgd.clone();
    out.spec.selector = spec.selector.clone();
    out.spec.template = spec.template.clone();
    Ok(out)
}

/// Condition type saying whether a HorizontalPodAutoscaler still scales the adopted
/// Deployment (it would scale it back up as the controller scales it down).
pub const AUTOSCALED_CONDITION: &str = "WorkloadAutoscaled";

/// Whether `bgd`'s status says an autoscaler scales its adopted Deployment (pure).
pub fn autoscaled(bgd: &BlueGreenDeployment) -> bool {
    bgd.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == AUTOSCALED_CONDITION && c.status == "True")
    })
}

/// The HorizontalPodAutoscaler in `ns` that scales Deployment `name`, if any.
pub fn autoscaler_of(
    autoscalers: &Store<HorizontalPodAutoscaler>,
    ns: &str,
    name: &str,
) -> Option<String> {
    autoscalers
        .state()
        .iter()
        .filter(|h| h.metadata.namespace.as_deref() == Some(ns))
        .find(|h| {
            let target = &h.spec.scale_target_ref;
            target.kind == "Deployment"
                && target.name == name
                && target.api_version.as_deref().is_none_or(|v| v == "apps/v1")
        })
        .map(|h| h.name_any())
}

/// The `WorkloadAutoscaled` condition of `bgd` (adopting `deployment`), given the
/// autoscaler still targeting that Deployment (pure).
pub fn autoscaled_condition(
    bgd: &BlueGreenDeployment,
    deployment: &str,
    hpa: Option<&str>,
) -> Wanted {
    match hpa {
        Some(hpa) => Wanted::new(
            AUTOSCALED_CONDITION,
            true,
            "AutoscalerTargetsWorkload",
            &format!(
                "HorizontalPodAutoscaler {hpa} scales Deployment {deployment}, which this BlueGreenDeployment adopted: it is not scaled down while that lasts; set the autoscaler's scaleTargetRef to {{apiVersion: cutover.dev/v1alpha1, kind: BlueGreenDeployment, name: {}}}",
                bgd.name_any()
            ),
        ),
        None => Wanted::new(
            AUTOSCALED_CONDITION,
            false,
            "NoAutoscalerOnWorkload",
            &format!("no HorizontalPodAutoscaler scales Deployment {deployment}"),
        ),
    }
}

/// The replicas the adopted Deployment should have now, or `None` to leave them (pure).
/// `before` is its size before adoption, `live_ready` the ready pods of the color serving
/// (the first color, once it exists) and `settled` whether that color is live and fully
/// available.
pub fn wanted_replicas(
    mode: ScaleDown,
    before: i32,
    live_ready: Option<i32>,
    settled: bool,
) -> Option<i32> {
    match mode {
        ScaleDown::Never => None,
        ScaleDown::OnSuccess => settled.then_some(0),
        ScaleDown::Progressively => {
            if settled {
                Some(0)
            } else {
                live_ready.map(|ready| (before - ready).clamp(0, before))
            }
        }
    }
}

/// The size the Deployment had before adoption: the annotation, else its replicas now.
pub fn replicas_before(d: &Deployment) -> i32 {
    d.annotations()
        .get(REPLICAS_BEFORE)
        .and_then(|v| v.parse().ok())
        .or_else(|| d.spec.as_ref().and_then(|s| s.replicas))
        .unwrap_or(1)
}

/// Scale the adopted Deployment `d` to `replicas`, remembering the size it had.
pub async fn scale(api: &Api<Deployment>, d: &Deployment, replicas: i32) -> Result<(), Error> {
    let now = d.spec.as_ref().and_then(|s| s.replicas);
    let before = replicas_before(d);
    if now == Some(replicas) && d.annotations().contains_key(REPLICAS_BEFORE) {
        return Ok(());
    }
    apply_fields(
        api,
        &d.name_any(),
        PART,
        json!({
            "metadata": { "annotations": { REPLICAS_BEFORE: before.to_string() } },
            "spec": { "replicas": replicas }
        }),
    )
    .await
}

/// Give the Deployment its size back, and say whether it serves again (all its pods
/// available): a deleted BlueGreenDeployment lets its colors go only then.
pub async fn give_back(api: &Api<Deployment>, d: &Deployment) -> Result<bool, Error> {
    if !d.annotations().contains_key(REPLICAS_BEFORE) {
        return Ok(true);
    }
    let before = replicas_before(d);
    scale(api, d, before).await?;
    let status = d.status.clone().unwrap_or_default();
    let current = d.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0);
    Ok(d.spec.as_ref().and_then(|s| s.replicas) == Some(before)
        && current
        && status.available_replicas.unwrap_or(0) >= before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgd_with_ref() -> BlueGreenDeployment {
        crate::fixtures::bgd_from(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod", "uid": "u1" },
            "spec": {
                "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop" },
                "service": { "port": 80 }
            }
        }))
    }

    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "shop", "namespace": "prod" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": {
                    "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [{ "name": "app", "image": "shop:1" }] }
                }
            }
        }))
        .expect("deployment")
    }

    #[test]
    fn the_deployment_supplies_selector_and_template() {
        let b = adopted(&bgd_with_ref(), &deployment(3)).expect("adopted");
        let d = deployment(3);
        let spec = d.spec.expect("spec");
        assert_eq!(b.spec.selector, spec.selector);
        assert_eq!(b.spec.template, spec.template);
        assert_eq!(
            b.metadata.uid.as_deref(),
            Some("u1"),
            "still the same object"
        );
    }

    #[test]
    fn a_color_of_cutovers_is_not_adopted() {
        let mut d = deployment(1);
        d.metadata.labels = Some(
            [(
                cutover_api::MANAGED_BY_LABEL.to_string(),
                cutover_api::MANAGED_BY.to_string(),
            )]
            .into(),
        );
        let refusal = adopted(&bgd_with_ref(), &d).expect_err("refused");
        assert_eq!(refusal.reason, "InvalidWorkloadRef");
    }

    #[test]
    fn a_deployment_another_controller_runs_is_not_adopted() {
        let mut d = deployment(1);
        d.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "shop",
                "uid": "c1", "controller": true
            }))
            .expect("owner reference"),
        ]);
        let refusal = adopted(&bgd_with_ref(), &d).expect_err("refused");
        assert_eq!(refusal.reason, "InvalidWorkloadRef");
        assert!(
            refusal.message.contains("spec.workloadRef") && refusal.message.contains("Canary shop"),
            "{}",
            refusal.message
        );
        // An owner that is not its controller (a garbage-collection link) is no reason.
        if let Some(o) = d
            .metadata
            .owner_references
            .as_mut()
            .and_then(|o| o.first_mut())
        {
            o.controller = None;
        }
        assert!(adopted(&bgd_with_ref(), &d).is_ok());
    }

    #[test]
    fn scale_down_follows_the_mode() {
        use ScaleDown::*;
        // Never touches the Deployment.
        assert_eq!(wanted_replicas(Never, 4, Some(4), true), None);
        // OnSuccess waits for the color to be live and available, then goes to zero.
        assert_eq!(wanted_replicas(OnSuccess, 4, Some(2), false), None);
        assert_eq!(wanted_replicas(OnSuccess, 4, Some(4), true), Some(0));
        // Progressively gives up a pod per ready pod of the color.
        assert_eq!(wanted_replicas(Progressively, 4, None, false), None);
        assert_eq!(wanted_replicas(Progressively, 4, Some(0), false), Some(4));
        assert_eq!(wanted_replicas(Progressively, 4, Some(3), false), Some(1));
        assert_eq!(wanted_replicas(Progressively, 4, Some(6), false), Some(0));
        assert_eq!(wanted_replicas(Progressively, 4, Some(4), true), Some(0));
    }

    #[test]
    fn an_autoscaler_on_the_deployment_is_named_with_the_fix() {
        let c = autoscaled_condition(&bgd_with_ref(), "shop", Some("shop-hpa"));
        assert!(c.status);
        assert!(c.message.contains("shop-hpa"), "{}", c.message);
        assert!(
            c.message.contains("kind: BlueGreenDeployment, name: shop"),
            "{}",
            c.message
        );
        assert!(!autoscaled_condition(&bgd_with_ref(), "shop", None).status);
    }

    #[test]
    fn the_size_before_is_remembered() {
        let mut d = deployment(5);
        assert_eq!(replicas_before(&d), 5);
        d.metadata.annotations = Some([(REPLICAS_BEFORE.to_string(), "3".to_string())].into());
        assert_eq!(replicas_before(&d), 3);
    }
}
