//! Cutover's custom resources (group `cutover.dev`, version `v1alpha1`) and the Kubernetes
//! types the rest of the workspace uses.

pub mod analysis;
pub mod blue_green;
pub mod failover;

pub use blue_green::{
    BlueGreenDeployment, BlueGreenDeploymentSpec, BlueGreenDeploymentStatus, Color, Phase,
};
pub use failover::{FailoverPolicy, FailoverPolicySpec, FailoverPolicyStatus};
pub use k8s_openapi;
pub use kube;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt as _;

/// API group of every Cutover resource.
pub const GROUP: &str = "cutover.dev";

/// Label on every object the controller owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "cutover";
/// Label naming the BlueGreenDeployment an owned object belongs to.
pub const INSTANCE_LABEL: &str = "cutover.dev/bluegreendeployment";
/// Label on pods (and their Deployments and Services) naming the color.
pub const COLOR_LABEL: &str = "cutover.dev/color";
/// Annotation on a color's Deployment: hash of the template it runs.
pub const TEMPLATE_HASH_ANNOTATION: &str = "cutover.dev/template-hash";
/// Annotation on a color's Deployment: revision number it runs.
pub const REVISION_ANNOTATION: &str = "cutover.dev/revision";
/// Annotation on a BlueGreenDeployment, written by a regional FailoverPolicy whose member it
/// is while that member stands by with `spec.pilotLight`: the size its live color runs at
/// instead of `spec.replicas` (the smaller of the two).
pub const PILOT_LIGHT_ANNOTATION: &str = "cutover.dev/pilot-light-replicas";
/// Annotation on the leader-election Lease: the version of the controller that holds it
/// (what `kubectl cutover version` reports).
pub const CONTROLLER_VERSION_ANNOTATION: &str = "cutover.dev/controller-version";

/// Requests to the controller, as annotations on the BlueGreenDeployment. The value is a
/// token (the CLI writes the current time); the controller acts once per new token and
/// records it in `status.handledRequests`, so a request is never applied twice, even across
/// restarts. `kubectl cutover promote|abort|retry` write these.
pub mod requests {
    /// Promote the release now (skips a pause without duration or waits for nothing).
    pub const PROMOTE: &str = "cutover.dev/promote";
    /// Skip every remaining step and promote now (`kubectl cutover promote --full`).
    pub const PROMOTE_FULL: &str = "cutover.dev/promote-full";
    /// Abort the release: all traffic back on the live color, the new color scaled down.
    pub const ABORT: &str = "cutover.dev/abort";
    /// Retry an aborted release.
    pub const RETRY: &str = "cutover.dev/retry";
    /// Every request annotation.
    pub const ALL: [&str; 4] = [PROMOTE, PROMOTE_FULL, ABORT, RETRY];
}

/// Every CRD of the project, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    use analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
    vec![
        without_pod_template_docs(BlueGreenDeployment::crd()),
        AnalysisTemplate::crd(),
        ClusterAnalysisTemplate::crd(),
        AnalysisRun::crd(),
        FailoverPolicy::crd(),
    ]
}

/// Schema of an embedded upstream object (a JobSpec) kept as-is: the apiserver validates it
/// when the Job is created, and its full schema would make the CRD several times larger.
pub fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Drop the descriptions inside `spec.template` (the upstream PodTemplateSpec docs, which
/// `kubectl explain pod.spec` already gives). They are most of the schema's size, and
/// without them the CRD fits `kubectl apply`'s 256 KiB last-applied annotation.
fn without_pod_template_docs(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("description");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let template = schema
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("spec"))
            .and_then(|spec| spec.properties.as_mut())
            .and_then(|p| p.get_mut("template"));
        if let Some(template) = template {
            let description = template.description.take();
            let mut value = serde_json::to_value(&*template).unwrap_or_default();
            strip(&mut value);
            if let Ok(stripped) = serde_json::from_value::<JSONSchemaProps>(value) {
                *template = JSONSchemaProps {
                    description,
                    ..stripped
                };
            }
        }
    }
    crd
}

/// Every CRD as one multi-document YAML stream (what `cutover-controller crd` prints and
/// `deploy/crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
