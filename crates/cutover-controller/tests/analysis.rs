//! Analysis against the real local control plane and a real Prometheus (Debian's package)
//! scraping a metrics endpoint the test controls, with the controller as a process.

mod common;

use std::time::Duration;

use common::*;
use cutover_api::analysis::{AnalysisPhase, AnalysisRun, AnalysisTemplate};
use cutover_api::{Color, Phase};
use cutover_test_support::controller::ControllerProcess;
use cutover_test_support::prometheus::{MetricsEndpoint, Prometheus};
use cutover_test_support::{TestNamespace, wait_for};
use kube::api::{Api, PostParams};

const ERRORS: &str = "app_error_ratio";

async fn template(ns: &TestNamespace, name: &str, metric: serde_json::Value) {
    let api: Api<AnalysisTemplate> = ns.api();
    let t: AnalysisTemplate = serde_json::from_value(serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": { "name": name },
        "spec": { "metrics": [metric] }
    }))
    .expect("valid AnalysisTemplate");
    api.create(&PostParams::default(), &t)
        .await
        .expect("create AnalysisTemplate");
}

fn error_rate(prometheus: &str, query: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::json!({
        "name": "error-rate",
        "interval": "1s",
        "count": 2,
        "successCondition": "result < 0.01",
        "failureCondition": "result >= 0.05",
        "provider": { "prometheus": { "address": prometheus, "query": query } }
    });
    if let (Some(m), serde_json::Value::Object(e)) = (m.as_object_mut(), extra) {
        m.extend(e);
    }
    m
}

/// The new color's error ratio, as the app would export it.
fn by_color() -> String {
    format!("max({ERRORS}{{color=\"{{{{args.color}}}}\"}})")
}

async fn runs(ns: &TestNamespace) -> Vec<AnalysisRun> {
    let api: Api<AnalysisRun> = ns.api();
    api.list(&Default::default())
        .await
        .expect("list runs")
        .items
}

fn pre(t: &str) -> serde_json::Value {
    serde_json::json!({ "strategy": { "prePromotionAnalysis": { "templates": [{ "templateName": t }] } } })
}

fn post(t: &str) -> serde_json::Value {
    serde_json::json!({ "strategy": { "postPromotionAnalysis": { "templates": [{ "templateName": t }] } } })
}

/// A metrics endpoint the test controls, exporting green's error ratio when `green` is
/// set, and a Prometheus scraping it.
async fn scraped_errors(green: Option<f64>) -> (MetricsEndpoint, Prometheus) {
    let endpoint = MetricsEndpoint::start();
    if let Some(ratio) = green {
        endpoint.set_gauge(ERRORS, &[("color", "green")], ratio);
    }
    let prom = Prometheus::start(&[endpoint.addr()]).await;
    (endpoint, prom)
}

/// A release under analysis: a namespace (`prefix`) with a controller, AnalysisTemplate
/// `template_name` of `metric`, BlueGreenDeployment `shop` with `replicas` and `extra_spec`
/// (which names the template) Healthy on blue, and its image then set to `shop:2`.
async fn release_under_analysis(
    prefix: &str,
    template_name: &str,
    metric: serde_json::Value,
    replicas: i32,
    extra_spec: serde_json::Value,
) -> (TestNamespace, ControllerProcess) {
    let (ns, ctrl) = setup(prefix).await;
    template(&ns, template_name, metric).await;
    create(&ns, &bgd("shop", "shop:1", replicas, extra_spec)).await;
    healthy_on(&ns, "shop", Color::Blue).await;
    set_image(&ns, "shop", "shop:2").await;
    (ns, ctrl)
}

