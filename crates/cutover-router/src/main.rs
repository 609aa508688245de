//! `cutover-router`: flags and wiring only. See the library's modules.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cutover_router::{CONTROLLER_NAME, admin, metrics::Metrics, proxy::Proxy, watch};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-router",
    version,
    about = "An HTTP data plane for Gateway API Gateways of class cutover.dev/router"
)]
struct Cli {
    /// Address the Gateways' listeners bind (their ports come from the Gateways).
    #[arg(long, env = "CUTOVER_ROUTER_LISTEN", default_value = "127.0.0.1")]
    listen: IpAddr,
    /// Address of /metrics, /healthz and /debug/routes.
    #[arg(
        long,
        env = "CUTOVER_ROUTER_ADMIN_ADDR",
        default_value = "127.0.0.1:9091"
    )]
    admin_addr: SocketAddr,
    /// Address reported in Gateway status (default: the listen address unless unspecified).
    #[arg(long, env = "CUTOVER_ROUTER_ADDRESS")]
    address: Option<IpAddr>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "CUTOVER_NAMESPACE")]
    namespace: Option<String>,
    /// The controllerName of the GatewayClasses served.
    #[arg(long, default_value = CONTROLLER_NAME)]
    controller_name: String,
    /// Worker threads serving the listeners (default: one per CPU).
    #[arg(long, env = "CUTOVER_ROUTER_THREADS")]
    threads: Option<usize>,
    /// Seconds requests in flight get to finish on SIGTERM.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_seconds: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let threads = cli
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let proxy = Proxy::new(cli.listen, metrics, threads)?;
    let admin = tokio::net::TcpListener::bind(cli.admin_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} for /metrics (--admin-addr): {e}",
                cli.admin_addr
            )
        })?;
    tracing::info!(addr = %admin.local_addr()?, "admin endpoints");
    let settings = watch::Settings {
        controller_name: cli.controller_name,
        namespace: cli.namespace,
        address: cli
            .address
            .or((!cli.listen.is_unspecified()).then_some(cli.listen)),
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = watch::run(client, proxy.clone(), settings) => r,
        r = admin::serve(admin, Arc::new(registry), proxy.clone()) => r.map_err(Into::into),
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    proxy
        .shutdown(Duration::from_secs(cli.shutdown_grace_seconds))
        .await;
    result
}
