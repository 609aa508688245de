//! Regions in network namespaces, for the regional disaster-recovery tests.
//!
//! A [`Fabric`] is a network namespace holding one Linux bridge, the "network between the
//! regions". Each [`Region`] is a network namespace of its own with one address
//! (`10.252.<block>.<2 + i>/24`) on a veth whose other end is a port of that bridge; the
//! host gets `10.252.<block>.1/24` on a veth into the same bridge, so the test (the
//! clients, the load generator) reaches every region directly. Nothing is routed or
//! forwarded at the IP layer: regions talk over the bridge (layer 2), so no
//! `ip_forward` is turned on anywhere, and a region namespace has no route but its own
//! subnet, so nothing started in it can reach anything off this machine. The bridge lives
//! in the fabric namespace, not on the host, so the host's netfilter rules (a real node's
//! guard) never see the regions' traffic.
//!
//! Faults, as a network has them:
//! - [`Fabric::cut`]: a netfilter drop (an `nft` table of the `bridge` family in the
//!   fabric namespace) of every frame between two regions' addresses, both ways — a
//!   partition, while both keep running and the host still reaches both;
//! - [`Fabric::set_link`]: a region's bridge port taken down or up — the region cut off
//!   from everything (a flapping link, a region out of reach).
//!
//! Processes are started in a region with [`Region::enter`] (or [`Region::spawn`]): a
//! thread that joins the namespace spawns them, and a child keeps the namespace it was
//! forked in; sockets created in [`Region::enter`] stay in the region whichever thread uses
//! them later.
//!
//! Everything is removed when the [`Fabric`] is dropped (deleting its namespace deletes the
//! veths and the bridge with it), and left-overs of an earlier run of the same block are
//! removed before a new one is made.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cutover_local_cluster::host;
use nix::sched::{CloneFlags, setns};

/// The netfilter table (family `bridge`, in the fabric namespace) of the cuts.
const CUT_TABLE: &str = "cutover_cuts";

/// A region: a network namespace with one address on the fabric.
#[derive(Debug, Clone)]
pub struct Region {
    /// The region's name (`east`, `west`, `witness`).
    pub name: String,
    /// Its address on the fabric.
    pub addr: Ipv4Addr,
    netns: String,
    file: Arc<File>,
}

impl Region {
    /// Its address as an [`IpAddr`].
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }

    /// `addr:port` in the region.
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(), port)
    }

    /// The network namespace's name (`ip netns`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `f` on a thread that has joined the region's network namespace: processes it
    /// spawns run in the region, sockets it creates belong to the region.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&*self.file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("joining network namespace {}: {e}", self.netns));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// Runs `f` in `region`'s network namespace (see [`Region::enter`]), or right here on the
/// host without one. A process spawned in `f` stays in the namespace it was spawned in.
pub fn within<T: Send>(region: Option<&Region>, f: impl FnOnce() -> T + Send) -> T {
    match region {
        Some(r) => r.enter(f),
        None => f(),
    }
}

/// The bridge between the regions, and the regions on it.
#[derive(Debug)]
pub struct Fabric {
    netns: String,
    host_link: String,
    /// The host's address on the fabric.
    pub host: Ipv4Addr,
    regions: Vec<Region>,
    cuts: Mutex<BTreeSet<(usize, usize)>>,
}

