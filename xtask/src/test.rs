//! `cargo xtask test`: the README's test command and what CI runs.

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_local_cluster as local;

/// The local cluster the integration tests use.
const TEST_CLUSTER: &str = "test";

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Leave the test cluster running afterwards (faster re-runs).
    #[arg(long)]
    pub keep_cluster: bool,
    /// Skip the format and clippy checks.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments passed to `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Run cargo (the one that runs xtask) in the workspace root.
pub fn cargo(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    ensure_protoc()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(local::workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// What the tests run, by the command that shows it is there and the Debian package that
/// brings it: a real Prometheus, PostgreSQL, iproute2 (process-node pods), tmux (the CLI as
/// a person sees it), and for the real node containerd, runc, the CNI plugins, nftables,
/// buildah (images), a static busybox (the guard test's pods), gcc and libc6-dev (the pause
/// image), Lua 5.4 (the Argo CD health checks) and protoc (the controller's build).
const PACKAGES: &[(&str, &str)] = &[
    ("prometheus", "prometheus"),
    ("/usr/lib/postgresql", "postgresql"),
    ("ip", "iproute2"),
    ("tmux", "tmux"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("nft", "nftables"),
    ("buildah", "buildah"),
    ("/bin/busybox", "busybox-static"),
    ("cc", "gcc"),
    ("lua5.4", "lua5.4"),
    ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
    PROTOC[0],
    PROTOC[1],
];

/// The controller's build needs `protoc` and protobuf's well-known types (etcd-client
/// compiles etcd's protobuf files).
const PROTOC: [(&str, &str); 2] = [
    ("protoc", "protobuf-compiler"),
    (
        "/usr/include/google/protobuf/descriptor.proto",
        "libprotobuf-dev",
    ),
];

/// Install `protoc` with apt if it is missing: every build of the workspace needs it.
pub fn ensure_protoc() -> anyhow::Result<()> {
    install_missing(&PROTOC, "building the controller needs protoc")
}

/// Install with apt the packages of `wanted` whose command or file is not there, saying
/// `why`.
fn install_missing(wanted: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(what, _)| !present(what))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> {why}: installing with apt-get: {}", missing.join(" "));
    apt_install(&missing)
}

fn present(what: &str) -> bool {
    if what.starts_with('/') {
        return std::path::Path::new(what).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|p| p.join(what).is_file())
    })
}

/// Install with apt whatever of [`PACKAGES`] is missing (the tests' machines are Debian,
/// and the tests run as root).
pub fn install_packages() -> anyhow::Result<()> {
    install_missing(PACKAGES, "what the tests need")
}

/// `apt-get update` and `apt-get install` of `packages`.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (the tests need root on Debian)")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(packages);
    apt(&install)
}

pub async fn run(args: TestArgs) -> anyhow::Result<()> {
    install_packages()?;
    if !args.no_lint {
        cargo(&["fmt", "--all", "--", "--check"], &[])?;
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    }
    crate::generated::check()?;
    eprintln!("==> starting local cluster {TEST_CLUSTER}");
    let state = local::up(&local::UpOptions {
        name: TEST_CLUSTER.to_string(),
        nodes: 2,
        process_node: None,
        real_node: None,
    })
    .await
    .context("starting the test cluster")?;
    let mut test_args = vec!["test", "--workspace", "--locked"];
    if !args.cargo_test_args.is_empty() {
        test_args.push("--");
        test_args.extend(args.cargo_test_args.iter().map(String::as_str));
    }
    let result = cargo(&test_args, &[("CUTOVER_TEST_CLUSTER", TEST_CLUSTER)]);
    if !args.keep_cluster {
        local::down(&state.name)?;
    }
    result
}
