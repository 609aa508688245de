//! `BlueGreenDeployment` (short name `bgd`): two identical colors of one service, one live,
//! one receiving the next version.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Go duration strings such as `30s`, `1m30s`, `500ms`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A service released blue-green: the controller runs it as two Deployments
/// (`<name>-blue`, `<name>-green`), keeps one live behind the Service `<name>`, releases
/// every new revision of `template` to the idle one, checks it, and moves traffic.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "BlueGreenDeployment",
    plural = "bluegreendeployments",
    shortname = "bgd",
    category = "cutover",
    namespaced,
    status = "BlueGreenDeploymentStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Active","type":"string","jsonPath":".status.activeColor"}"#,
    printcolumn = r#"{"name":"Blue","type":"integer","description":"Revision of the blue color","jsonPath":".status.blue.revision"}"#,
    printcolumn = r#"{"name":"Green","type":"integer","description":"Revision of the green color","jsonPath":".status.green.revision"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","description":"Percent of traffic on the new color","jsonPath":".status.weight"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("!(has(self.spec.strategy) && has(self.spec.strategy.steps) && self.spec.strategy.steps.exists(s, has(s.setWeight) || has(s.setHeaderRoute) || has(s.setMirror))) || (has(self.spec.trafficRouting) && !has(self.spec.trafficRouting.service))")
        .message("spec.strategy.steps: setWeight, setHeaderRoute and setMirror need weighted traffic routing (spec.trafficRouting.gatewayAPI, istio or smi); `service` routing switches all traffic at once")
        .field_path(".spec.strategy.steps")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.spec.environments) == has(oldSelf.spec.environments) && (!has(self.spec.environments) || self.spec.environments == oldSelf.spec.environments)")
        .message("spec.environments is immutable: moving a color would move its traffic with it; create a new BlueGreenDeployment to run the colors elsewhere")
        .field_path(".spec.environments")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("has(self.spec.workloadRef) ? !has(self.spec.template) && !has(self.spec.selector) : has(self.spec.template) && has(self.spec.selector)")
        .message("spec.workloadRef takes the selector and pod template from a Deployment: set either spec.workloadRef, or spec.selector and spec.template")
        .field_path(".spec.workloadRef")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.metadata.name.size() <= 50")
        .message("metadata.name: at most 50 characters, so that `<name>-preview` and `<name>-green` stay valid names"),
)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentSpec {
    /// Number of pods of each color at full size. Both colors run this many while a release
    /// is checked, and a `Warm` standby keeps this many after promotion.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Label selector of the pods, as in a Deployment. Must match `template.metadata.labels`.
    /// The controller adds `cutover.dev/color` to tell the colors apart. Absent with
    /// `workloadRef` (the Deployment's selector is used).
    #[serde(default, skip_serializing_if = "is_default")]
    pub selector: LabelSelector,

    /// The pod template. A change of it (or of a ConfigMap or Secret it references) is a new
    /// revision, released to the idle color. Absent with `workloadRef`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub template: PodTemplateSpec,

    /// Take the selector and pod template from an existing Deployment instead of
    /// `selector` and `template`: a change of its template (by Helm, Argo CD, kubectl) is a
    /// new revision. Cutover never edits its template and never deletes it; it only scales it
    /// down once a color serves its traffic (`scaleDown`), and back up when this
    /// BlueGreenDeployment is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,

    /// The Services the controller owns: `<name>` (live traffic), `<name>-preview` (the new
    /// color), `<name>-blue` and `<name>-green` (stable per-color targets).
    pub service: ServicePort,

    /// How a release proceeds.
    #[serde(default)]
    pub strategy: Strategy,

    /// How traffic is moved between the colors. Exactly one provider; default `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,

    /// Where each color runs (default: this namespace, this cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Environments>,

    /// Stop releasing: the current step holds until `paused` is false again. Traffic stays
    /// where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// How many old revisions to keep for `kubectl cutover undo --to-revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: Option<i32>,
}

fn default_replicas() -> i32 {
    1
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An existing Deployment a BlueGreenDeployment takes its pods from (`spec.workloadRef`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.apiVersion == 'apps/v1' && self.kind == 'Deployment'",
    "message": "spec.workloadRef: only apiVersion apps/v1, kind Deployment"
}]))]
pub struct WorkloadRef {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Its name, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// When the Deployment's pods stop serving: `OnSuccess` (default) scales it to zero once
    /// the first color is live and healthy; `Progressively` scales it down in step with the
    /// color scaling up; `Never` leaves it running (its pods keep serving through its own
    /// Services).
    #[serde(default)]
    pub scale_down: ScaleDown,
}

/// When an adopted Deployment is scaled down (`spec.workloadRef.scaleDown`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScaleDown {
    /// Never: the Deployment keeps its size.
    Never,
    /// To zero once the first color is live and healthy.
    #[default]
    OnSuccess,
    /// In step with the first color scaling up: the two together keep the full size.
    Progressively,
}