fn ip(args: &[&str]) {
    host::run("ip", args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

impl Fabric {
    /// Makes the fabric `cutdr<block>` and one region per name (`cutdr<block>-<name>`),
    /// on `10.252.<block>.0/24`.
    pub fn create(block: u8, names: &[&str]) -> Fabric {
        let netns = format!("cutdr{block}");
        let host_link = format!("cutdr{block}");
        let region_ns: Vec<String> = names.iter().map(|n| format!("{netns}-{n}")).collect();
        // Left-overs of an earlier run of this block (a killed test).
        for ns in region_ns.iter().chain([&netns]) {
            if netns_path(ns).exists() {
                let _ = host::run("ip", &["netns", "del", ns]);
            }
        }
        if Path::new("/sys/class/net").join(&host_link).exists() {
            let _ = host::run("ip", &["link", "del", &host_link]);
        }
        let host_ip = Ipv4Addr::new(10, 252, block, 1);
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "dev", "lo", "up"]);
        ip(&["-n", &netns, "link", "add", "name", "br0", "type", "bridge"]);
        ip(&["-n", &netns, "link", "set", "dev", "br0", "up"]);
        ip(&[
            "link", "add", "name", &host_link, "type", "veth", "peer", "name", "host", "netns",
            &netns,
        ]);
        ip(&[
            "-n", &netns, "link", "set", "dev", "host", "master", "br0", "up",
        ]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_link]);
        ip(&["link", "set", "dev", &host_link, "up"]);
        let mut regions = Vec::new();
        for (i, (name, ns)) in names.iter().zip(&region_ns).enumerate() {
            let addr = Ipv4Addr::new(10, 252, block, 2 + u8::try_from(i).expect("few regions"));
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"]);
            ip(&[
                "-n", &netns, "link", "add", "name", name, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            ip(&[
                "-n", &netns, "link", "set", "dev", name, "master", "br0", "up",
            ]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "dev", "eth0", "up"]);
            let file = File::open(netns_path(ns))
                .unwrap_or_else(|e| panic!("opening network namespace {ns}: {e}"));
            regions.push(Region {
                name: (*name).to_string(),
                addr,
                netns: ns.clone(),
                file: Arc::new(file),
            });
        }
        let fabric = Fabric {
            netns,
            host_link,
            host: host_ip,
            regions,
            cuts: Mutex::new(BTreeSet::new()),
        };
        fabric.write_cuts(&BTreeSet::new());
        fabric
    }

    /// Region `i`.
    pub fn region(&self, i: usize) -> &Region {
        &self.regions[i]
    }

    /// A folder of the fabric's own (its nft script, kubeconfig copies), removed with it.
    pub fn dir(&self) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cutover-{}", self.netns));
        std::fs::create_dir_all(&dir).expect("the fabric's folder");
        dir
    }

    /// Drops every frame between regions `a` and `b`, both ways (a partition).
    pub fn cut(&self, a: usize, b: usize) {
        let mut cuts = self.cuts.lock().expect("lock");
        cuts.insert((a.min(b), a.max(b)));
        self.write_cuts(&cuts);
    }

    /// Removes every cut (the partition heals).
    pub fn heal(&self) {
        let mut cuts = self.cuts.lock().expect("lock");
        cuts.clear();
        self.write_cuts(&cuts);
    }

    /// Takes region `i`'s link to the fabric down (`up` false) or brings it back up.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.netns,
            "link",
            "set",
            "dev",
            &self.regions[i].name,
            state,
        ]);
    }

    /// Replaces the cut table with one drop rule per direction of each cut pair, in one
    /// `nft` transaction.
    fn write_cuts(&self, cuts: &BTreeSet<(usize, usize)>) {
        let mut rules = String::new();
        for &(a, b) in cuts {
            let (a, b) = (self.regions[a].addr, self.regions[b].addr);
            rules.push_str(&format!(
                "    ip saddr {a} ip daddr {b} counter drop\n    ip saddr {b} ip daddr {a} counter drop\n"
            ));
        }
        let script = format!(
            "table bridge {CUT_TABLE}\ndelete table bridge {CUT_TABLE}\n\
             table bridge {CUT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        let file = self.dir().join("cuts.nft");
        std::fs::write(&file, script).expect("writing the nft script");
        let path = file.display().to_string();
        host::run("ip", &["netns", "exec", &self.netns, "nft", "-f", &path])
            .unwrap_or_else(|e| panic!("nft -f {path} in {}: {e}", self.netns));
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Deleting the fabric's namespace deletes the bridge and every veth in it, and
        // with each its peer (the host's link, the regions' eth0).
        for r in &self.regions {
            let _ = host::run("ip", &["netns", "del", &r.netns]);
        }
        let _ = host::run("ip", &["netns", "del", &self.netns]);
        if Path::new("/sys/class/net").join(&self.host_link).exists() {
            let _ = host::run("ip", &["link", "del", &self.host_link]);
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// A task aborted when dropped.
#[derive(Debug)]
pub struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP relay from `listener` (on a host address, or made in a region with [`listen`])
/// to `target`; it stops, and cuts its connections, when the returned task is dropped.
pub fn relay(listener: tokio::net::TcpListener, target: SocketAddr) -> Task {
    Task(tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}

/// A TCP listener on the host's `addr`, for tokio.
fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    l.set_nonblocking(true).expect("a non-blocking listener");
    tokio::net::TcpListener::from_std(l).expect("a tokio listener")
}

/// A copy of the kubeconfig at `kubeconfig` (written as `name` in the fabric's folder,
/// removed with it) for processes in the regions: its cluster's server is reached through
/// a relay on the host's fabric address (the API server listens on the host's loopback,
/// which a region cannot reach), and TLS still verifies the server's certificate for its
/// own address (`tls-server-name`). The relay runs until the returned task is dropped.
pub fn kubeconfig_for_regions(fabric: &Fabric, kubeconfig: &Path, name: &str) -> (PathBuf, Task) {
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let cluster = config
        .clusters
        .first_mut()
        .and_then(|c| c.cluster.as_mut())
        .unwrap_or_else(|| panic!("{} names no cluster", kubeconfig.display()));
    let server: reqwest::Url = cluster
        .server
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} has no server URL", kubeconfig.display()));
    let target_host = server.host_str().expect("a server host").to_string();
    let target = SocketAddr::new(
        target_host.parse().expect("the server is an IP address"),
        server.port_or_known_default().expect("a server port"),
    );
    let listener = listen(SocketAddr::new(IpAddr::V4(fabric.host), 0));
    let port = listener.local_addr().expect("the relay's address").port();
    let task = relay(listener, target);
    cluster.server = Some(format!("https://{}:{port}", fabric.host));
    cluster.tls_server_name = Some(target_host);
    let text = serde_yaml::to_string(&config).expect("a kubeconfig as YAML");
    let out = fabric.dir().join(name);
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    (out, task)
}
