//! `cargo xtask demo`: for now, a local cluster and its nodes. The demo issue grows it into
//! a full release with live traffic.

use anyhow::Context as _;
use clap::Args;
use cutover_local_cluster as local;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the cluster running afterwards.
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let name = "demo";
    let state = local::up(&local::UpOptions {
        name: name.to_string(),
        nodes: 1,
    })
    .await
    .context("starting the demo cluster")?;
    let status = std::process::Command::new(state.kubectl())
        .arg("--kubeconfig")
        .arg(&state.kubeconfig)
        .args(["get", "nodes", "-o", "wide"])
        .status()
        .context("running kubectl")?;
    if args.keep {
        println!(
            "cluster {name} keeps running; kubectl --kubeconfig {} get nodes; stop it with `cargo xtask cluster down --name {name}`",
            state.kubeconfig.display()
        );
    } else {
        local::down(name)?;
    }
    anyhow::ensure!(status.success(), "kubectl get nodes failed");
    Ok(())
}