#[tokio::test]
async fn a_healthy_new_color_passes_pre_promotion_analysis_and_is_promoted() {
    let (_endpoint, prom) = scraped_errors(Some(0.0)).await;
    let (ns, _ctrl) = release_under_analysis(
        "an-pass",
        "error-rate",
        error_rate(&prom.url(), &by_color(), serde_json::json!({})),
        2,
        pre("error-rate"),
    )
    .await;
    healthy_on(&ns, "shop", Color::Green).await;
    let runs = runs(&ns).await;
    assert_eq!(runs.len(), 1, "one pre-promotion run for revision 2");
    let st = runs[0].status.clone().expect("run status");
    assert_eq!(st.phase, Some(AnalysisPhase::Successful));
    let m = &st.metric_results[0];
    assert_eq!((m.count, m.successful), (2, 2));
    assert_eq!(m.measurements[0].value.as_deref(), Some("0"));
}

#[tokio::test]
async fn an_error_rate_above_the_failure_condition_aborts_and_traffic_stays_on_the_live_color() {
    let (_endpoint, prom) = scraped_errors(Some(0.2)).await;
    let (ns, _ctrl) = release_under_analysis(
        "an-fail",
        "error-rate",
        error_rate(&prom.url(), &by_color(), serde_json::json!({})),
        2,
        pre("error-rate"),
    )
    .await;
    let b = wait_bgd(&ns, "shop", "the release to abort", |b| {
        phase(b) == Some(Phase::Degraded)
    })
    .await;
    let msg = b
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("pre-promotion analysis failed"), "{msg}");
    assert!(
        msg.contains("error-rate") && msg.contains("0.2") && msg.contains("result >= 0.05"),
        "names the metric, value and condition: {msg}"
    );
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
    assert_eq!(active(&b), Some(Color::Blue));
    let events: Api<k8s_openapi::api::core::v1::Event> = ns.api();
    let aborted = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("Aborted"))
        .expect("an Aborted event");
    assert!(
        aborted
            .message
            .unwrap_or_default()
            .contains("result >= 0.05")
    );
}

#[tokio::test]
async fn a_query_with_no_data_pauses_the_release_as_inconclusive() {
    let (_endpoint, prom) = scraped_errors(None).await;
    let (ns, _ctrl) = release_under_analysis(
        "an-nodata",
        "error-rate",
        error_rate(
            &prom.url(),
            "max(metric_that_does_not_exist)",
            serde_json::json!({}),
        ),
        1,
        pre("error-rate"),
    )
    .await;
    let b = wait_bgd(&ns, "shop", "Paused as inconclusive", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    let msg = b
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(
        msg.contains("inconclusive") && msg.contains("no data"),
        "{msg}"
    );
    assert_eq!(
        selected(&ns, "shop").await.as_deref(),
        Some("blue"),
        "no data is never success"
    );
    assert_eq!(
        condition(&b, "Paused").map(|c| c.reason.as_str()),
        Some("AnalysisHeld")
    );
}

#[tokio::test]
async fn prometheus_down_counts_as_errors_and_traffic_does_not_move() {
    let (_endpoint, mut prom) = scraped_errors(Some(0.0)).await;
    let url = prom.url();
    prom.stop();
    let (ns, _ctrl) = release_under_analysis(
        "an-down",
        "error-rate",
        error_rate(
            &url,
            &by_color(),
            serde_json::json!({ "consecutiveErrorLimit": 1 }),
        ),
        1,
        pre("error-rate"),
    )
    .await;
    let b = wait_bgd(&ns, "shop", "Paused on provider errors", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    let msg = b
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("cannot measure"), "{msg}");
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
    let run = &runs(&ns).await[0];
    let st = run.status.clone().expect("status");
    assert_eq!(st.phase, Some(AnalysisPhase::Error));
    assert_eq!(
        st.metric_results[0].error, 2,
        "two errors in a row: one more than the limit"
    );
    assert_eq!(
        st.metric_results[0].successful, 0,
        "an error is never a success"
    );
}

#[tokio::test]
async fn a_failing_new_color_after_promotion_is_rolled_back_to_the_warm_color() {
    let (endpoint, prom) = scraped_errors(Some(0.0)).await;
    let (ns, _ctrl) = release_under_analysis(
        "an-post",
        "error-rate",
        error_rate(&prom.url(), &by_color(), serde_json::json!({ "count": 30 })),
        2,
        post("error-rate"),
    )
    .await;
    wait_bgd(
        &ns,
        "shop",
        "green live under post-promotion analysis",
        |b| {
            active(b) == Some(Color::Green)
                && b.status.as_ref().and_then(|s| s.release.as_ref()).is_some()
        },
    )
    .await;
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("green"));
    endpoint.set_gauge(ERRORS, &[("color", "green")], 0.5);
    let b = wait_bgd(&ns, "shop", "the rollback", |b| {
        active(b) == Some(Color::Blue) && phase(b) == Some(Phase::Degraded)
    })
    .await;
    assert_eq!(selected(&ns, "shop").await.as_deref(), Some("blue"));
    assert_eq!(
        condition(&b, "Degraded").map(|c| c.reason.as_str()),
        Some("RolledBack")
    );
    // It stays on blue: the failed revision is not released again by itself.
    let again = wait_bgd(&ns, "shop", "a settled status", |b| {
        b.status.as_ref().is_some_and(|s| s.abort)
    })
    .await;
    assert_eq!(active(&again), Some(Color::Blue));
}

