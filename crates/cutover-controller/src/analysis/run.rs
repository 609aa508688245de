//! The AnalysisRun reconciler: takes each metric's measurements when they are due, judges
//! them (CEL conditions, limits) and records everything in the run's status. The
//! BlueGreenDeployment reconciler reads the run's phase; it never measures itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cutover_api::analysis::{
    AnalysisPhase, AnalysisRun, AnalysisRunStatus, MeasurementStatus, Metric, MetricResult,
};
use cutover_api::k8s_openapi::api::batch::v1::Job;
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_api::kube::api::PostParams;
use cutover_api::kube::runtime::controller::Action as Requeue;
use cutover_api::kube::{Api, Client, Resource as _, ResourceExt as _};
use cutover_core::analysis::Value;
use cutover_core::analysis::compare::{Alternative, judge};
use cutover_core::analysis::condition::{Condition, assess};
use cutover_core::analysis::verdict::{
    Measurement, MeasurementPhase, MetricPhase, MetricPolicy, RunPhase, Tally, metric_phase,
    next_due, run_phase,
};
use cutover_core::release::Timestamp;

use crate::clock::{duration_or as duration, now, parse_time, rfc3339};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::providers::{prometheus, web};

const KIND: &str = "AnalysisRun";
/// Measurements listed per metric in status (the counts keep the full history).
const MEASUREMENTS_KEPT: usize = 10;

/// Shared by every run reconcile.
pub struct RunContext {
    /// The API client.
    pub client: Client,
    /// HTTP client of the providers.
    pub http: reqwest::Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext").finish_non_exhaustive()
    }
}

fn limit(n: Option<i32>, default: u32) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(default)
}

/// The scheduling and limits of `m`.
pub fn policy_of(m: &Metric) -> MetricPolicy {
    let d = MetricPolicy::default();
    MetricPolicy {
        interval: duration(m.interval.as_deref(), d.interval),
        count: m.count.and_then(|c| u32::try_from(c).ok()),
        initial_delay: duration(m.initial_delay.as_deref(), Duration::ZERO),
        failure_limit: limit(m.failure_limit, d.failure_limit),
        inconclusive_limit: limit(m.inconclusive_limit, d.inconclusive_limit),
        consecutive_error_limit: limit(m.consecutive_error_limit, d.consecutive_error_limit),
    }
}

fn api_phase(p: MeasurementPhase) -> AnalysisPhase {
    match p {
        MeasurementPhase::Successful => AnalysisPhase::Successful,
        MeasurementPhase::Failed => AnalysisPhase::Failed,
        MeasurementPhase::Inconclusive => AnalysisPhase::Inconclusive,
        MeasurementPhase::Error => AnalysisPhase::Error,
    }
}

fn metric_api_phase(p: MetricPhase) -> AnalysisPhase {
    match p {
        MetricPhase::Running => AnalysisPhase::Running,
        MetricPhase::Successful => AnalysisPhase::Successful,
        MetricPhase::Failed => AnalysisPhase::Failed,
        MetricPhase::Inconclusive => AnalysisPhase::Inconclusive,
        MetricPhase::Error => AnalysisPhase::Error,
    }
}

fn run_api_phase(p: RunPhase) -> AnalysisPhase {
    match p {
        RunPhase::Running => AnalysisPhase::Running,
        RunPhase::Successful => AnalysisPhase::Successful,
        RunPhase::Failed => AnalysisPhase::Failed,
        RunPhase::Inconclusive => AnalysisPhase::Inconclusive,
        RunPhase::Error => AnalysisPhase::Error,
    }
}

fn tally_of(r: &MetricResult) -> Tally {
    let n = |v: i32| u32::try_from(v).unwrap_or(0);
    Tally {
        successful: n(r.successful),
        failed: n(r.failed),
        inconclusive: n(r.inconclusive),
        error: n(r.error),
        consecutive_error: n(r.consecutive_error),
        taken: n(r.count),
    }
}

fn write_tally(r: &mut MetricResult, t: &Tally) {
    let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    r.successful = n(t.successful);
    r.failed = n(t.failed);
    r.inconclusive = n(t.inconclusive);
    r.error = n(t.error);
    r.consecutive_error = n(t.consecutive_error);
    r.count = n(t.taken);
}

