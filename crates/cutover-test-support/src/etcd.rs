//! A real etcd cluster of several members on loopback, for the coordination tests: one
//! member per region, each of which can be frozen (`SIGSTOP`, as a partition looks to its
//! peers and clients), thawed or killed.
//!
//! The binary is the one the local control plane builds and caches
//! ([`cutover_local_cluster::ensure_binaries`]). Members listen on `127.0.0.1`, free ports
//! each ([`EtcdCluster::start`]), or each in its region's network namespace on the region's
//! address ([`EtcdCluster::start_in`]); their data and logs live in `<workspace>/target/test-etcd/<name>-<pid>/`, removed
//! when the [`EtcdCluster`] is dropped (every member killed first, also on a panic).
//! Heartbeats every 50 ms and an election timeout of 500 ms: a leader lost is replaced
//! within about a second.

use std::path::PathBuf;
use std::time::Duration;

use crate::e2e::free_ports;
use crate::netns::{self, Region};
use cutover_local_cluster::process::{self, Spawned};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    spawned: Option<Spawned>,
}

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
    kill(pid, sig).unwrap_or_else(|e| panic!("sending {sig} to etcd ({pid}): {e}"));
}

impl EtcdCluster {
    /// Starts `names.len()` members (named after the regions) and waits until the cluster
    /// has a leader and answers a linearizable read through every member.
    pub async fn start(test: &str, names: &[&str]) -> Self {
        let places: Vec<(&str, Option<&Region>)> = names.iter().map(|n| (*n, None)).collect();
        Self::start_on(test, &places).await
    }

    /// [`Self::start`] with one member in each of `regions`, named after it, listening on
    /// its address.
    pub async fn start_in(test: &str, regions: &[&Region]) -> Self {
        let places: Vec<(&str, Option<&Region>)> = regions
            .iter()
            .map(|r| (r.name.as_str(), Some(*r)))
            .collect();
        Self::start_on(test, &places).await
    }

    async fn start_on(test: &str, places: &[(&str, Option<&Region>)]) -> Self {
        let bins = cutover_local_cluster::ensure_binaries().expect("the etcd binary is built");
        let exe = bins.get("etcd");
        let dir = cutover_local_cluster::workspace_root()
            .join("target/test-etcd")
            .join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the etcd folder");
        let ports = free_ports(places.len() * 2);
        let peers: Vec<(String, String, String)> = places
            .iter()
            .zip(ports.chunks(2))
            .map(|((n, region), p)| {
                let ip = region.map_or_else(|| "127.0.0.1".to_string(), |r| r.addr.to_string());
                (
                    (*n).to_string(),
                    format!("http://{ip}:{}", p[0]),
                    format!("http://{ip}:{}", p[1]),
                )
            })
            .collect();
        let initial: Vec<String> = peers.iter().map(|(n, p, _)| format!("{n}={p}")).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for ((name, peer, client), (_, region)) in peers.iter().zip(places) {
            let args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", dir.join(name).display()),
                "--unsafe-no-fsync=true".to_string(),
                "--log-level=warn".to_string(),
                // Loopback has no round trip to speak of: elections in half a second, as
                // etcd's tuning guide scales them to the network (10 × its round trip).
                "--heartbeat-interval=50".to_string(),
                "--election-timeout=500".to_string(),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".to_string(),
                format!("--initial-cluster-token={test}"),
            ];
            let log = dir.join(format!("{name}.log"));
            let spawn = || process::spawn(&format!("etcd-{name}"), &exe, &args, &[], &log);
            let spawned = netns::within(*region, spawn).expect("starting etcd");
            members.push(Member {
                name: name.clone(),
                client_url: client.clone(),
                spawned: Some(spawned),
            });
        }
        let cluster = Self { dir, members };
        for i in 0..cluster.members.len() {
            cluster.wait_serving(i, Duration::from_secs(60)).await;
        }
        cluster
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url.clone()
    }

    /// Waits until member `i` serves a linearizable read (it is part of a quorum).
    pub async fn wait_serving(&self, i: usize, timeout: Duration) {
        let url = format!("{}/v3/kv/range", self.members[i].client_url);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ok = http
                .post(&url)
                .json(&serde_json::json!({"key": "Zm9v"}))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd member {} ({}) did not serve within {timeout:?}:\n{}",
                self.members[i].name,
                self.members[i].client_url,
                self.log_tail(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .spawned
            .as_ref()
            .expect("the member runs")
            .record
            .pid
    }

    /// Freezes member `i` (`SIGSTOP`): to its peers and clients it is cut off, as in a
    /// partition, while it keeps its state.
    pub fn freeze(&self, i: usize) {
        signal(self.pid(i), Signal::SIGSTOP);
    }

    /// Thaws member `i` (`SIGCONT`): the partition heals.
    pub fn thaw(&self, i: usize) {
        signal(self.pid(i), Signal::SIGCONT);
    }

    /// Kills member `i` (`SIGKILL`): its region is lost.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.members[i].spawned.take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        process::tail(&self.dir.join(format!("{}.log", self.members[i].name)), 20)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // SIGKILL ends frozen members too.
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
