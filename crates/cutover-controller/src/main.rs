//! `cutover-controller`: flags and wiring only.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cutover_controller::run::{self, Settings, Shutdown};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-controller",
    version,
    about = "Cutover: blue-green deployments and disaster recovery for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CUTOVER_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "CUTOVER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "cutover-controller")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, or the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, or host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// The region this controller runs in: FailoverPolicies with `spec.coordination` act
    /// on their member of this region only.
    #[arg(long, env = "CUTOVER_REGION")]
    region: Option<String>,
    /// Reach the coordination etcd through these client URLs (comma-separated) instead of
    /// a policy's `spec.coordination.etcd.endpoints`: typically this region's own member,
    /// so that the controller is cut off from the quorum exactly when its region is.
    #[arg(long, env = "CUTOVER_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Log as JSON lines rather than text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every CRD as YAML.
    Crd,
}

fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        print!("{}", cutover_api::crds_yaml()?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init()
    } else {
        fmt.init()
    }

    let api_requests = cutover_controller::api_requests::ApiRequests::default();
    let client = api_requests.client(cutover_api::kube::Config::infer().await?)?;
    let settings = Settings {
        lease_namespace: cli
            .lease_namespace
            .or_else(|| cli.namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string()),
        namespace: cli.namespace,
        http_addr: cli.http_addr,
        lease_name: cli.lease_name,
        identity: cli.identity.unwrap_or_else(identity),
        lease_duration: Duration::from_secs(cli.lease_duration_seconds),
        api_requests,
        region: cli.region,
        etcd_endpoints: cli.etcd_endpoints,
    };
    run::run(client, settings, Shutdown::on_signals()).await
}