/// The port the owned Services expose.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port the Services listen on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port (number or name) of the pods that traffic goes to; default: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// Name of the Service port; default `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(TCP|UDP|SCTP)$"))]
    pub protocol: Option<String>,
}

/// How a release proceeds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// Traffic steps between the preview and the promotion. Empty: switch all traffic at
    /// once after the checks pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub steps: Vec<Step>,
    /// Promote without a `kubectl cutover promote` once the new color is ready and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion: Option<AutoPromotion>,
    /// Analysis run against the preview before any traffic moves. Failure aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisRef>,
    /// Analysis run after promotion, while the previous color stays warm. Failure switches
    /// traffic straight back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisRef>,
    /// Analysis run from the start of a release until promotion. Failure aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_analysis: Option<AnalysisRef>,
    /// What happens to the previous live color after promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<Standby>,
    /// Seconds a release may take to make the new color available before it is reported as
    /// stuck (condition `Progressing=False`, reason `ProgressDeadlineExceeded`). Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i64>,
    /// Abort the release (traffic stays on the live color, the new one is scaled down) when
    /// the progress deadline passes, instead of only reporting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort_on_deadline: bool,
}

/// Automatic promotion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoPromotion {
    /// Promote automatically (default true). When false the release waits in `Paused`
    /// until `kubectl cutover promote`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds to wait after the new color is ready before promoting.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub after_seconds: i64,
}

impl Default for AutoPromotion {
    fn default() -> Self {
        Self {
            enabled: true,
            after_seconds: 0,
        }
    }
}

fn default_true() -> bool {
    true
}

/// What happens to the previous live color after a promotion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Standby {
    /// `Warm` (default) keeps it at full size: instant rollback and a hot standby.
    /// `ScaleDown` scales it to zero after `scaleDownDelaySeconds`. `Zero` at once.
    #[serde(default)]
    pub mode: StandbyMode,
    /// Seconds before a `ScaleDown` standby is scaled to zero. Default 600.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: i64,
}

impl Default for Standby {
    fn default() -> Self {
        Self {
            mode: StandbyMode::Warm,
            scale_down_delay_seconds: default_scale_down_delay(),
        }
    }
}

fn default_scale_down_delay() -> i64 {
    600
}

/// Standby modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StandbyMode {
    /// Keep the previous color at full size.
    #[default]
    Warm,
    /// Scale the previous color to zero after `scaleDownDelaySeconds`.
    ScaleDown,
    /// Scale the previous color to zero right after promotion.
    Zero,
}

/// One step of a release. Exactly one field is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) + (has(self.setHeaderRoute) ? 1 : 0) + (has(self.setMirror) ? 1 : 0) == 1",
    "message": "a step sets exactly one of setWeight, pause, analysis, setHeaderRoute, setMirror"
}]))]
pub struct Step {
    /// Percent of traffic sent to the new color.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Wait: for `duration`, or until `kubectl cutover promote` when no duration is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
    /// Run an analysis; failure aborts the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRef>,
    /// Route requests that match to the new color (A/B testing), whatever the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<HeaderRoute>,
    /// Mirror a share of the live traffic to the new color (responses are discarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror: Option<Mirror>,
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to wait (Go duration, e.g. `30s`, `5m`). Absent: wait for a promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub duration: Option<String>,
}

/// Header (or cookie) matches of an A/B route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoute {
    /// All of these must match. An empty list removes the header route.
    #[serde(default, rename = "match")]
    #[schemars(length(max = 16))]
    pub matches: Vec<HeaderMatch>,
}

/// One header or cookie match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.headerName) != has(self.cookieName)",
    "message": "a match names exactly one of headerName or cookieName"
}]))]
pub struct HeaderMatch {
    /// Request header to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// Cookie to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// How the value must match.
    pub header_value: StringMatch,
}

/// A string match: exactly one of `exact`, `prefix`, `regex`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1",
    "message": "set exactly one of exact, prefix, regex"
}]))]
pub struct StringMatch {
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value matches this regular expression (RE2 syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Mirroring of live traffic to the new color.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Percent of requests mirrored; 0 removes the mirror.
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
}

/// Analyses to run, by template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRef {
    /// The templates; all must pass.
    #[schemars(length(min = 1, max = 16))]
    pub templates: Vec<TemplateRef>,
    /// Values of the templates' arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub args: Vec<AnalysisArg>,
}

/// A reference to an `AnalysisTemplate` (or `ClusterAnalysisTemplate`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Name of the template.
    pub template_name: String,
    /// The template is a `ClusterAnalysisTemplate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// An argument value for an analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisArg {
    /// Argument name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Traffic routing: exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.service) ? 1 : 0) + (has(self.gatewayAPI) ? 1 : 0) + (has(self.istio) ? 1 : 0) + (has(self.smi) ? 1 : 0) <= 1",
    "message": "set at most one of service, gatewayAPI, istio, smi"
}]))]
pub struct TrafficRouting {
    /// Switch by the live Service's selector: all traffic at once, no weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRouting>,
    /// Weights and matches on a Gateway API HTTPRoute.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiRouting>,
    /// Weights and matches on an Istio VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    /// Weights on an SMI TrafficSplit (older Linkerd, OSM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiRouting>,
}

