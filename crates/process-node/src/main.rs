//! `cutover-process-node`: flags and wiring only. See `agent.rs`.

use std::path::PathBuf;

use clap::Parser;

mod agent;
mod container;
mod network;
mod probe;

#[derive(Debug, Parser)]
#[command(
    name = "cutover-process-node",
    about = "Run the pods of one Node as local processes (development only)"
)]
struct Args {
    /// Name of the Node to register.
    #[arg(long, default_value = "process-node-0")]
    node_name: String,
    /// Folder with the binaries images name (`cutover-demo-app:v1` runs `<bin-dir>/cutover-demo-app`).
    #[arg(long)]
    bin_dir: PathBuf,
    /// Where container logs go.
    #[arg(long)]
    log_dir: PathBuf,
    /// Third octet of the 10.244.x.y pod addresses: one block per node, so two nodes never clash.
    #[arg(long, default_value_t = 77)]
    ip_block: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    std::fs::create_dir_all(&args.log_dir)?;
    agent::run(
        client,
        agent::Config {
            node: args.node_name,
            bin_dir: args.bin_dir,
            log_dir: args.log_dir,
            ip_block: args.ip_block,
        },
    )
    .await
}
