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

pub async fn run(args: TestArgs) -> anyhow::Result<()> {
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
