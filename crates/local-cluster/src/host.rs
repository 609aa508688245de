//! What a real node changes on the machine, recorded before it changes it and undone on
//! teardown: sysctls (the CNI bridge turns `ip_forward` on; kubelet sets `kernel.panic`,
//! `kernel.panic_on_oops` and `vm.overcommit_memory`), netfilter tables (the guard's,
//! kube-proxy's, kubelet's), the bridge and its Service route, host folders the components
//! create outside the state folder, cgroups, mounts and network namespaces.
//!
//! The network guard goes in before anything can forward: every forwarded packet leaving
//! through an interface other than loopback and the bridge is dropped (and counted), the
//! Service CIDR is routed to the bridge, and an audit chain counts (after the drop) any
//! packet from the pod subnet or to the Service CIDR that would still leave: that count must
//! stay 0.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext as _};

/// The bridge pods are attached to.
pub const BRIDGE: &str = "cutrn0";
/// The bridge's address: the node IP, the API server's and kubelet's bind address.
pub const BRIDGE_IP: &str = "10.250.0.1";
/// Pod addresses (host-local IPAM on the bridge); reachable only on this machine.
pub const POD_SUBNET: &str = "10.250.0.0/24";
/// The netfilter table (family `inet`) of the guard.
pub const GUARD_TABLE: &str = "cutover_guard";

/// Sysctls a real node may change, restored on teardown.
const SYSCTLS: &[&str] = &[
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

/// Host folders kubelet, containerd and libcni create whatever their configuration says;
/// removed on teardown when they did not exist before.
const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
];

/// Where `ip netns` and containerd's CRI pin network namespaces; other tools (the
/// process node) keep theirs there too, so only the CRI's (`cni-…`) are ours.
const NETNS_DIR: &str = "/var/run/netns";

/// cgroup folders kubelet creates under each hierarchy.
const CGROUPS: &[&str] = &["kubepods", "kubepods.slice"];

/// The machine as it was before the real node started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostSnapshot {
    /// `(name, value)` of each sysctl in [`SYSCTLS`] that exists.
    pub sysctls: Vec<(String, String)>,
    /// `family name` of each netfilter table.
    pub nft_tables: Vec<String>,
    /// The bridge and the pods' veths, if any (other interfaces are not ours to watch).
    pub links: Vec<String>,
    /// Which of [`HOST_PATHS`] existed.
    pub paths: Vec<String>,
    /// The CRI's network namespaces (`cni-…`) under /var/run/netns, and whether that
    /// folder existed.
    pub netns: Vec<String>,
    pub netns_dir: bool,
    /// cgroup folders of [`CGROUPS`] that existed.
    pub cgroups: Vec<String>,
}

/// Run a command; its stderr in the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            what: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// The value of sysctl `name`, if it exists.
pub fn sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|v| v.trim().to_string())
}

fn set_sysctl(name: &str, value: &str) -> Result<(), Error> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).at(&path)
}

/// `family name` of every netfilter table.
pub fn nft_tables() -> Vec<String> {
    run("nft", &["list", "tables"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// Names of the network interfaces.
pub fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn netns() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("cni-"))
        .collect()
}

/// The interfaces a real node makes: its bridge and the CNI plugin's veths.
fn node_links() -> Vec<String> {
    links()
        .into_iter()
        .filter(|l| l == BRIDGE || l.starts_with("veth"))
        .collect()
}

/// Every cgroup v1 hierarchy (and the unified one) mounted under /sys/fs/cgroup.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect();
    if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        roots.push(PathBuf::from("/sys/fs/cgroup"));
    }
    roots
}

fn cgroup_dirs() -> Vec<String> {
    cgroup_roots()
        .iter()
        .flat_map(|r| CGROUPS.iter().map(move |c| r.join(c)))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

impl HostSnapshot {
    /// The machine now.
    pub fn take() -> HostSnapshot {
        let mut s = HostSnapshot {
            sysctls: SYSCTLS
                .iter()
                .filter_map(|n| sysctl(n).map(|v| (n.to_string(), v)))
                .collect(),
            nft_tables: nft_tables(),
            links: node_links(),
            paths: HOST_PATHS
                .iter()
                .filter(|p| Path::new(p).exists())
                .map(|p| p.to_string())
                .collect(),
            netns: netns(),
            netns_dir: Path::new(NETNS_DIR).exists(),
            cgroups: cgroup_dirs(),
        };
        s.nft_tables.sort();
        s.links.sort();
        s.netns.sort();
        s
    }
}

/// Why this machine cannot run a real node, or None.
pub fn unsupported() -> Option<String> {
    if !crate::is_root() {
        return Some("it configures networking and cgroups, which needs root".into());
    }
    for (tool, package) in [
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
        ("nft", "nftables"),
        ("ip", "iproute2"),
    ] {
        if crate::which(tool).is_none() && !Path::new("/usr/sbin").join(tool).exists() {
            return Some(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    if !Path::new(crate::real_node::CNI_BIN).join("bridge").exists() {
        return Some(
            "the CNI plugins are missing (apt-get install containernetworking-plugins)".into(),
        );
    }
    None
}

/// The guard's rules: drop forwarded packets leaving through anything but loopback and the
/// bridge; drop the host's own packets to the Service CIDR that would not go to the bridge;
/// count, after both, whatever would still leave from the pod subnet or to the Services.
fn guard_ruleset() -> String {
    let keep = format!("{{ \"lo\", \"{BRIDGE}\" }}");
    let services = crate::components::SERVICE_CIDR;
    format!(
        "table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -300; policy accept;
    oifname != {keep} counter drop comment \"forwarded-off-machine\"
  }}
  chain output {{
    type filter hook output priority -300; policy accept;
    ip daddr {services} oifname != {keep} counter drop comment \"services-off-bridge\"
  }}
  chain audit {{
    type filter hook postrouting priority 300; policy accept;
    ip saddr {POD_SUBNET} oifname != {keep} counter comment \"left-from-pods\"
    ip daddr {services} oifname != {keep} counter comment \"left-to-services\"
  }}
}}
"
    )
}