/// An AnalysisRun made directly (the run reconciler does not need a release).
async fn direct_run(ns: &TestNamespace, name: &str, metric: serde_json::Value) -> AnalysisRun {
    let api: Api<AnalysisRun> = ns.api();
    let run: AnalysisRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": { "name": name },
        "spec": { "metrics": [metric] }
    }))
    .expect("valid AnalysisRun");
    api.create(&PostParams::default(), &run)
        .await
        .expect("create AnalysisRun");
    wait_for(
        &api,
        name,
        "the run to conclude",
        Duration::from_secs(60),
        |r: Option<&AnalysisRun>| {
            r.and_then(|r| r.status.as_ref())
                .and_then(|s| s.phase)
                .is_some_and(|p| p != AnalysisPhase::Running)
        },
    )
    .await
}

fn run_phase(r: &AnalysisRun) -> Option<AnalysisPhase> {
    r.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn the_web_provider_passes_on_a_good_answer_and_fails_on_a_bad_one() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json(
        "/ok",
        &serde_json::json!({ "status": "ok", "latency": 12.5 }),
    );
    endpoint.set_json("/bad", &serde_json::json!({ "status": "degraded" }));
    let (ns, _ctrl) = setup("an-web").await;
    let web = |path: &str| {
        serde_json::json!({
            "name": "health", "count": 1, "successCondition": "result == 'ok'",
            "provider": { "web": { "url": format!("{}{path}", endpoint.url()), "jsonPath": "$.status", "headers": [{ "key": "X-Check", "value": "cutover" }] } }
        })
    };
    let ok = direct_run(&ns, "web-ok", web("/ok")).await;
    assert_eq!(
        run_phase(&ok),
        Some(AnalysisPhase::Successful),
        "{:?}",
        ok.status
    );
    let bad = direct_run(&ns, "web-bad", web("/bad")).await;
    assert_eq!(
        run_phase(&bad),
        Some(AnalysisPhase::Failed),
        "{:?}",
        bad.status
    );
    let msg = bad.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("degraded") && msg.contains("successCondition"),
        "{msg}"
    );
    assert!(
        endpoint.requests().iter().any(|r| r
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-check") && v == "cutover")),
        "headers are sent"
    );
}

#[tokio::test]
async fn a_web_verdict_of_json_true_passes_a_release_whose_condition_is_result_equals_true() {
    // The acceptance run's reproduction: `{"ok": true}` at `$.ok` was recorded as the
    // string "true" and failed `result == true`, aborting a healthy release.
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json("/verdict.json", &serde_json::json!({ "ok": true }));
    let (ns, _ctrl) = release_under_analysis(
        "an-web-bool",
        "verdict",
        serde_json::json!({
            "name": "verdict", "count": 1, "successCondition": "result == true",
            "provider": { "web": { "url": format!("{}/verdict.json", endpoint.url()), "jsonPath": "$.ok" } }
        }),
        1,
        pre("verdict"),
    )
    .await;
    healthy_on(&ns, "shop", Color::Green).await;
    let runs = runs(&ns).await;
    assert_eq!(runs.len(), 1, "one pre-promotion run");
    let st = runs[0].status.clone().expect("run status");
    assert_eq!(st.phase, Some(AnalysisPhase::Successful), "{st:?}");
    assert_eq!(
        st.metric_results[0].measurements[0].value.as_deref(),
        Some("true"),
        "recorded as a boolean, not the string \"true\""
    );
}

