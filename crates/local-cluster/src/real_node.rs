//! A real node beside the control plane: containerd (its own config, root, state and
//! socket under the cluster's state folder), kubelet and kube-proxy (nftables mode) as node
//! [`NODE_NAME`], pods on a CNI bridge with host-local IPAM on [`host::POD_SUBNET`], a
//! locally built pause image, nothing pulled.
//!
//! Identities come from the cluster's CA: kubelet is `system:node:real-0` in
//! `system:nodes` (the Node authorizer applies), kube-proxy `system:kube-proxy`. The API
//! server of a cluster with a real node serves on the bridge address, so pods reach it at
//! the `kubernetes` Service (its lease endpoint reconciler keeps the endpoints right), and
//! it reaches kubelet on the node's InternalIP with the admin identity.
//!
//! Four settings this kind of machine needs: cgroup v1 (`failCgroupV1: false`), no systemd
//! (`cgroupfs`), no `CAP_SYS_RESOURCE` (`restrict_oom_score_adj`), and pods with no DNS
//! server (`resolvConf: ""`: no lookup may reach the machine's resolver).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext as _};
use crate::host::{self, BRIDGE, BRIDGE_IP, HostSnapshot, POD_SUBNET};
use crate::pki::{self, Pki};

/// The real node's name.
pub const NODE_NAME: &str = "real-0";
/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The pause image every pod sandbox runs (built locally, never pulled).
pub const PAUSE_IMAGE: &str = "localhost/cutover-pause:3.10";
/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// What [`crate::up`] needs for a real node.
#[derive(Debug, Clone)]
pub struct RealNodeOptions {
    /// The folder holding `kubelet` and `kube-proxy` (built by `build.sh node`).
    pub bin_dir: PathBuf,
    /// OCI archives to import into containerd before kubelet starts; one of them is
    /// [`PAUSE_IMAGE`].
    pub images: Vec<PathBuf>,
}

/// What the state folder records about a running real node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealNodeState {
    /// The machine before the node started, restored on teardown.
    pub before: HostSnapshot,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
}

/// Paths of the node's parts under the cluster's state folder.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    fn containerd(&self) -> PathBuf {
        self.dir.join("containerd")
    }
    pub fn socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    fn containerd_config(&self) -> PathBuf {
        self.containerd().join("config.toml")
    }
    fn cni_conf(&self) -> PathBuf {
        self.dir.join("cni").join("conf")
    }
    fn kubelet(&self) -> PathBuf {
        self.dir.join("kubelet")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("real-node.json")
    }
}

/// containerd's configuration: everything under the state folder, CRI with the local
/// pause image and our CNI folders.
pub fn containerd_config(l: &Layout) -> String {
    let c = l.containerd();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here has no CAP_SYS_RESOURCE: a negative oom_score_adj is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
        root = c.join("root").display(),
        state = c.join("state").display(),
        socket = l.socket().display(),
        runc_root = c.join("runc").display(),
        conf = l.cni_conf().display(),
    )
}

/// The CNI network: a bridge with host-local IPAM; no masquerade (nothing is meant to leave).
pub fn cni_config(l: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cutover-real-node",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": l.dir.join("cni").join("ipam").display().to_string(),
                "ranges": [[{ "subnet": POD_SUBNET, "rangeStart": "10.250.0.10", "gateway": BRIDGE_IP }]],
                "routes": [{ "dst": "0.0.0.0/0" }]
            }
        }]
    })
    .to_string()
}

/// Ports kubelet and kube-proxy listen on (free ones, so nothing clashes).
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    pub kubelet: u16,
    pub kubelet_healthz: u16,
    pub proxy_metrics: u16,
    pub proxy_healthz: u16,
}

/// kubelet's configuration.
pub fn kubelet_config(l: &Layout, pki: &Pki, ports: NodePorts) -> String {
    let k = l.kubelet();
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": format!("unix://{}", l.socket().display()),
        "cgroupDriver": "cgroupfs",
        // This kind of machine has cgroup v1; 1.35+ refuses it unless told.
        "failCgroupV1": false,
        "failSwapOn": false,
        "address": BRIDGE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": pki.ca_cert.display().to_string() }
        },
        "authorization": { "mode": "Webhook" },
        // No DNS server for pods: no lookup may reach the machine's own resolver.
        "resolvConf": "",
        "podLogsDir": k.join("pod-logs").display().to_string(),
        "evictionHard": { "memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%" },
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": false,
        "maxPods": 110,
    })
    .to_string()
}

/// kubelet's command line.
pub fn kubelet_args(l: &Layout, kubeconfig: &Path) -> Vec<String> {
    let k = l.kubelet();
    vec![
        format!("--config={}", k.join("config.yaml").display()),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE_NAME}"),
        format!("--node-ip={BRIDGE_IP}"),
        format!("--root-dir={}", k.join("root").display()),
        format!("--cert-dir={}", k.join("pki").display()),
        "--v=1".to_string(),
    ]
}

/// kube-proxy's command line: nftables mode, NodePorts only on the bridge, conntrack
/// sysctls left alone.
pub fn kube_proxy_args(kubeconfig: &Path, ports: NodePorts) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={NODE_NAME}"),
        "--proxy-mode=nftables".to_string(),
        format!("--cluster-cidr={POD_SUBNET}"),
        format!("--nodeport-addresses={BRIDGE_IP}/32"),
        "--conntrack-max-per-core=0".to_string(),
        "--conntrack-tcp-timeout-established=0".to_string(),
        "--conntrack-tcp-timeout-close-wait=0".to_string(),
        format!("--metrics-bind-address=127.0.0.1:{}", ports.proxy_metrics),
        format!("--healthz-bind-address=127.0.0.1:{}", ports.proxy_healthz),
    ]
}

