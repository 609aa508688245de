//! `cargo xtask bench real-node [--runs N]`: the release latency of the same
//! BlueGreenDeployment (2 replicas, switch at once) on kwok pods and on the real node's
//! containers, alternating, in one cluster with one controller: time from the spec change
//! to Healthy on the other color. Prints each side's median and the ratio real / kwok.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_api::{BlueGreenDeployment, Phase};
use cutover_local_cluster as local;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::bench::kill_on_drop;

#[derive(Debug, Args)]
pub struct RealNodeBenchArgs {
    /// Releases measured on each side.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

const CLUSTER: &str = "bench-real";
const NS: &str = "default";

/// The BlueGreenDeployment `name`, on the kwok node or on the real node.
fn bgd(name: &str, real: bool) -> serde_json::Value {
    let mut pod = cutover_test_support::e2e::real_node_demo_pod_spec("v0");
    if !real {
        pod["nodeSelector"] = json!({ "type": "kwok" });
    }
    json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": pod },
            "service": { "port": 80, "targetPort": 8080 }
        }
    })
}

fn settled(b: &BlueGreenDeployment, generation: Option<i64>) -> Option<String> {
    let st = b.status.as_ref()?;
    let color = st.active_color?;
    (st.phase == Some(Phase::Healthy) && st.observed_generation >= generation)
        .then(|| format!("{color:?}"))
}

async fn wait_healthy(api: &Api<BlueGreenDeployment>, name: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let b = api.get(name).await?;
        if let Some(color) = settled(&b, b.metadata.generation) {
            return Ok(color);
        }
        if Instant::now() > deadline {
            bail!("{name} did not become Healthy: {:?}", b.status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One release of `name` to `version`: seconds from the patch to Healthy on the other color.
async fn release(api: &Api<BlueGreenDeployment>, name: &str, version: &str) -> anyhow::Result<f64> {
    let before = wait_healthy(api, name).await?;
    let started = Instant::now();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "template": { "spec": { "containers": [
            cutover_test_support::e2e::real_node_demo_pod_spec(version)["containers"][0].clone()
        ] } } } })),
    )
    .await?;
    loop {
        let color = wait_healthy(api, name).await?;
        if color != before {
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(args: RealNodeBenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let state = local::up(&local::UpOptions {
        name: CLUSTER.into(),
        nodes: 1,
        process_node: None,
        real_node: Some(crate::cluster::real_node_options(true)?),
    })
    .await
    .context("starting the bench cluster")?;
    let result = measure(&args, &state.kubeconfig).await;
    local::down(CLUSTER)?;
    result
}

async fn measure(args: &RealNodeBenchArgs, kubeconfig: &Path) -> anyhow::Result<()> {
    let client = local::client_for(kubeconfig).await?;
    cutover_test_support::controller::install_crds(&client).await;
    let bin = local::workspace_root().join("target/debug/cutover-controller");
    let _controller = kill_on_drop(
        std::process::Command::new(&bin)
            .args([
                "--namespace",
                NS,
                "--http-addr",
                "127.0.0.1:0",
                "--identity",
                "bench",
            ])
            .env("KUBECONFIG", kubeconfig)
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let api: Api<BlueGreenDeployment> = Api::namespaced(client, NS);
    for (name, real) in [("on-kwok", false), ("on-real", true)] {
        let b: BlueGreenDeployment = serde_json::from_value(bgd(name, real))?;
        api.create(&PostParams::default(), &b).await?;
        wait_healthy(&api, name).await?;
    }
    let (mut kwok, mut real) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let version = format!("v{}", i + 1);
        kwok.push(release(&api, "on-kwok", &version).await?);
        real.push(release(&api, "on-real", &version).await?);
        eprintln!(
            "run {}: kwok {:.2}s, real node {:.2}s",
            i + 1,
            kwok[i],
            real[i]
        );
    }
    let (k, r) = (median(&mut kwok), median(&mut real));
    println!(
        "release latency, spec change → Healthy on the new color (2 replicas, median of {}):",
        args.runs
    );
    println!("  kwok pods            {k:.2} s");
    println!("  real node containers {r:.2} s");
    println!("  ratio real / kwok    {:.2}", r / k);
    Ok(())
}