fn measurements_of(r: &MetricResult) -> Vec<Measurement> {
    r.measurements
        .iter()
        .filter_map(|m| {
            Some(Measurement {
                phase: match m.phase? {
                    AnalysisPhase::Successful => MeasurementPhase::Successful,
                    AnalysisPhase::Failed => MeasurementPhase::Failed,
                    AnalysisPhase::Inconclusive => MeasurementPhase::Inconclusive,
                    AnalysisPhase::Error | AnalysisPhase::Running => MeasurementPhase::Error,
                },
                started_at: parse_time(&m.started_at)?,
                finished_at: parse_time(&m.finished_at)?,
                value: m.value.clone(),
                message: m.message.clone(),
            })
        })
        .collect()
}

/// The outcome of one measurement.
struct Outcome {
    phase: MeasurementPhase,
    value: Option<String>,
    message: Option<String>,
}

impl Outcome {
    fn error(message: impl Into<String>) -> Self {
        Self {
            phase: MeasurementPhase::Error,
            value: None,
            message: Some(message.into()),
        }
    }
}

/// Judge `value` by the metric's conditions, saying which one decided.
fn judged(m: &Metric, value: Value) -> Outcome {
    let compile = |c: &Option<String>| c.as_deref().map(Condition::compile).transpose();
    let (success, failure) = match (compile(&m.success_condition), compile(&m.failure_condition)) {
        (Ok(s), Ok(f)) => (s, f),
        (Err(e), _) | (_, Err(e)) => return Outcome::error(e.to_string()),
    };
    match assess(&value, success.as_ref(), failure.as_ref()) {
        Ok(phase) => {
            let why = match phase {
                MeasurementPhase::Inconclusive if value.is_missing() => {
                    "no data (empty or NaN result)".to_string()
                }
                MeasurementPhase::Failed => match (&m.failure_condition, &m.success_condition) {
                    (Some(f), _)
                        if failure
                            .as_ref()
                            .is_some_and(|c| c.eval(&value).unwrap_or(false)) =>
                    {
                        format!("met failureCondition `{f}`")
                    }
                    (_, Some(s)) => format!("did not meet successCondition `{s}`"),
                    _ => "failed".to_string(),
                },
                MeasurementPhase::Inconclusive => "met neither condition".to_string(),
                _ => String::new(),
            };
            Outcome {
                phase,
                value: Some(value.to_string()),
                message: (!why.is_empty()).then_some(why),
            }
        }
        Err(e) => Outcome {
            phase: MeasurementPhase::Error,
            value: Some(value.to_string()),
            message: Some(e.to_string()),
        },
    }
}

fn arg<'a>(run: &'a AnalysisRun, name: &str) -> Option<&'a str> {
    run.spec
        .args
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.value.as_deref())
}

/// Which color a compare side names: `live`, `new`, or a color.
fn side(run: &AnalysisRun, which: Option<&str>, default: &str) -> Option<String> {
    match which.unwrap_or(default) {
        "live" => arg(run, "liveColor").map(str::to_string),
        "new" => arg(run, "color").map(str::to_string),
        other => Some(other.to_string()),
    }
}