#[tokio::test]
async fn web_json_values_keep_their_types_in_conditions() {
    let endpoint = MetricsEndpoint::start();
    endpoint.set_json(
        "/doc",
        &serde_json::json!({
            "ok": true, "broken": false, "ratio": 0.02, "count": 12, "status": "ok",
            "latencies": [12.5, 40], "db": { "connected": true, "lag": 0.3 },
            "checks": [{ "name": "a", "passed": true }, { "name": "b", "passed": true }],
            "nothing": null
        }),
    );
    let (ns, _ctrl) = setup("an-web-types").await;
    let url = format!("{}/doc", endpoint.url());
    let metric = |name: &str, path: &str, condition: &str| {
        serde_json::json!({
            "name": name, "count": 1, "successCondition": condition,
            "provider": { "web": { "url": url, "jsonPath": path } }
        })
    };
    // (JSONPath, a condition that holds for its JSON type, the recorded value)
    let cases = [
        ("$.ok", "result == true", "true"),
        ("$.broken", "result == false && !result", "false"),
        ("$.ratio", "result < 0.05", "0.02"),
        ("$.count", "result == 12", "12"),
        ("$.status", "result == 'ok'", "\"ok\""),
        (
            "$.latencies",
            "result.all(x, x < 100.0) && size(result) == 2",
            "[12.5, 40]",
        ),
        (
            "$.db",
            "result.connected == true && result.lag < 1.0",
            "{\"connected\": true, \"lag\": 0.3}",
        ),
        (
            "$.checks",
            "result.all(c, c.passed) && result[1].name == 'b'",
            "[{\"name\": \"a\", \"passed\": true}, {\"name\": \"b\", \"passed\": true}]",
        ),
        (
            "$.checks[*].passed",
            "result.all(p, p == true)",
            "[true, true]",
        ),
    ];
    for (i, (path, condition, value)) in cases.iter().enumerate() {
        let run = direct_run(&ns, &format!("type-{i}"), metric("m", path, condition)).await;
        let st = run.status.clone().expect("run status");
        assert_eq!(
            st.phase,
            Some(AnalysisPhase::Successful),
            "{path} with `{condition}`: {st:?}"
        );
        assert_eq!(
            st.metric_results[0].measurements[0].value.as_deref(),
            Some(*value),
            "{path}"
        );
    }
    // And the other way: a JSON false fails `result == true`, and JSON null is no data.
    let failed = direct_run(&ns, "type-false", metric("m", "$.broken", "result == true")).await;
    assert_eq!(
        run_phase(&failed),
        Some(AnalysisPhase::Failed),
        "{:?}",
        failed.status
    );
    let empty = direct_run(
        &ns,
        "type-null",
        serde_json::json!({
            "name": "m", "count": 1, "inconclusiveLimit": 0, "successCondition": "result == true",
            "provider": { "web": { "url": url, "jsonPath": "$.nothing" } }
        }),
    )
    .await;
    assert_eq!(
        run_phase(&empty),
        Some(AnalysisPhase::Inconclusive),
        "{:?}",
        empty.status
    );
}