/// Write every configuration file and the node's identities; returns the kubeconfigs of
/// kubelet and kube-proxy.
pub fn write_configs(
    l: &Layout,
    pki: &Pki,
    cluster: &str,
    server: &str,
    ports: NodePorts,
) -> Result<(PathBuf, PathBuf), Error> {
    for d in [
        l.containerd(),
        l.cni_conf(),
        l.kubelet().join("root"),
        l.kubelet().join("pki"),
        l.kubelet().join("pod-logs"),
    ] {
        std::fs::create_dir_all(&d).at(&d)?;
    }
    let write = |path: PathBuf, text: String| std::fs::write(&path, text).at(&path);
    write(l.containerd_config(), containerd_config(l))?;
    write(l.cni_conf().join("10-cutover.conflist"), cni_config(l))?;
    write(
        l.kubelet().join("config.yaml"),
        kubelet_config(l, pki, ports),
    )?;
    let (cert, key) = pki::mint_client(
        pki,
        "kubelet",
        &format!("system:node:{NODE_NAME}"),
        Some("system:nodes"),
    )?;
    let kubelet_kc = l.kubelet().join("kubeconfig");
    write(
        kubelet_kc.clone(),
        pki::kubeconfig_as(pki, cluster, server, "kubelet", &cert, &key)?,
    )?;
    let (cert, key) = pki::mint_client(pki, "kube-proxy", "system:kube-proxy", None)?;
    let proxy_kc = l.dir.join("kube-proxy.kubeconfig");
    write(
        proxy_kc.clone(),
        pki::kubeconfig_as(pki, cluster, server, "kube-proxy", &cert, &key)?,
    )?;
    Ok((kubelet_kc, proxy_kc))
}

/// containerd's args.
pub fn containerd_args(l: &Layout) -> Vec<String> {
    vec![format!("--config={}", l.containerd_config().display())]
}

/// `ctr` against this node's containerd, in the CRI namespace.
pub fn ctr(socket: &Path, args: &[&str]) -> Result<String, Error> {
    let address = socket.display().to_string();
    let mut all = vec!["--address", address.as_str(), "--namespace", CRI_NAMESPACE];
    all.extend_from_slice(args);
    host::run("ctr", &all)
}

/// Import OCI archives into the node's containerd.
pub fn import_images(socket: &Path, images: &[PathBuf]) -> Result<(), Error> {
    for image in images {
        ctr(
            socket,
            &[
                "images",
                "import",
                "--no-unpack=false",
                &image.display().to_string(),
            ],
        )?;
    }
    Ok(())
}

/// Kill and delete every container the node's containerd runs (kubelet already stopped).
pub fn remove_containers(socket: &Path) {
    let ids = |what: &str| -> Vec<String> {
        ctr(socket, &[what, "list", "--quiet"])
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    for id in ids("tasks") {
        let _ = ctr(socket, &["tasks", "kill", "--signal", "SIGKILL", &id]);
    }
    for id in ids("tasks") {
        // A task deletes once its process is gone; force covers one still dying.
        let _ = ctr(socket, &["tasks", "delete", "--force", &id]);
    }
    for id in ids("containers") {
        let _ = ctr(socket, &["containers", "delete", &id]);
    }
}

/// Read the real node's state from the cluster's folder, if it has one.
pub fn read_state(dir: &Path) -> Result<Option<RealNodeState>, Error> {
    crate::read_json(&state_file(dir))
}

/// Write the real node's state.
pub fn write_state(dir: &Path, state: &RealNodeState) -> Result<(), Error> {
    crate::write_json(&state_file(dir), state)
}

fn state_file(dir: &Path) -> PathBuf {
    Layout {
        dir: dir.to_path_buf(),
    }
    .state_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/state/realnode"),
        }
    }

    #[test]
    fn containerd_keeps_everything_under_the_state_folder() {
        let c = containerd_config(&layout());
        for line in c.lines().filter(|l| l.contains(" = \"/")) {
            assert!(
                line.contains("\"/state/realnode/") || line.contains(CNI_BIN),
                "{line}"
            );
        }
        assert!(c.contains("restrict_oom_score_adj = true"));
        assert!(c.contains(PAUSE_IMAGE));
    }

    #[test]
    fn kubelet_has_no_dns_server_and_authenticates_its_callers() {
        let pki = Pki::at(Path::new("/state/realnode/pki"));
        let ports = NodePorts {
            kubelet: 1,
            kubelet_healthz: 2,
            proxy_metrics: 3,
            proxy_healthz: 4,
        };
        let c: serde_json::Value =
            serde_json::from_str(&kubelet_config(&layout(), &pki, ports)).expect("json");
        assert_eq!(c["resolvConf"], "");
        assert_eq!(c["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(c["authorization"]["mode"], "Webhook");
        assert_eq!(c["failCgroupV1"], false);
        assert_eq!(c["address"], BRIDGE_IP);
    }

    #[test]
    fn pods_get_the_bridge_subnet_and_no_masquerade() {
        let c: serde_json::Value = serde_json::from_str(&cni_config(&layout())).expect("json");
        let bridge = &c["plugins"][0];
        assert_eq!(bridge["bridge"], BRIDGE);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], POD_SUBNET);
    }
}