async fn measure(ctx: &RunContext, run: &AnalysisRun, m: &Metric) -> Outcome {
    let timeout =
        |s: Option<i32>| Duration::from_secs(u64::try_from(s.unwrap_or(10)).unwrap_or(10));
    if let Some(p) = &m.provider.prometheus {
        let limit = timeout(p.timeout_seconds);
        return match tokio::time::timeout(limit, prometheus::query(&ctx.http, &p.address, &p.query))
            .await
        {
            Ok(Ok(v)) => judged(m, v),
            Ok(Err(e)) => Outcome::error(e.to_string()),
            Err(_) => Outcome::error(format!(
                "prometheus {}: no answer within {}s",
                p.address,
                limit.as_secs()
            )),
        };
    }
    if let Some(w) = &m.provider.web {
        let req = web::WebRequest {
            url: w.url.clone(),
            method: if w.method.as_deref() == Some("POST") {
                web::Method::Post
            } else {
                web::Method::Get
            },
            headers: w
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            body: w.body.clone(),
            json_path: w.json_path.clone(),
            timeout: timeout(w.timeout_seconds),
        };
        return match web::measure(&ctx.http, &req).await {
            Ok(v) => judged(m, v),
            Err(e) => Outcome::error(e.to_string()),
        };
    }
    if let Some(c) = &m.provider.compare {
        let (Some(base), Some(cand)) = (
            side(run, c.baseline.as_deref(), "live"),
            side(run, c.candidate.as_deref(), "new"),
        ) else {
            return Outcome::error("compare: the run has no liveColor/color arguments");
        };
        let window = duration(c.window.as_deref(), Duration::from_secs(300));
        let step = duration(c.step.as_deref(), Duration::from_secs(1));
        let end = SystemTime::now();
        let start = end.checked_sub(window).unwrap_or(end);
        let mut samples = Vec::new();
        for color in [&base, &cand] {
            let q = c.query.replace("{{color}}", color);
            match prometheus::query_range(&ctx.http, &c.address, &q, start, end, step).await {
                Ok(v) => samples.push(v),
                Err(e) => return Outcome::error(e.to_string()),
            }
        }
        let alternative = if c.worse.as_deref() == Some("less") {
            Alternative::Less
        } else {
            Alternative::Greater
        };
        let confidence = c.confidence.unwrap_or(0.95);
        let min = usize::try_from(c.min_samples.unwrap_or(8)).unwrap_or(8);
        let (b, k) = (&samples[0], &samples[1]);
        let phase = judge(b, k, alternative, confidence, min);
        let p = cutover_core::analysis::compare::mann_whitney(b, k, alternative).map(|t| t.p_value);
        let value = format!(
            "p={} n({base})={} n({cand})={}",
            p.map_or("n/a".to_string(), |p| format!("{p:.4}")),
            b.len(),
            k.len()
        );
        let message = match phase {
            MeasurementPhase::Failed => Some(format!(
                "{cand} is worse than {base} at confidence {confidence} (Mann-Whitney U)"
            )),
            MeasurementPhase::Inconclusive => {
                Some(format!("fewer than {min} samples on a side, or all tied"))
            }
            _ => None,
        };
        return Outcome {
            phase,
            value: Some(value),
            message,
        };
    }
    Outcome::error("no provider")
}

fn job_name(run: &str, metric: &str, n: i32) -> String {
    let mut base = format!("{run}-{metric}");
    // Job names end up in pod labels: at most 63 characters.
    base.truncate(63 - 1 - n.to_string().len());
    format!("{}-{n}", base.trim_end_matches('-'))
}

/// Start or check the Job of a `job` metric. `Some(outcome)` once it finished.
async fn job_measurement(
    ctx: &RunContext,
    run: &AnalysisRun,
    m: &Metric,
    r: &mut MetricResult,
    now: Timestamp,
) -> Result<Option<Outcome>, Error> {
    let ns = run.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pending) = r.pending_job.clone() else {
        let Some(spec) = m.provider.job.as_ref().map(|j| j.spec.clone()) else {
            return Ok(Some(Outcome::error("no job spec")));
        };
        let name = job_name(&run.name_any(), &m.name, r.count + 1);
        let owner = run
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let mut labels = crate::objects::owned_labels(
            run.labels()
                .get(cutover_api::INSTANCE_LABEL)
                .map(String::as_str)
                .unwrap_or_default(),
            None,
        );
        labels.insert("cutover.dev/analysisrun".into(), run.name_any());
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        };
        match jobs.create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(cutover_api::kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Ok(Some(Outcome::error(format!("creating Job {name}: {e}")))),
        }
        r.pending_job = Some(name);
        r.pending_since = Some(rfc3339(now));
        return Ok(None);
    };
    let job = jobs.get_opt(&pending).await.map_err(|source| Error::Read {
        kind: "Job",
        name: pending.clone(),
        source,
    })?;
    let Some(job) = job else {
        return Ok(Some(Outcome::error(format!("Job {pending} disappeared"))));
    };
    let done = |t: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    let outcome = if done("Complete") || done("SuccessCriteriaMet") {
        Outcome {
            phase: MeasurementPhase::Successful,
            value: Some("succeeded".into()),
            message: Some(format!("Job {pending} succeeded")),
        }
    } else if done("Failed") || done("FailureTarget") {
        Outcome {
            phase: MeasurementPhase::Failed,
            value: Some("failed".into()),
            message: Some(format!("Job {pending} failed")),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(outcome))
}

