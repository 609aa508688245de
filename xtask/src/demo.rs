//! `cargo xtask demo`: a local cluster and Cutover at work on it — a release to the idle
//! color, the switch, and an instant undo to the warm standby. (Live traffic through a
//! router arrives with the data-plane issue.)

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_api::{BlueGreenDeployment, Color, Phase};
use cutover_local_cluster as local;
use kube::api::{Api, Patch, PatchParams, PostParams};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the cluster and the controller running afterwards.
    #[arg(long)]
    pub keep: bool,
}

const CLUSTER: &str = "demo";

async fn wait_for(
    api: &Api<BlueGreenDeployment>,
    what: &str,
    color: Color,
) -> anyhow::Result<BlueGreenDeployment> {
    let started = Instant::now();
    loop {
        if let Some(b) = api.get_opt("shop").await? {
            let st = b.status.clone().unwrap_or_default();
            if st.phase == Some(Phase::Healthy) && st.active_color == Some(color) {
                eprintln!(
                    "  {what}: done in {:.1}s — {}",
                    started.elapsed().as_secs_f64(),
                    st.message.unwrap_or_default()
                );
                return Ok(b);
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{what}: not done after 120 s; see target/clusters/{CLUSTER}/logs/cutover-controller.log"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn kubectl(state: &local::ClusterState, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(state.kubectl())
        .arg("--kubeconfig")
        .arg(&state.kubeconfig)
        .args(args)
        .status()
        .context("running kubectl")?;
    anyhow::ensure!(status.success(), "kubectl {} failed", args.join(" "));
    Ok(())
}

fn image_patch(image: &str) -> Patch<serde_json::Value> {
    Patch::Merge(
        serde_json::json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": image }] } } } }),
    )
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    eprintln!("==> building cutover-controller");
    crate::test::cargo(&["build", "-p", "cutover-controller"], &[])?;
    let bin = local::workspace_root().join("target/debug/cutover-controller");
    eprintln!(
        "==> starting the local cluster `{CLUSTER}` (the first run builds Kubernetes: 10-30 min)"
    );
    let state = local::up(&local::UpOptions {
        name: CLUSTER.into(),
        nodes: 1,
        process_node: None,
    })
    .await
    .context("starting the demo cluster")?;
    let client = local::client_for(&state.kubeconfig).await?;
    cutover_test_support::controller::install_crds(&client).await;
    let log = local::state_dir(CLUSTER)
        .join("logs")
        .join("cutover-controller.log");
    let child = std::process::Command::new(&bin)
        .args([
            "--namespace",
            "default",
            "--http-addr",
            "127.0.0.1:0",
            "--identity",
            "demo",
        ])
        .env("KUBECONFIG", &state.kubeconfig)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting cutover-controller")?;
    let controller = crate::bench::KillOnDrop(child);
    eprintln!(
        "==> controller running (log: {}); watch along with:",
        log.display()
    );
    eprintln!(
        "    kubectl --kubeconfig {} get bgd,deploy,svc -w",
        state.kubeconfig.display()
    );

    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), "default");
    let _ = api.delete("shop", &Default::default()).await;
    let bgd: BlueGreenDeployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } },
            "service": { "port": 80, "targetPort": 8080 },
            "strategy": { "standby": { "mode": "Warm" } }
        }
    }))?;
    eprintln!("==> v1: a BlueGreenDeployment `shop` (3 replicas)");
    api.create(&PostParams::default(), &bgd).await?;
    wait_for(&api, "v1 live on blue", Color::Blue).await?;
    eprintln!(
        "==> v2: a new image goes to the idle color; traffic switches once all its pods are ready"
    );
    api.patch("shop", &PatchParams::default(), &image_patch("shop:2"))
        .await?;
    wait_for(&api, "v2 live on green, blue warm", Color::Green).await?;
    kubectl(&state, &["get", "bgd,deploy,svc", "-o", "wide"])?;
    eprintln!("==> undo: back to v1, which is the warm standby — no pod is created");
    api.patch("shop", &PatchParams::default(), &image_patch("shop:1"))
        .await?;
    wait_for(&api, "v1 live on blue again", Color::Blue).await?;
    kubectl(&state, &["get", "bgd", "shop"])?;
    if args.keep {
        std::mem::forget(controller);
        println!(
            "cluster `{CLUSTER}` and the controller keep running; kubectl --kubeconfig {} get bgd; stop with `cargo xtask cluster down --name {CLUSTER}` (and kill the cutover-controller process)",
            state.kubeconfig.display()
        );
    } else {
        drop(controller);
        local::down(CLUSTER)?;
        eprintln!("==> stopped everything the demo started");
    }
    Ok(())
}
