//! `cargo xtask cluster up|down|kubeconfig|list`.

use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cutover_local_cluster as local;

#[derive(Debug, Args)]
pub struct NameArg {
    /// Cluster name; its state lives under target/clusters/NAME/.
    #[arg(long, default_value = local::DEFAULT_NAME)]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start the cluster (building the components the first time) and wait until its nodes
    /// are Ready. Prints the kubeconfig path as the last line of stdout.
    Up {
        #[command(flatten)]
        name: NameArg,
        /// Number of kwok fake nodes.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Do not start the process-backed node (`process-node-0`, which runs pods that
        /// tolerate `cutover.dev/process-node` as local processes; needs root).
        #[arg(long)]
        no_process_node: bool,
        /// Also start a real node, `real-0`: containerd, kubelet and kube-proxy running
        /// real containers of locally built images (needs root; installs nothing: run
        /// `cargo xtask test` once, or apt-get install containerd runc
        /// containernetworking-plugins nftables buildah).
        #[arg(long)]
        real_node: bool,
    },
    /// Stop every process the cluster started and remove its state.
    Down {
        #[command(flatten)]
        name: NameArg,
    },
    /// Print the kubeconfig path of a running cluster.
    Kubeconfig {
        #[command(flatten)]
        name: NameArg,
    },
    /// List the clusters that have state under target/clusters/.
    List,
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Up {
            name,
            nodes,
            no_process_node,
            real_node,
        } => {
            let started = Instant::now();
            let process_node = if no_process_node {
                None
            } else {
                process_node_binaries()?
            };
            let real_node = if real_node {
                Some(real_node_options(false)?)
            } else {
                None
            };
            let state = local::up(&local::UpOptions {
                name: name.name.clone(),
                nodes,
                process_node,
                real_node,
            })
            .await
            .with_context(|| format!("starting cluster {}", name.name))?;
            eprintln!(
                "cluster {} is up ({} node(s) Ready) in {:.1}s; kubectl: {}",
                state.name,
                state.nodes.len(),
                started.elapsed().as_secs_f64(),
                state.kubectl().display()
            );
            println!("{}", state.kubeconfig.display());
        }
        ClusterCommand::Down { name } => {
            if local::down(&name.name)? {
                eprintln!("cluster {} stopped and removed", name.name);
            } else {
                eprintln!("cluster {} was not running", name.name);
            }
        }
        ClusterCommand::Kubeconfig { name } => {
            let state = local::read_state(&name.name)?.with_context(|| {
                format!(
                    "cluster {0} is not running; start it with `cargo xtask cluster up --name {0}`",
                    name.name
                )
            })?;
            println!("{}", state.kubeconfig.display());
        }
        ClusterCommand::List => {
            for name in local::list() {
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// kubelet and kube-proxy (built once, cached) and the images the node starts with: the
/// pause image every pod sandbox runs, or with `all_images` every image of the project
/// (`cargo xtask image --debug`).
pub fn real_node_options(all_images: bool) -> anyhow::Result<local::RealNodeOptions> {
    if let Some(why) = local::host::unsupported() {
        anyhow::bail!("cannot start a real node: {why}");
    }
    let bin_dir = local::ensure_node_binaries()?;
    let images = if all_images {
        crate::image::build_all(true)?
            .into_iter()
            .map(|b| b.archive)
            .collect()
    } else {
        let out = crate::image::out_dir();
        std::fs::create_dir_all(&out)?;
        let pause =
            local::image::pause_image(env!("CARGO_PKG_VERSION"), "", env!("CARGO_PKG_REPOSITORY"));
        vec![local::image::build(&pause, &out, &local::workspace_root())?.archive]
    };
    Ok(local::RealNodeOptions { bin_dir, images })
}

/// Build the process node and the binaries its pods run (the demo app, the router), and
/// return their folder; None, with a warning, when this machine cannot run it.
pub fn process_node_binaries() -> anyhow::Result<Option<std::path::PathBuf>> {
    if let Some(why) = local::process_node_unsupported() {
        eprintln!("warning: no process-backed node: {why}; pods will only run on kwok nodes");
        return Ok(None);
    }
    eprintln!("==> building cutover-process-node, cutover-demo-app and cutover-router");
    crate::test::cargo(
        &[
            "build",
            "-p",
            "cutover-process-node",
            "-p",
            "cutover-demo-app",
            "-p",
            "cutover-router",
        ],
        &[],
    )?;
    Ok(Some(local::workspace_root().join("target").join("debug")))
}
