//! Pod networking for the process node: a bridge `cutbr<block>` holding 10.244.<block>.1/24
//! in the host's namespace, and per pod a network namespace `cutover-<block>-<n>` joined to
//! it by a veth pair, with 10.244.<block>.<n> on its `eth0`. Every pod gets an address the
//! API server accepts in EndpointSlices (it rejects loopback addresses), every pod can use
//! the same container port, and all of it is reachable only from this machine.
//!
//! Everything is done with iproute2's `ip`, so the agent needs CAP_NET_ADMIN (root).

use std::collections::BTreeSet;
use std::process::Command;

/// Name prefix of the namespaces of one block.
fn prefix(block: u8) -> String {
    format!("cutover-{block}-")
}

/// The pod network of one node.
#[derive(Debug)]
pub struct Network {
    block: u8,
    free: BTreeSet<u8>,
    /// The last address index handed out: the next pod gets the next free one after it
    /// (round robin, as the host-local IPAM of CNI does), so that an address just freed
    /// is not reused at once while the host's neighbour cache still maps it to the old
    /// pod's interface.
    last: u8,
}

/// The next free index after `last`, wrapping around.
fn next_free(free: &BTreeSet<u8>, last: u8) -> Option<u8> {
    free.range(last.saturating_add(1)..)
        .next()
        .or_else(|| free.iter().next())
        .copied()
}

/// One pod's namespace and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// `ip netns` name.
    pub netns: String,
    /// The pod IP.
    pub ip: String,
    index: u8,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        anyhow::anyhow!("cannot run `ip` (Debian package iproute2) for the pod network: {e}")
    })?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Network {
    /// The bridge's address: the node's address as pods see it.
    pub fn gateway(&self) -> String {
        format!("10.244.{}.1", self.block)
    }

    fn bridge(&self) -> String {
        format!("cutbr{}", self.block)
    }

    /// Remove what an earlier agent of this block left (its processes included), then
    /// create the bridge.
    pub fn setup(block: u8) -> anyhow::Result<Network> {
        let net = Network {
            block,
            free: (2..=254).collect(),
            last: 1,
        };
        net.teardown();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.gateway()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    /// A namespace and address for a new pod.
    pub fn add_pod(&mut self) -> anyhow::Result<PodNet> {
        let index = next_free(&self.free, self.last).ok_or_else(|| {
            anyhow::anyhow!("no free pod address left in 10.244.{}.0/24", self.block)
        })?;
        self.free.remove(&index);
        self.last = index;
        let netns = format!("{}{index}", prefix(self.block));
        let host_if = format!("cv{}-{index}", self.block);
        let addr = format!("10.244.{}.{index}", self.block);
        let created = (|| -> anyhow::Result<()> {
            ip(&["netns", "add", &netns])?;
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            ip(&["link", "set", &host_if, "master", &self.bridge(), "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "route",
                "add",
                "default",
                "via",
                &self.gateway(),
            ])?;
            Ok(())
        })();
        let pod = PodNet {
            netns,
            ip: addr,
            index,
        };
        if let Err(e) = created {
            self.remove_pod(&pod);
            return Err(e);
        }
        Ok(pod)
    }

    /// Delete the pod's namespace (its veth pair goes with it) and free its address.
    pub fn remove_pod(&mut self, pod: &PodNet) {
        kill_members(&pod.netns);
        let _ = ip(&["netns", "del", &pod.netns]);
        let _ = ip(&["link", "del", &format!("cv{}-{}", self.block, pod.index)]);
        // The host's neighbour entry for the address names the deleted interface's MAC: a
        // pod given the address later would be unreachable until it went stale.
        let _ = ip(&["neigh", "flush", "to", &pod.ip]);
        self.free.insert(pod.index);
    }

    /// Delete every namespace of this block (killing what still runs in them) and the bridge.
    pub fn teardown(&self) {
        let listed = ip(&["netns", "list"]).unwrap_or_default();
        for name in listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix(self.block)))
        {
            kill_members(name);
            let _ = ip(&["netns", "del", name]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// SIGKILL whatever still runs in `netns` (processes of a pod whose agent was killed).
fn kill_members(netns: &str) {
    for pid in ip(&["netns", "pids", netns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The command that runs `program` inside `netns`.
pub fn exec_in(netns: &str, program: &std::path::Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_handed_out_round_robin_so_a_freed_one_is_not_reused_at_once() {
        let mut free: BTreeSet<u8> = (2..=5).collect();
        assert_eq!(next_free(&free, 1), Some(2));
        free.remove(&2);
        assert_eq!(next_free(&free, 2), Some(3));
        free.remove(&3);
        // 2 freed again: 4 comes first, 2 only after the end.
        free.insert(2);
        assert_eq!(next_free(&free, 3), Some(4));
        assert_eq!(next_free(&free, 5), Some(2));
        assert_eq!(next_free(&BTreeSet::new(), 5), None);
    }
}