/// Install the guard, then the bridge (with its address and the Service route). The caller
/// has recorded the [`HostSnapshot`] first.
pub fn install_network() -> Result<(), Error> {
    let rules = std::env::temp_dir().join(format!("cutover-guard-{}.nft", std::process::id()));
    std::fs::write(&rules, guard_ruleset()).at(&rules)?;
    let loaded = run("nft", &["-f", &rules.display().to_string()]);
    let _ = std::fs::remove_file(&rules);
    loaded?;
    if !links().iter().any(|l| l == BRIDGE) {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    }
    run(
        "ip",
        &["addr", "replace", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    run(
        "ip",
        &[
            "route",
            "replace",
            crate::components::SERVICE_CIDR,
            "dev",
            BRIDGE,
            "src",
            BRIDGE_IP,
        ],
    )?;
    Ok(())
}

/// The guard's counters by comment: `(packets)`.
pub fn guard_counters() -> Vec<(String, u64)> {
    let text = run("nft", &["list", "table", "inet", GUARD_TABLE]).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let packets = l
                .split_whitespace()
                .skip_while(|w| *w != "packets")
                .nth(1)?
                .parse()
                .ok()?;
            let comment = l.split("comment \"").nth(1)?.trim_end_matches('"');
            Some((comment.to_string(), packets))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Unmount everything at or below `dir` (a container's rootfs, a sandbox's /dev/shm).
pub fn unmount_below(dir: &Path) {
    for point in mounts_below(dir) {
        if let Err(e) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %point.display(), error = %e, "unmounting");
        }
    }
}

/// Undo what the real node changed, against the snapshot taken before it started. Best
/// effort: every step runs, failures are logged and the first one returned.
pub fn restore(before: &HostSnapshot) -> Result<(), Error> {
    let mut first: Option<Error> = None;
    let mut note = |r: Result<(), Error>| {
        if let Err(e) = r {
            tracing::warn!(error = %e, "restoring the host");
            first.get_or_insert(e);
        }
    };
    // Network namespaces the pods had (their veths go with them).
    for ns in netns() {
        if !before.netns.contains(&ns) {
            note(run("ip", &["netns", "delete", &ns]).map(drop));
        }
    }
    // Forwarding off before the guard goes: nothing may forward unguarded.
    for (name, value) in &before.sysctls {
        if sysctl(name).as_deref() != Some(value.as_str()) {
            note(set_sysctl(name, value));
        }
    }
    if links().iter().any(|l| l == BRIDGE) && !before.links.iter().any(|l| l == BRIDGE) {
        note(run("ip", &["link", "delete", BRIDGE]).map(drop));
    }
    // The guard table last.
    let mut added: Vec<String> = nft_tables()
        .into_iter()
        .filter(|t| !before.nft_tables.contains(t))
        .collect();
    added.sort_by_key(|t| t.ends_with(GUARD_TABLE));
    for table in added {
        let mut words = table.split_whitespace();
        if let (Some(family), Some(name)) = (words.next(), words.next()) {
            note(run("nft", &["delete", "table", family, name]).map(drop));
        }
    }
    for dir in cgroup_dirs() {
        if !before.cgroups.contains(&dir) {
            note(remove_cgroup_tree(Path::new(&dir)));
        }
    }
    for path in HOST_PATHS {
        let p = Path::new(path);
        if p.exists() && !before.paths.iter().any(|b| b == path) {
            unmount_below(p);
            note(std::fs::remove_dir_all(p).at(p));
        }
    }
    // Only if nobody else keeps a namespace there now.
    if !before.netns_dir {
        let _ = std::fs::remove_dir(NETNS_DIR);
    }
    first.map_or(Ok(()), Err)
}

/// Remove a cgroup folder and its children (cgroup folders are removed with rmdir, deepest
/// first; they must hold no process, which holds once every container is gone).
fn remove_cgroup_tree(dir: &Path) -> Result<(), Error> {
    let children: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for child in children {
        remove_cgroup_tree(&child)?;
    }
    std::fs::remove_dir(dir).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_drops_what_leaves_off_the_bridge_and_audits_after_the_drop() {
        let rules = guard_ruleset();
        assert!(rules.contains("hook forward priority -300"));
        assert!(rules.contains("oifname != { \"lo\", \"cutrn0\" } counter drop"));
        assert!(rules.contains("ip daddr 10.96.0.0/16"));
        assert!(rules.contains("hook postrouting priority 300"));
        assert!(rules.contains("ip saddr 10.250.0.0/24"));
    }
}