/// A sentence on the worst metric: its name, values and the condition that decided.
fn summary(results: &[MetricResult], phase: AnalysisPhase) -> String {
    if phase == AnalysisPhase::Successful {
        return format!("all {} metric(s) passed", results.len());
    }
    if phase == AnalysisPhase::Running {
        return "measuring".to_string();
    }
    let Some(worst) = results.iter().find(|r| r.phase == Some(phase)) else {
        return format!("{phase:?}");
    };
    let values: Vec<&str> = worst
        .measurements
        .iter()
        .rev()
        .take(3)
        .filter_map(|m| m.value.as_deref())
        .collect();
    let why = worst
        .measurements
        .iter()
        .rev()
        .find_map(|m| m.message.clone())
        .unwrap_or_default();
    format!(
        "metric {}: {:?} after {} measurement(s) ({} failed, {} inconclusive, {} errors); last values [{}]; {}",
        worst.name,
        phase,
        worst.count,
        worst.failed,
        worst.inconclusive,
        worst.error,
        values.join(", "),
        why
    )
}

/// Reconcile one AnalysisRun.
pub async fn reconcile(run: Arc<AnalysisRun>, ctx: Arc<RunContext>) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    // The status holds the tallies: read it fresh, never from a cache that may lag behind
    // the last write (a stale tally would count a measurement twice).
    let api: Api<AnalysisRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let fresh = api
        .get_opt(&run.name_any())
        .await
        .map_err(|source| Error::Read {
            kind: KIND,
            name: run.name_any(),
            source,
        })?;
    let Some(run) = fresh else {
        return Ok(Requeue::await_change());
    };
    let result = reconcile_inner(&run, &ctx).await;
    ctx.metrics.reconcile_finished(KIND, started.elapsed());
    result
}

