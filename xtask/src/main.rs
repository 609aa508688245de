//! `cargo xtask` — developer tasks (the cargo-xtask pattern): no tools to install but cargo.

mod bench;
mod bench_real_node;
mod bench_rollback;
mod bench_router;
mod bench_test;
mod cluster;
mod demo;
mod generated;
mod image;
mod krew;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Cutover's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler, kwok) on 127.0.0.1, without Docker.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Everything CI runs: format check, clippy, generated-file drift, unit and integration
    /// tests against a local cluster.
    Test(test::TestArgs),
    /// The README's first command: a local cluster and Cutover at work on it.
    Demo(demo::DemoArgs),
    /// Write the generated files (CRD YAML under deploy/crds/).
    Generate,
    /// The kubectl plugin as krew installs it: a reproducible archive and the manifest
    /// with its sha256, under target/krew/.
    Krew(krew::KrewArgs),
    /// Print the path of a cached tool binary (built from its Go module if needed).
    ToolPath {
        /// helm or kubectl.
        #[arg(value_enum)]
        tool: Tool,
    },
    /// Build the OCI images (pause, controller, router, demo app) into target/images/ with
    /// buildah, reproducibly; `--load CLUSTER` imports them into a local real node.
    Image(image::ImageArgs),
    /// Benchmarks against a local cluster of their own.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Tool {
    /// helm (helm.sh/helm/v4), for the chart.
    Helm,
    /// kubectl of the local cluster's Kubernetes version.
    Kubectl,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Reconcile throughput and controller memory with many BlueGreenDeployments.
    Scale(bench::BenchArgs),
    /// Time from a failing new color to traffic back on the old one.
    Rollback(bench_rollback::RollbackArgs),
    /// cutover-router against direct access, nginx and HAProxy on the same backends.
    Router(bench_router::RouterBenchArgs),
    /// Failover: time from the primary's failure to the first answer from the standby.
    Failover(bench_test::TestBenchArgs),
    /// The regional mode: region losses (RTO, lost acknowledged writes) and twice as many
    /// partitions (self-fencing before promotion, moves, writes two primaries accepted).
    Dr(bench_test::TestBenchArgs),
    /// The live switch with colors in namespaces of their own against both at home.
    Environments(bench_test::TestBenchArgs),
    /// Adopting a Deployment (`spec.workloadRef`): its first color ready → the user's
    /// Service on it, against a plain release's switch in the same run.
    Adoption(bench_test::TestBenchArgs),
    /// Release latency of one BlueGreenDeployment on kwok pods against the real node's
    /// containers, in the same run.
    RealNode(bench_real_node::RealNodeBenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Cluster { command } => runtime.block_on(cluster::run(command)),
        Command::Test(args) => runtime.block_on(test::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Generate => generated::write(),
        Command::Image(args) => image::run(args),
        Command::Krew(args) => krew::run(args),
        Command::ToolPath { tool } => {
            let path = match tool {
                Tool::Helm => cutover_local_cluster::ensure_helm()?,
                Tool::Kubectl => cutover_local_cluster::ensure_binaries()?.get("kubectl"),
            };
            println!("{}", path.display());
            Ok(())
        }
        Command::Bench {
            which: BenchCommand::Scale(args),
        } => runtime.block_on(bench::run(args)),
        Command::Bench {
            which: BenchCommand::Rollback(args),
        } => runtime.block_on(bench_rollback::run(args)),
        Command::Bench {
            which: BenchCommand::Router(args),
        } => runtime.block_on(bench_router::run(args)),
        Command::Bench {
            which: BenchCommand::Failover(args),
        } => bench_test::run(&bench_test::FAILOVER, &args),
        Command::Bench {
            which: BenchCommand::Dr(args),
        } => bench_test::run(&bench_test::DR, &args),
        Command::Bench {
            which: BenchCommand::Environments(args),
        } => bench_test::run(&bench_test::ENVIRONMENTS, &args),
        Command::Bench {
            which: BenchCommand::Adoption(args),
        } => bench_test::run(&bench_test::ADOPTION, &args),
        Command::Bench {
            which: BenchCommand::RealNode(args),
        } => runtime.block_on(bench_real_node::run(args)),
    }
}
