//! Command lines of the control-plane components. Everything binds to 127.0.0.1.

use std::path::{Path, PathBuf};

use crate::pki::Pki;

/// The address every component binds to.
pub const HOST: &str = "127.0.0.1";
/// Service ClusterIPs (not routable here; the apiserver only allocates them).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Pod IPs that kwok hands out on its fake nodes (each node gets a /24 of it).
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The annotation that puts a Node under kwok's management.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// Ports picked for one cluster.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Ports {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

/// The binaries of one build, all in one folder.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn kwok_stages(&self) -> PathBuf {
        self.dir.join("kwok-stages.yaml")
    }
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

pub fn etcd(data_dir: &Path, p: &Ports) -> Vec<String> {
    let client = format!("http://{HOST}:{}", p.etcd_client);
    let peer = format!("http://{HOST}:{}", p.etcd_peer);
    vec![
        s("--name=node0"),
        format!("--data-dir={}", data_dir.display()),
        // Throwaway clusters: durability buys nothing, fsync costs seconds on slow disks.
        s("--unsafe-no-fsync=true"),
        s("--log-level=warn"),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=node0={peer}"),
    ]
}

/// The API server. `serve_pods` (a real node's bridge address): it binds there instead of
/// loopback, so pods reach it at the `kubernetes` Service, whose endpoints its lease
/// reconciler then keeps; it calls kubelets with the admin identity.
pub fn apiserver(pki: &Pki, p: &Ports, serve_pods: Option<&str>) -> Vec<String> {
    let bind = serve_pods.unwrap_or(HOST);
    let mut args = vec![
        format!("--etcd-servers=http://{HOST}:{}", p.etcd_client),
        format!("--bind-address={bind}"),
        // Without it the apiserver looks for a default route, which a sandbox may lack.
        format!("--advertise-address={bind}"),
        format!("--secure-port={}", p.apiserver),
        format!("--cert-dir={}", pki.dir.display()),
        format!("--tls-cert-file={}", pki.apiserver_cert.display()),
        format!("--tls-private-key-file={}", pki.apiserver_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
        format!(
            "--service-account-key-file={}",
            pki.service_account_pub.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        s("--authorization-mode=Node,RBAC"),
        s("--allow-privileged=true"),
        // Kubelets by address, never by a host name only a resolver would know.
        s("--kubelet-preferred-address-types=InternalIP"),
        s("--profiling=false"),
        // Aggregated APIs (a custom metrics API in tests) are dialled at their Service's
        // endpoints: no kube-proxy here turns a Service IP into them.
        s("--enable-aggregator-routing=true"),
    ];
    match serve_pods {
        Some(_) => args.extend([
            s("--endpoint-reconciler-type=lease"),
            format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
            format!("--kubelet-client-key={}", pki.admin_key.display()),
        ]),
        // A loopback advertise address cannot be written into the `kubernetes` Endpoints.
        None => args.push(s("--endpoint-reconciler-type=none")),
    }
    args
}

pub fn controller_manager(kubeconfig: &Path, pki: &Pki, p: &Ports) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        format!("--bind-address={HOST}"),
        format!("--secure-port={}", p.controller_manager),
        format!(
            "--cert-dir={}",
            pki.dir.join("controller-manager").display()
        ),
        s("--leader-elect=false"),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        s("--use-service-account-credentials=false"),
        // A HorizontalPodAutoscaler reads its metrics every 5 s instead of 15 s.
        s("--horizontal-pod-autoscaler-sync-period=5s"),
        s("--profiling=false"),
    ]
}

pub fn scheduler(kubeconfig: &Path, pki: &Pki, p: &Ports) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        format!("--bind-address={HOST}"),
        format!("--secure-port={}", p.scheduler),
        format!("--cert-dir={}", pki.dir.join("scheduler").display()),
        s("--leader-elect=false"),
        s("--profiling=false"),
    ]
}

pub fn kwok(kubeconfig: &Path, bins: &Binaries) -> Vec<String> {
    let (k, v) = KWOK_NODE_ANNOTATION;
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--config={}", bins.kwok_stages().display()),
        // Only nodes that ask for it: other node agents (a process-backed node) may join.
        format!("--manage-nodes-with-annotation-selector={k}={v}"),
        s("--node-lease-duration-seconds=40"),
        format!("--cidr={POD_CIDR}"),
    ]
}
