//! `cargo xtask image [--load CLUSTER] [--debug]`: the project's OCI images, built with
//! buildah (no Docker engine), written to `target/images/`, optionally imported into a
//! local cluster's real node.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_local_cluster::{self as local, image};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Import the images into this local cluster's real node (`cluster up --real-node`).
    #[arg(long, value_name = "CLUSTER")]
    pub load: Option<String>,
    /// Use debug binaries (faster to build; what the tests run) instead of release ones.
    #[arg(long)]
    pub debug: bool,
}

/// Where images and their contexts go.
pub fn out_dir() -> PathBuf {
    local::workspace_root().join("target").join("images")
}

/// The commit the work tree is at, or "unknown".
fn revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(local::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Build the binaries, then every image; returns what was built.
pub fn build_all(debug: bool) -> anyhow::Result<Vec<image::BuiltImage>> {
    if let Some(why) = image::unsupported() {
        bail!("cannot build images: {why}");
    }
    let mut args = vec![
        "build",
        "--locked",
        "-p",
        "cutover-controller",
        "-p",
        "cutover-router",
        "-p",
        "cutover-demo-app",
    ];
    if !debug {
        args.push("--release");
    }
    crate::test::cargo(&args, &[])?;
    let profile = if debug { "debug" } else { "release" };
    let bins = local::workspace_root().join("target").join(profile);
    let specs = image::project_images(
        &bins,
        env!("CARGO_PKG_VERSION"),
        &revision(),
        env!("CARGO_PKG_REPOSITORY"),
    );
    let out = out_dir();
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    specs
        .iter()
        .map(|spec| {
            let started = Instant::now();
            let built = image::build(spec, &out, &local::workspace_root())
                .with_context(|| format!("building image {}", spec.name))?;
            let size = std::fs::metadata(&built.archive)
                .map(|m| m.len())
                .unwrap_or(0);
            eprintln!(
                "built {} in {:.1}s: {:.1} MiB archive",
                built.reference,
                started.elapsed().as_secs_f64(),
                size as f64 / 1048576.0
            );
            Ok(built)
        })
        .collect()
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let built = build_all(args.debug)?;
    if let Some(cluster) = &args.load {
        let dir = local::state_dir(cluster);
        let real = local::real_node::read_state(&dir)?.with_context(|| {
            format!("cluster {cluster} has no real node; start it with `cargo xtask cluster up --name {cluster} --real-node`")
        })?;
        let archives: Vec<PathBuf> = built.iter().map(|b| b.archive.clone()).collect();
        local::real_node::import_images(&real.containerd_socket, &archives)?;
        eprintln!("imported {} images into cluster {cluster}", archives.len());
    }
    for b in &built {
        println!("{} {} {}", b.reference, b.digest, b.archive.display());
    }
    Ok(())
}