/// `service` routing has no options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ServiceRouting {}

/// Gateway API routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// Name of the HTTPRoute (same namespace) whose backendRefs the controller manages.
    #[serde(rename = "httpRoute")]
    pub http_route: String,
}

/// Istio routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IstioRouting {
    /// The VirtualService.
    pub virtual_service: VirtualServiceRef,
}

/// A VirtualService and the HTTP routes in it that the controller manages.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceRef {
    /// Name of the VirtualService (same namespace).
    pub name: String,
    /// Names of its HTTP routes to manage; empty: the only route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

/// SMI routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmiRouting {
    /// Name of the TrafficSplit the controller owns.
    pub traffic_split_name: String,
}

/// Where the colors run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environments {
    /// Where the blue color runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<Environment>,
    /// Where the green color runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<Environment>,
}

/// A place a color runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// Namespace of the color's objects (default: the BlueGreenDeployment's). It must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub namespace: Option<String>,
    /// Another cluster, reached with the kubeconfig in this Secret (key `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
}

/// A kubeconfig Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the Secret in the BlueGreenDeployment's namespace.
    pub secret_name: String,
    /// The Secret's key holding the kubeconfig (default `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The two colors.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// The blue color.
    Blue,
    /// The green color.
    Green,
}

/// The release phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// All traffic on the live color, which is fully available.
    Healthy,
    /// A release is under way.
    Progressing,
    /// A release waits: for a promote, the end of a pause, or `spec.paused`.
    Paused,
    /// A release was aborted or cannot proceed; see the message and conditions.
    Degraded,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenDeploymentStatus {
    /// Healthy, Progressing, Paused or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The color that takes live traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<Color>,
    /// The blue color's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<ColorStatus>,
    /// The green color's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<ColorStatus>,
    /// Index of the step the release is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    /// Percent of traffic on the new color (100 when no release is under way).
    #[serde(default)]
    pub weight: i32,
    /// The current release was aborted; cleared by a spec change or `retry`.
    #[serde(default)]
    pub abort: bool,
    /// A sentence on what is happening, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Available, Progressing, Paused, Degraded, InvalidSpec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready pods of the active color (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the pods, serialized (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The release under way, if any: where the controller resumes after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseStatus>,
    /// The previous live color, kept as standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyStatus>,
    /// The newest revision number handed out.
    #[serde(default)]
    pub latest_revision: i64,
    /// Hash of the newest template (with the data of the ConfigMaps and Secrets it uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_template_hash: Option<String>,
    /// The last request annotations handled (promote, abort, retry), by their value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled_requests: BTreeMap<String, String>,
}

impl BlueGreenDeployment {
    /// The pilot-light size a regional FailoverPolicy set on this member
    /// ([`crate::PILOT_LIGHT_ANNOTATION`]), if any.
    pub fn pilot_light_replicas(&self) -> Option<i32> {
        self.metadata
            .annotations
            .as_ref()?
            .get(crate::PILOT_LIGHT_ANNOTATION)?
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
    }
}

impl BlueGreenDeploymentStatus {
    /// The observed Deployment of `color`.
    pub fn color(&self, color: Color) -> Option<&ColorStatus> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }

    /// The revision `color` runs, if it has a Deployment.
    pub fn revision_of(&self, color: Option<Color>) -> Option<i64> {
        color.and_then(|c| self.color(c)).map(|cs| cs.revision)
    }
}

/// One color's Deployment as observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColorStatus {
    /// Revision the color runs.
    pub revision: i64,
    /// Hash of the template the color runs.
    pub pod_template_hash: String,
    /// Image of the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Desired pods.
    pub replicas: i32,
    /// Ready pods.
    pub ready_replicas: i32,
    /// Namespace the color runs in, when `spec.environments` puts it outside the
    /// BlueGreenDeployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The kubeconfig Secret of the cluster the color runs in, when it is another cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A release under way.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The color receiving the new revision.
    pub color: Option<Color>,
    /// Its revision.
    pub revision: i64,
    /// Its template hash.
    pub template_hash: String,
    /// When the release started (RFC 3339).
    pub started_at: String,
    /// When the new color first became fully available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    /// Why it was aborted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// Attempt number (a retry starts a new attempt, with new analysis runs).
    #[serde(default)]
    pub attempt: u32,
    /// When the new color took live traffic (post-promotion analysis runs from then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<String>,
    /// The step the release is at.
    #[serde(default)]
    pub step_index: u32,
    /// When that step started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,
}

/// The previous live color after a promotion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StandbyStatus {
    /// The standby color.
    pub color: Option<Color>,
    /// When it became standby (RFC 3339).
    pub since: String,
}
