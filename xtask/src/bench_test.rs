//! Benchmarks that live in the controller's integration tests as ignored tests, run here
//! against a local test cluster with their figures printed:
//! - `cargo xtask bench failover`: `failover_benchmark` in `disaster_recovery.rs` (it
//!   starts a second cluster of its own);
//! - `cargo xtask bench dr`: `regions_benchmark` in `disaster_recovery.rs` (region losses
//!   and partitions of the regional mode, a fresh world each);
//! - `cargo xtask bench environments`: `switch_latency_benchmark` and
//!   `remote_pod_change_benchmark` in `environments.rs` (the second starts a second
//!   cluster of its own);
//! - `cargo xtask bench adoption`: `adoption_switch_benchmark` in `workload.rs`.

use std::process::Command;

/// Arguments of a benchmark run from a test.
#[derive(Debug, clap::Args)]
pub struct TestBenchArgs {
    /// Runs to measure.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// The local cluster to run against (started if needed; default `bench-<benchmark>`).
    #[arg(long)]
    pub cluster: Option<String>,
}

/// A benchmark test: its test file (target), its name, and its short name.
pub struct TestBench {
    pub target: &'static str,
    pub test: &'static str,
    pub name: &'static str,
}

/// The failover benchmark.
pub const FAILOVER: TestBench = TestBench {
    target: "disaster_recovery",
    test: "failover_benchmark",
    name: "dr",
};

/// The regional mode's region losses and partitions.
pub const DR: TestBench = TestBench {
    target: "disaster_recovery",
    test: "regions_benchmark",
    name: "regions",
};

/// The benchmarks of colors away from home: the live switch with colors in namespaces of
/// their own, and a pod change in a second cluster reaching the mirror at home (the
/// test-name filter `_benchmark` runs both).
pub const ENVIRONMENTS: TestBench = TestBench {
    target: "environments",
    test: "_benchmark",
    name: "environments",
};

/// The adoption switch of a Deployment against a plain release's switch.
pub const ADOPTION: TestBench = TestBench {
    target: "workload",
    test: "adoption_switch_benchmark",
    name: "adoption",
};

pub fn run(bench: &TestBench, args: &TestBenchArgs) -> anyhow::Result<()> {
    let cluster = args
        .cluster
        .clone()
        .unwrap_or_else(|| format!("bench-{}", bench.name));
    crate::test::ensure_protoc()?;
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "cutover-controller",
            "--test",
            bench.target,
            bench.test,
            "--",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("CUTOVER_TEST_CLUSTER", &cluster)
        .env("CUTOVER_BENCH_RUNS", args.runs.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "the {} benchmark failed", bench.test);
    Ok(())
}
