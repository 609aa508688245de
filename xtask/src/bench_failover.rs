//! `cargo xtask bench failover`: runs the failover benchmark of the disaster-recovery
//! tests (`failover_benchmark` in `crates/cutover-controller/tests/disaster_recovery.rs`)
//! against the local test cluster and a second one it starts, and prints its figures.

use std::process::Command;

/// Arguments of `bench failover`.
#[derive(Debug, clap::Args)]
pub struct FailoverBenchArgs {
    /// Failovers to measure (each in a fresh world).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// The local cluster to run against (started if needed).
    #[arg(long, default_value = "bench-dr")]
    pub cluster: String,
}

pub fn run(args: &FailoverBenchArgs) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "cutover-controller",
            "--test",
            "disaster_recovery",
            "failover_benchmark",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .env("CUTOVER_TEST_CLUSTER", &args.cluster)
        .env("CUTOVER_BENCH_RUNS", args.runs.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "the failover benchmark failed");
    Ok(())
}
