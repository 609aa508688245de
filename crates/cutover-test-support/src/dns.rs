//! Real DNS for the regional tests: CoreDNS (built from its Go module and cached, see
//! [`cutover_local_cluster::ensure_coredns`]) answering for a zone from the records in an
//! etcd member (its etcd plugin), and a stub resolver that asks several such servers in
//! turn and honours the records' TTLs.
//!
//! Each server listens on `127.0.0.1` (UDP and TCP, one free port), or on its region's
//! address inside the region's network namespace ([`CoreDns::start_in`]), and knows only its
//! zone: it forwards nothing, so no query for a made-up name leaves the machine. Its log is
//! in `<workspace>/target/test-dns/<name>-<pid>/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use cutover_local_cluster::process::{self, Spawned};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

use crate::e2e::free_port;
use crate::netns::{self, Region};

/// A running CoreDNS.
#[derive(Debug)]
pub struct CoreDns {
    /// Where it answers.
    pub addr: SocketAddr,
    dir: PathBuf,
    spawned: Option<Spawned>,
}

impl CoreDns {
    /// Start CoreDNS `name` answering for `zone` from the records under `path` in the etcd
    /// member at `etcd` (read with linearizable reads: without a quorum it answers
    /// SERVFAIL), and wait until it answers.
    pub async fn start(name: &str, zone: &str, path: &str, etcd: &str) -> Self {
        Self::start_in(name, zone, path, etcd, None).await
    }

    /// [`Self::start`] in `region` (on its address), or on the host's loopback (`None`).
    pub async fn start_in(
        name: &str,
        zone: &str,
        path: &str,
        etcd: &str,
        region: Option<&Region>,
    ) -> Self {
        let exe = cutover_local_cluster::ensure_coredns().expect("CoreDNS is built");
        let dir = cutover_local_cluster::workspace_root()
            .join("target/test-dns")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the DNS folder");
        let port = free_port();
        let ip = region.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), Region::ip);
        let corefile = format!(
            "{zone}:{port} {{\n  bind {ip}\n  etcd {{\n    path {path}\n    endpoint {etcd}\n  }}\n  errors\n}}\n"
        );
        let file = dir.join("Corefile");
        std::fs::write(&file, corefile).expect("writing the Corefile");
        let args = vec!["-conf".to_string(), file.display().to_string()];
        let log = dir.join("coredns.log");
        let spawn = || process::spawn(&format!("coredns-{name}"), &exe, &args, &[], &log);
        let spawned = netns::within(region, spawn).expect("starting CoreDNS");
        let dns = Self {
            addr: SocketAddr::new(ip, port),
            dir,
            spawned: Some(spawned),
        };
        dns.wait_listening(Duration::from_secs(30)).await;
        dns
    }

    async fn wait_listening(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "CoreDNS did not listen on {} within {timeout:?}:\n{}",
                self.addr,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        process::tail(&self.dir.join("coredns.log"), 30)
    }

    /// Kill it (a region lost).
    pub fn kill(&mut self) {
        if let Some(mut s) = self.spawned.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

impl Drop for CoreDns {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stub resolver as a client with several `nameserver` lines has (glibc's, without
/// `rotate`): each lookup asks the servers in the order given, the next one when one does
/// not answer within `timeout` or fails, and an answer is kept for its TTL (per server, as
/// each server's answers are cached by hickory's resolver). Nothing of the machine's
/// resolver configuration is used.
#[derive(Clone)]
pub struct StubResolver {
    servers: Vec<TokioResolver>,
}

impl std::fmt::Debug for StubResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubResolver")
            .field("servers", &self.servers.len())
            .finish()
    }
}

/// A [`StubResolver`] over `servers`, each given `timeout`.
pub fn resolver_with(servers: &[SocketAddr], timeout: Duration) -> StubResolver {
    StubResolver {
        servers: servers.iter().map(|s| one_server(*s, timeout)).collect(),
    }
}

/// A [`StubResolver`] over `servers`, each given 300 ms.
pub fn resolver(servers: &[SocketAddr]) -> StubResolver {
    resolver_with(servers, Duration::from_millis(300))
}

fn one_server(server: SocketAddr, timeout: Duration) -> TokioResolver {
    let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
    let mut udp = ConnectionConfig::udp();
    udp.port = server.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = server.port();
    config.add_name_server(NameServerConfig::new(server.ip(), true, vec![udp, tcp]));
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.num_concurrent_reqs = 1;
    opts.positive_min_ttl = None;
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.ndots = 0;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .expect("a resolver")
}

/// The IPv4 addresses `name` resolves to (sorted), or why not (every server's error).
pub async fn a_records(resolver: &StubResolver, name: &str) -> Result<Vec<String>, String> {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let mut errors = Vec::new();
    for (i, r) in resolver.servers.iter().enumerate() {
        match r.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut out: Vec<String> = lookup
                    .iter()
                    .filter(IpAddr::is_ipv4)
                    .map(|a| a.to_string())
                    .collect();
                out.sort();
                return Ok(out);
            }
            Err(e) => errors.push(format!("server {i}: {e}")),
        }
    }
    Err(errors.join("; "))
}