#[tokio::test]
async fn the_job_provider_passes_when_the_job_succeeds_and_fails_when_it_fails() {
    let (ns, _ctrl) = setup("an-job").await;
    let job = |extra: serde_json::Value| {
        let mut pod = serde_json::json!({ "restartPolicy": "Never", "containers": [{ "name": "smoke", "image": "smoke:1" }] });
        if let (Some(p), serde_json::Value::Object(e)) = (pod.as_object_mut(), extra) {
            p.extend(e);
        }
        serde_json::json!({
            "name": "smoke", "count": 1,
            "provider": { "job": { "spec": { "backoffLimit": 0, "activeDeadlineSeconds": 5, "template": { "spec": pod } } } }
        })
    };
    // kwok runs the pod to completion: the Job succeeds.
    let ok = direct_run(&ns, "job-ok", job(serde_json::json!({}))).await;
    assert_eq!(
        run_phase(&ok),
        Some(AnalysisPhase::Successful),
        "{:?}",
        ok.status
    );
    // A pod that can never be scheduled: the Job fails at its deadline.
    let bad = direct_run(
        &ns,
        "job-bad",
        job(serde_json::json!({ "nodeSelector": { "no-such-node": "x" } })),
    )
    .await;
    assert_eq!(
        run_phase(&bad),
        Some(AnalysisPhase::Failed),
        "{:?}",
        bad.status
    );
}

#[tokio::test]
async fn compare_fails_a_shifted_latency_distribution_and_passes_an_unshifted_one() {
    let endpoint = std::sync::Arc::new(MetricsEndpoint::start());
    let prom = Prometheus::start(&[endpoint.addr()]).await;
    // Latency samples, a new value every 100 ms: blue and `same` green from one
    // distribution, `shifted` green 30 % slower.
    let feeder = endpoint.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let feed = tokio::spawn(async move {
        let mut seed: u64 = 42;
        let mut noise = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64 * 0.02
        };
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            feeder.set_gauge(
                "latency_seconds",
                &[("color", "blue"), ("case", "same")],
                0.100 + noise(),
            );
            feeder.set_gauge(
                "latency_seconds",
                &[("color", "green"), ("case", "same")],
                0.100 + noise(),
            );
            feeder.set_gauge(
                "latency_seconds",
                &[("color", "blue"), ("case", "shifted")],
                0.100 + noise(),
            );
            feeder.set_gauge(
                "latency_seconds",
                &[("color", "green"), ("case", "shifted")],
                0.130 + noise(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (ns, _ctrl) = setup("an-compare").await;
    // Wait (on Prometheus, not a clock) until each series holds enough scraped samples.
    prom.wait_for_value(
        r#"min(count_over_time(latency_seconds[20s]))"#,
        |n| n >= 12.0,
        Duration::from_secs(60),
    )
    .await;
    let compare = |case: &str| {
        serde_json::json!({
            "name": "latency", "count": 1,
            "provider": { "compare": {
                "address": prom.url(),
                "query": format!("latency_seconds{{case=\"{case}\",color=\"{{{{color}}}}\"}}"),
                "window": "20s", "step": "1s", "confidence": 0.95, "minSamples": 8
            } }
        })
    };
    let api: Api<AnalysisRun> = ns.api();
    for (name, case) in [("cmp-same", "same"), ("cmp-shifted", "shifted")] {
        let run: AnalysisRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": { "name": name },
            "spec": {
                "metrics": [compare(case)],
                "args": [{ "name": "liveColor", "value": "blue" }, { "name": "color", "value": "green" }]
            }
        }))
        .expect("valid");
        api.create(&PostParams::default(), &run)
            .await
            .expect("create run");
    }
    let done = |r: Option<&AnalysisRun>| {
        r.and_then(|r| r.status.as_ref())
            .and_then(|s| s.phase)
            .is_some_and(|p| p != AnalysisPhase::Running)
    };
    let same = wait_for(&api, "cmp-same", "the unshifted comparison", TIMEOUT, done).await;
    let shifted = wait_for(&api, "cmp-shifted", "the shifted comparison", TIMEOUT, done).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = feed.await;
    assert_eq!(
        run_phase(&same),
        Some(AnalysisPhase::Successful),
        "{:?}",
        same.status
    );
    assert_eq!(
        run_phase(&shifted),
        Some(AnalysisPhase::Failed),
        "{:?}",
        shifted.status
    );
    let value = shifted
        .status
        .as_ref()
        .and_then(|s| s.metric_results[0].measurements[0].value.clone())
        .unwrap_or_default();
    assert!(value.starts_with("p=0.0"), "a tiny p-value: {value}");
}
