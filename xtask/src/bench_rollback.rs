//! `cargo xtask bench rollback`: how fast a bad new color is rolled back.
//!
//! A BlueGreenDeployment with post-promotion analysis (1 s interval) is released; once the
//! new color is live and measured healthy, its error ratio is flipped to 50 % on the metrics
//! endpoint a real Prometheus scrapes every second. Measured per run, from the flip:
//! - detection floor: until Prometheus itself returns the new value (baseline);
//! - rollback: until the live Service selects the old color again.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_api::analysis::AnalysisTemplate;
use cutover_api::{BlueGreenDeployment, COLOR_LABEL};
use cutover_local_cluster as local;
use cutover_test_support::prometheus::{MetricsEndpoint, Prometheus};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Number of rollbacks measured.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

use crate::bench::CLUSTER;
const NS: &str = "rollback";
const METRIC: &str = "app_error_ratio";

async fn until<F>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<Instant>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(Instant::now());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let (bin, state, client) = crate::bench::prepare(1).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(NS, &Default::default()).await;
    until(
        "the old namespace to go",
        Duration::from_secs(60),
        async || Ok(namespaces.get_opt(NS).await?.is_none()),
    )
    .await?;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    namespaces.create(&PostParams::default(), &ns).await?;

    let endpoint = MetricsEndpoint::start();
    for c in ["blue", "green"] {
        endpoint.set_gauge(METRIC, &[("color", c)], 0.0);
    }
    let prom = Prometheus::start(&[endpoint.addr()]).await;
    let log = local::state_dir(CLUSTER)
        .join("logs")
        .join("cutover-controller-rollback.log");
    let child = std::process::Command::new(&bin)
        .args([
            "--namespace",
            NS,
            "--http-addr",
            "127.0.0.1:0",
            "--identity",
            "bench",
        ])
        .env("KUBECONFIG", &state.kubeconfig)
        .env("RUST_LOG", "info,kube_client=warn")
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting cutover-controller")?;
    let child = crate::bench::kill_on_drop(child);

    let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), NS);
    let query = format!("max({METRIC}{{color=\"{{{{args.color}}}}\"}})");
    templates
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": { "name": "error-rate" },
                "spec": { "metrics": [{
                    "name": "error-rate", "interval": "1s", "count": 600,
                    "failureCondition": "result >= 0.05",
                    "provider": { "prometheus": { "address": prom.url(), "query": query } }
                }] }
            }))?,
        )
        .await?;
    let bgds: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), NS);
    let spec = |image: &str| {
        serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop" },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{ "name": "app", "image": image }] } },
                "service": { "port": 80 },
                "strategy": { "postPromotionAnalysis": { "templates": [{ "templateName": "error-rate" }] } }
            }
        })
    };
    bgds.create(
        &PostParams::default(),
        &serde_json::from_value(spec("shop:0"))?,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let live = async || -> anyhow::Result<Option<String>> {
        Ok(services
            .get_opt("shop")
            .await?
            .and_then(|s| s.spec?.selector?.get(COLOR_LABEL).cloned()))
    };
    until("the first rollout", Duration::from_secs(120), async || {
        Ok(live().await?.as_deref() == Some("blue"))
    })
    .await?;

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/query", prom.url());
    let sees = |color: &'static str, value: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move || -> anyhow::Result<bool> {
            let q = format!("max({METRIC}{{color=\"{color}\"}})");
            let body: serde_json::Value = http
                .get(&url)
                .query(&[("query", q.as_str())])
                .send()
                .await?
                .json()
                .await?;
            Ok(body
                .pointer("/data/result/0/value/1")
                .and_then(|v| v.as_str())
                == Some(value))
        }
    };
    let (mut floors, mut rollbacks) = (Vec::new(), Vec::new());
    for i in 1..=args.runs {
        let old = live().await?.unwrap_or_default();
        let new = if old == "blue" { "green" } else { "blue" };
        // A fresh color starts healthy: wait until Prometheus has scraped that.
        endpoint.set_gauge(METRIC, &[("color", new)], 0.0);
        until(
            "Prometheus to see the color healthy",
            Duration::from_secs(30),
            sees(new, "0"),
        )
        .await?;
        let patch = serde_json::json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": format!("shop:{i}") }] } } } });
        bgds.patch("shop", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        until("the new color live", Duration::from_secs(120), async || {
            Ok(live().await?.as_deref() == Some(new))
        })
        .await?;
        // Healthy first: post-promotion analysis has measured the new color at least once.
        until(
            "a healthy measurement",
            Duration::from_secs(60),
            async || {
                let runs: Api<cutover_api::analysis::AnalysisRun> =
                    Api::namespaced(client.clone(), NS);
                let name = format!("shop-{}-0-post", i + 1);
                Ok(runs
                    .get_opt(&name)
                    .await?
                    .and_then(|r| r.status)
                    .is_some_and(|s| s.metric_results.first().is_some_and(|m| m.successful >= 1)))
            },
        )
        .await?;
        let flip = Instant::now();
        endpoint.set_gauge(METRIC, &[("color", new)], 0.5);
        let seen = until(
            "Prometheus to see the errors",
            Duration::from_secs(30),
            sees(new, "0.5"),
        )
        .await?;
        let back = until("the rollback", Duration::from_secs(60), async || {
            Ok(live().await?.as_deref() == Some(old.as_str()))
        })
        .await?;
        let floor = seen.duration_since(flip).as_secs_f64();
        let rollback = back.duration_since(flip).as_secs_f64();
        eprintln!(
            "run {i}: {new} failing -> live back on {old} in {rollback:.2} s (Prometheus saw it after {floor:.2} s)"
        );
        floors.push(floor);
        rollbacks.push(rollback);
    }
    drop(child);
    floors.sort_by(f64::total_cmp);
    rollbacks.sort_by(f64::total_cmp);
    let median = |v: &[f64]| percentile(v, 0.5);
    println!();
    println!(
        "| {} rollbacks, 1 s scrape, 1 s analysis interval | median | p90 | min | max |",
        args.runs
    );
    println!("|---|---|---|---|---|");
    println!(
        "| baseline: flip → Prometheus returns the error ratio | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
        median(&floors),
        percentile(&floors, 0.9),
        floors[0],
        floors[floors.len() - 1]
    );
    println!(
        "| flip → live Service selects the old color | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
        median(&rollbacks),
        percentile(&rollbacks, 0.9),
        rollbacks[0],
        rollbacks[rollbacks.len() - 1]
    );
    println!(
        "| ratio rollback / baseline (medians) | {:.2} | | | |",
        median(&rollbacks) / median(&floors)
    );
    local::down(CLUSTER)?;
    Ok(())
}
