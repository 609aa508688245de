//! `AnalysisTemplate`, `ClusterAnalysisTemplate` and `AnalysisRun`: checks that gate a
//! release, measured by providers (Prometheus, web, Job, color comparison) and judged by
//! CEL conditions.

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reusable checks for releases in one namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    shortname = "at",
    category = "cutover",
    namespaced
)]
#[kube(derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Arguments the metrics use as `{{args.NAME}}`. Built-ins need no declaration:
    /// `{{args.namespace}}`, `{{args.name}}`, `{{args.revision}}`, `{{args.color}}` (the new
    /// color), `{{args.liveColor}}`, `{{args.previewService}}`, `{{args.liveService}}`,
    /// `{{args.newService}}`, `{{args.liveColorService}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub args: Vec<ArgSpec>,
    /// The metrics; all must pass.
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<Metric>,
}

/// The same as an `AnalysisTemplate`, for every namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    shortname = "cat",
    category = "cutover"
)]
#[kube(derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    /// As in `AnalysisTemplate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub args: Vec<ArgSpec>,
    /// As in `AnalysisTemplate`.
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<Metric>,
}

/// A declared argument.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArgSpec {
    /// Name, used as `{{args.NAME}}`.
    pub name: String,
    /// Default value; an argument without one must be given by the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One metric: a provider measured every `interval`, judged by the conditions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// Name, unique in the template.
    pub name: String,
    /// Time between measurements (Go duration). Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Number of measurements; absent: measure until the release step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,
    /// Wait before the first measurement (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub initial_delay: Option<String>,
    /// CEL expression over `result` that means success, e.g. `result < 0.01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// CEL expression over `result` that means failure, e.g. `result >= 0.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated; one more fails the metric. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failure_limit: Option<i32>,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub inconclusive_limit: Option<i32>,
    /// Provider errors in a row tolerated; one more is an error. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub consecutive_error_limit: Option<i32>,
    /// Where the value comes from.
    pub provider: Provider,
}

/// Exactly one provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.prometheus) ? 1 : 0) + (has(self.web) ? 1 : 0) + (has(self.job) ? 1 : 0) + (has(self.compare) ? 1 : 0) == 1",
    "message": "set exactly one of prometheus, web, job, compare"
}]))]
pub struct Provider {
    /// An instant PromQL query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProvider>,
    /// An HTTP request, optionally with a JSON path into the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebProvider>,
    /// A Kubernetes Job: success passes, failure fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobProvider>,
    /// The same query for the live and the new color, judged by a Mann-Whitney U test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareProvider>,
}

/// A Prometheus query.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProvider {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus:9090`.
    pub address: String,
    /// PromQL; `{{args.NAME}}` is substituted.
    pub query: String,
    /// Request timeout in seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,
}

/// An HTTP request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebProvider {
    /// URL; `{{args.NAME}}` is substituted.
    pub url: String,
    /// `GET` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(GET|POST)$"))]
    pub method: Option<String>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebHeader>,
    /// Request body (POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// JSONPath (RFC 9535) into the response body, e.g. `$.status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Request timeout in seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,
}

/// A request header.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebHeader {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: String,
}

/// A Job run per measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProvider {
    /// The Job's spec (`{{args.NAME}}` is substituted in it).
    #[schemars(schema_with = "crate::preserve_unknown_object")]
    pub spec: JobSpec,
}

/// A comparison of the new color against the live one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareProvider {
    /// Base URL of the Prometheus HTTP API.
    pub address: String,
    /// PromQL run once per color over `window`; `{{color}}` becomes `blue` or `green`
    /// (and `{{args.NAME}}` is substituted). Every sample of every series is one observation.
    pub query: String,
    /// The reference color: `live` (default) or `blue`/`green`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// The color judged: `new` (default) or `blue`/`green`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// `mannWhitney` (the only test so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^mannWhitney$"))]
    pub test: Option<String>,
    /// Confidence of the test, e.g. 0.95: the candidate fails when the probability of its
    /// values being this much worse by chance is below 1 - confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,
    /// What counts as worse: `greater` (default: higher values are worse, as latency and
    /// error rates) or `less`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(greater|less)$"))]
    pub worse: Option<String>,
    /// How far back to take samples (Go duration, default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub window: Option<String>,
    /// Resolution of the samples (Go duration, default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"))]
    pub step: Option<String>,
    /// Fewer samples than this on either side is inconclusive (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3))]
    pub min_samples: Option<i32>,
}

/// One run of analysis for one release gate, owned by the BlueGreenDeployment.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cutover.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    shortname = "ar",
    category = "cutover",
    namespaced,
    status = "AnalysisRunStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Gate","type":"string","jsonPath":".spec.gate"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[kube(derive = "PartialEq")]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// The metrics, with every argument substituted.
    pub metrics: Vec<Metric>,
    /// The argument values used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgSpec>,
    /// Which gate of the release it checks: `prePromotion`, `postPromotion`, `step-N`,
    /// `background`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The revision it checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Stop measuring metrics that have no `count` and conclude (set when the gate ends).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
}

/// Phases of a run or metric.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AnalysisPhase {
    /// Measuring.
    Running,
    /// Passed.
    Successful,
    /// A failure condition held more often than tolerated.
    Failed,
    /// Results were missing or ambiguous more often than tolerated.
    Inconclusive,
    /// The provider failed more often in a row than tolerated.
    Error,
}

/// Observed state of an AnalysisRun.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// The run's phase: the worst of its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    /// Why, naming the metric, its last values and the condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// One entry per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Measurements of one metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// The metric.
    pub name: String,
    /// Its phase.
    pub phase: Option<AnalysisPhase>,
    /// Measurements taken (all of them, including ones no longer listed).
    pub count: i32,
    /// Successful measurements.
    pub successful: i32,
    /// Failed measurements.
    pub failed: i32,
    /// Inconclusive measurements.
    pub inconclusive: i32,
    /// Provider errors.
    pub error: i32,
    /// Provider errors in a row, now.
    pub consecutive_error: i32,
    /// The newest measurements (at most 10 are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<MeasurementStatus>,
    /// Name of the Job of the measurement in progress (job provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_job: Option<String>,
    /// When the pending measurement started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since: Option<String>,
}

/// One measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementStatus {
    /// Successful, Failed, Inconclusive or Error.
    pub phase: Option<AnalysisPhase>,
    /// The value measured, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why (the condition that held, or the provider's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}