async fn reconcile_inner(run: &AnalysisRun, ctx: &RunContext) -> Result<Requeue, Error> {
    let old = run.status.clone().unwrap_or_default();
    let terminal = |p: Option<AnalysisPhase>| p.is_some_and(|p| p != AnalysisPhase::Running);
    if terminal(old.phase) {
        return Ok(Requeue::await_change());
    }
    let now = now();
    let mut st: AnalysisRunStatus = old.clone();
    let started_at = st.started_at.as_deref().and_then(parse_time).unwrap_or(now);
    st.started_at = Some(rfc3339(started_at));
    let mut wake: Option<Timestamp> = None;
    let mut phases = Vec::new();
    let mut results = Vec::new();
    for m in &run.spec.metrics {
        let mut r = st
            .metric_results
            .iter()
            .find(|r| r.name == m.name)
            .cloned()
            .unwrap_or(MetricResult {
                name: m.name.clone(),
                ..MetricResult::default()
            });
        let policy = policy_of(m);
        let mut tally = tally_of(&r);
        let mut phase = metric_phase(&policy, &tally, run.spec.terminate);
        if phase == MetricPhase::Running {
            let due = next_due(&policy, &measurements_of(&r), started_at);
            let measuring = r.pending_job.is_some() || now >= due;
            if measuring {
                let taken_at = r
                    .pending_since
                    .as_deref()
                    .and_then(parse_time)
                    .unwrap_or(now);
                let outcome = if m.provider.job.is_some() {
                    job_measurement(ctx, run, m, &mut r, now).await?
                } else {
                    Some(measure(ctx, run, m).await)
                };
                match outcome {
                    Some(o) => {
                        tally.record(o.phase);
                        write_tally(&mut r, &tally);
                        r.pending_job = None;
                        r.pending_since = None;
                        r.measurements.push(MeasurementStatus {
                            phase: Some(api_phase(o.phase)),
                            value: o.value,
                            message: o.message,
                            started_at: rfc3339(taken_at),
                            finished_at: rfc3339(crate::clock::now()),
                        });
                        let excess = r.measurements.len().saturating_sub(MEASUREMENTS_KEPT);
                        r.measurements.drain(..excess);
                        phase = metric_phase(&policy, &tally, run.spec.terminate);
                        if phase == MetricPhase::Running {
                            let next = next_due(&policy, &measurements_of(&r), started_at);
                            wake = Some(wake.map_or(next, |w| w.min(next)));
                        }
                    }
                    // A Job is running: its status change wakes us (we own it); poll too.
                    None => {
                        let next = now.plus(Duration::from_secs(2));
                        wake = Some(wake.map_or(next, |w| w.min(next)));
                    }
                }
            } else {
                wake = Some(wake.map_or(due, |w| w.min(due)));
            }
        }
        r.phase = Some(metric_api_phase(phase));
        phases.push(phase);
        results.push(r);
    }
    let phase = run_api_phase(run_phase(&phases));
    st.metric_results = results;
    st.phase = Some(phase);
    st.message = Some(summary(&st.metric_results, phase));
    if st != old {
        let api: Api<AnalysisRun> =
            Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
        crate::objects::apply_status(&api, &run.name_any(), &st).await?;
    }
    if terminal(Some(phase)) {
        tracing::info!(run = %run.name_any(), ?phase, "analysis concluded: {}", st.message.unwrap_or_default());
        return Ok(Requeue::await_change());
    }
    Ok(match wake {
        Some(w) => Requeue::requeue(w.since(crate::clock::now()).max(Duration::from_millis(50))),
        None => Requeue::requeue(Duration::from_secs(30)),
    })
}

/// After a failed reconcile: log, count, retry soon.
pub fn error_policy(run: Arc<AnalysisRun>, error: &Error, ctx: Arc<RunContext>) -> Requeue {
    tracing::warn!(run = %run.name_any(), error = %error, "analysis reconcile failed");
    ctx.metrics.reconcile_failed(KIND, error.kind());
    Requeue::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(success: Option<&str>, failure: Option<&str>) -> Metric {
        Metric {
            name: "error-rate".into(),
            success_condition: success.map(str::to_string),
            failure_condition: failure.map(str::to_string),
            ..Metric::default()
        }
    }

    #[test]
    fn a_failure_names_the_condition_that_held() {
        let o = judged(
            &metric(Some("result < 0.01"), Some("result >= 0.05")),
            Value::Number(0.2),
        );
        assert_eq!(o.phase, MeasurementPhase::Failed);
        assert_eq!(
            o.message.as_deref(),
            Some("met failureCondition `result >= 0.05`")
        );
        let o = judged(&metric(Some("result < 0.01"), None), Value::Number(0.02));
        assert_eq!(
            o.message.as_deref(),
            Some("did not meet successCondition `result < 0.01`")
        );
    }

    #[test]
    fn no_data_is_inconclusive_with_a_reason() {
        let o = judged(&metric(Some("result < 0.01"), None), Value::Empty);
        assert_eq!(o.phase, MeasurementPhase::Inconclusive);
        assert!(o.message.is_some_and(|m| m.contains("no data")));
    }

    #[test]
    fn policy_reads_durations_and_limits() {
        let m = Metric {
            interval: Some("1s".into()),
            initial_delay: Some("1m30s".into()),
            count: Some(6),
            failure_limit: Some(1),
            ..metric(None, None)
        };
        let p = policy_of(&m);
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.initial_delay, Duration::from_secs(90));
        assert_eq!(p.count, Some(6));
        assert_eq!(p.failure_limit, 1);
        assert_eq!(p.consecutive_error_limit, 4);
    }

    #[test]
    fn job_names_fit_pod_labels() {
        let n = job_name(&"x".repeat(80), "metric", 12);
        assert!(n.len() <= 63 && n.ends_with("-12"), "{n}");
    }
}
