//! A real Kubernetes control plane on one machine, for tests and the demo.
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok are built once from
//! the official Go modules (`tools/control-plane/build.sh`, cached by version under
//! `~/.cache/cutover/`) and run as local processes bound to 127.0.0.1 on free ports. kwok
//! plays the kubelet for fake nodes: the real scheduler binds pods to them and kwok marks the
//! pods Running and Ready. State (pids, logs, PKI, etcd data, kubeconfig) lives under
//! `target/clusters/<name>/`.

mod components;
mod error;
pub mod host;
pub mod image;
mod pki;
pub mod process;
pub mod real_node;

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};

pub use components::{Binaries, HOST, Ports};
pub use error::Error;
use error::IoContext as _;
use process::{ProcessRecord, Spawned};
pub use real_node::{NODE_NAME as REAL_NODE, RealNodeOptions};

/// The cluster name used when none is given.
pub const DEFAULT_NAME: &str = "dev";

/// Options of [`up`].
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    /// How many kwok fake nodes to register.
    pub nodes: u32,
    /// Also run a process-backed node (`cutover-process-node`, a development tool) from this
    /// folder, which holds it and the binaries pod images name.
    pub process_node: Option<PathBuf>,
    /// Also run a real node (containerd, kubelet, kube-proxy): `real_node::NODE_NAME`.
    pub real_node: Option<RealNodeOptions>,
}

/// Whether this process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// Why this machine cannot run the process-backed node (it creates network namespaces:
/// root and iproute2's `ip`), or None when it can.
pub fn process_node_unsupported() -> Option<String> {
    if !is_root() {
        return Some("it creates a network namespace per pod, which needs root".into());
    }
    let has_ip = std::process::Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    (!has_ip).then(|| "iproute2's `ip` is missing (apt-get install iproute2)".into())
}

/// The name of the process-backed node `up` starts.
pub const PROCESS_NODE: &str = "process-node-0";

/// The pod address block (10.244.<block>.0/24) of cluster `name`'s process node: one per
/// cluster name, in 100..=199 (tests that run their own agents use blocks below 100).
pub fn process_node_block(name: &str) -> u8 {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    100 + u8::try_from(h % 100).unwrap_or(0)
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_string(),
            nodes: 1,
            process_node: None,
            real_node: None,
        }
    }
}

/// What `target/clusters/<name>/state.json` records about a running cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub bin_dir: PathBuf,
    pub ports: Ports,
    /// In start order; stopped in reverse.
    pub processes: Vec<ProcessRecord>,
    pub nodes: Vec<String>,
}

impl ClusterState {
    /// The kubectl binary built with the cluster (same version as the API server).
    pub fn kubectl(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }
}

/// The workspace root (where `target/` and `tools/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `target/clusters/`, or `$CUTOVER_CLUSTERS_DIR` when set.
pub fn clusters_dir() -> PathBuf {
    std::env::var_os("CUTOVER_CLUSTERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("clusters"))
}

/// The state folder of cluster `name`.
pub fn state_dir(name: &str) -> PathBuf {
    clusters_dir().join(name)
}

/// The kubeconfig path of cluster `name` (it exists only while the cluster is up).
pub fn kubeconfig_path(name: &str) -> PathBuf {
    state_dir(name).join("kubeconfig")
}

fn validate_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Held while a cluster is being started or stopped, so parallel callers (two test
/// binaries, say) do not race. Released when dropped.
struct NameLock(File);

impl NameLock {
    fn acquire(name: &str) -> Result<Self, Error> {
        let dir = clusters_dir();
        std::fs::create_dir_all(&dir).at(&dir)?;
        let path = dir.join(format!(".{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        file.lock().at(&path)?;
        Ok(Self(file))
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Read the state of cluster `name`, if it was started.
pub fn read_state(name: &str) -> Result<Option<ClusterState>, Error> {
    read_json(&state_dir(name).join("state.json"))
}

fn write_state(state: &ClusterState) -> Result<(), Error> {
    write_json(&state_dir(&state.name).join("state.json"), state)
}

/// A JSON state file, or None when there is none.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::State {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write a JSON state file whole (through a temporary file and a rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(value).map_err(|source| Error::State {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(&tmp, json).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

/// Build the control-plane binaries if the cache lacks them; returns their folder.
/// Progress goes to stderr.
pub fn ensure_binaries() -> Result<Binaries, Error> {
    ensure_binaries_with(&[])
}

fn ensure_binaries_with(args: &[&str]) -> Result<Binaries, Error> {
    if which("go").is_none() && std::env::var_os("CUTOVER_CACHE").is_none() {
        // The script would say the same; checking here gives the typed error.
        return Err(Error::GoMissing);
    }
    let script = workspace_root()
        .join("tools")
        .join("control-plane")
        .join("build.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| Error::Spawn {
            what: script.display().to_string(),
            source,
        })?;
    if out.status.code() == Some(3) {
        return Err(Error::GoMissing);
    }
    if !out.status.success() {
        return Err(Error::Build {
            code: out.status.code(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or(Error::Build { code: Some(0) })?;
    Ok(Binaries {
        dir: PathBuf::from(dir),
    })
}

/// Build kubelet and kube-proxy if the cache lacks them (`build.sh node`); returns their
/// folder.
pub fn ensure_node_binaries() -> Result<PathBuf, Error> {
    ensure_binaries_with(&["node"]).map(|b| b.dir)
}

/// Build helm if the cache lacks it (`build.sh helm`); returns the binary's path.
pub fn ensure_helm() -> Result<PathBuf, Error> {
    ensure_binaries_with(&["helm"]).map(|b| b.dir.join("helm"))
}

/// Build CoreDNS if the cache lacks it (`build.sh coredns`); returns the binary's path.
pub fn ensure_coredns() -> Result<PathBuf, Error> {
    ensure_binaries_with(&["coredns"]).map(|b| b.dir.join("coredns"))
}

pub(crate) fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind((HOST, 0)).at("127.0.0.1:0")?;
    let port = l.local_addr().at("127.0.0.1:0")?.port();
    Ok(port)
}

fn pick_ports() -> Result<Ports, Error> {
    // Bind all at once so the five are distinct, then release them for the components.
    let listeners: Vec<TcpListener> = (0..5)
        .map(|_| TcpListener::bind((HOST, 0)).at("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).at("127.0.0.1:0"));
    let mut next = || ports.next().unwrap_or_else(free_port);
    Ok(Ports {
        etcd_client: next()?,
        etcd_peer: next()?,
        apiserver: next()?,
        controller_manager: next()?,
        scheduler: next()?,
    })
}

/// A kube client for a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Whether the cluster recorded in `state` is fully running: every process alive and the
/// API server ready.
pub async fn is_healthy(state: &ClusterState) -> bool {
    if !state.processes.iter().all(process::is_running) {
        return false;
    }
    let Ok(client) = client_for(&state.kubeconfig).await else {
        return false;
    };
    readyz(&client).await
}

async fn readyz(client: &kube::Client) -> bool {
    let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
        return false;
    };
    matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
}

/// Start cluster `opts.name` unless it already runs; returns its state. Idempotent: a
/// healthy cluster is left as it is; a half-dead one is stopped and started afresh.
pub async fn up(opts: &UpOptions) -> Result<ClusterState, Error> {
    validate_name(&opts.name)?;
    let _lock = NameLock::acquire(&opts.name)?;
    if let Some(state) = read_state(&opts.name)? {
        if is_healthy(&state).await {
            tracing::info!(cluster = %opts.name, "already running");
            return Ok(state);
        }
        tracing::warn!(cluster = %opts.name, "found a cluster that is not healthy; restarting it");
        stop_and_remove(&state.name, &state.processes)?;
    }
    let bins = ensure_binaries()?;
    let dir = state_dir(&opts.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).at(&logs)?;
    match start(opts, &bins, &dir).await {
        Ok(state) => Ok(state),
        Err(e) => {
            // Leave no process behind; keep the logs for the user.
            let processes = read_state(&opts.name)
                .ok()
                .flatten()
                .map(|s| s.processes)
                .unwrap_or_default();
            if let Err(t) = teardown(&dir, &processes) {
                tracing::warn!(error = %t, "undoing a failed start");
            }
            Err(e)
        }
    }
}

fn reversed(records: &[ProcessRecord]) -> Vec<ProcessRecord> {
    records.iter().rev().cloned().collect()
}

/// The processes of a cluster being started, and its state file kept current as each
/// one starts (so a failure half-way still knows what to stop).
struct Starter<'a> {
    bins: &'a Binaries,
    dir: &'a Path,
    state: ClusterState,
    running: Vec<Spawned>,
}

impl Starter<'_> {
    fn launch(
        &mut self,
        component: &str,
        args: Vec<String>,
        env: &[(&str, &Path)],
    ) -> Result<(), Error> {
        let exe = self.bins.get(component);
        self.launch_exe(component, &exe, args, env)
    }

    fn launch_exe(
        &mut self,
        component: &str,
        exe: &Path,
        args: Vec<String>,
        env: &[(&str, &Path)],
    ) -> Result<(), Error> {
        let log = self.dir.join("logs").join(format!("{component}.log"));
        let spawned = process::spawn(component, exe, &args, env, &log)?;
        self.state.processes.push(spawned.record.clone());
        self.running.push(spawned);
        write_state(&self.state)
    }

    /// Poll `check` until it holds, failing early (with the log tail) when a component
    /// exits, and after `seconds` with a timeout that names `what`.
    async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        seconds: u64,
        mut check: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            for p in &mut self.running {
                if let Some(reason) = p.exited() {
                    return Err(component_failure(&p.record, reason));
                }
            }
            if check().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    name: self.state.name.clone(),
                    what: what.to_string(),
                    seconds,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn start(opts: &UpOptions, bins: &Binaries, dir: &Path) -> Result<ClusterState, Error> {
    // A real node's guard and bridge come first: the API server binds on the bridge.
    let serve_pods = match &opts.real_node {
        Some(_) => {
            prepare_real_node(&opts.name, dir)?;
            Some(host::BRIDGE_IP)
        }
        None => None,
    };
    let extra_ips: Vec<String> = serve_pods.iter().map(|ip| ip.to_string()).collect();
    let pki = pki::generate(&dir.join("pki"), &extra_ips)?;
    let ports = pick_ports()?;
    let kubeconfig = dir.join("kubeconfig");
    let cluster = format!("cutover-{}", opts.name);
    let server = format!("https://{}:{}", serve_pods.unwrap_or(HOST), ports.apiserver);
    std::fs::write(&kubeconfig, pki::kubeconfig(&pki, &cluster, &server)?).at(&kubeconfig)?;
    let mut s = Starter {
        bins,
        dir,
        state: ClusterState {
            name: opts.name.clone(),
            kubeconfig: kubeconfig.clone(),
            bin_dir: bins.dir.clone(),
            ports,
            processes: Vec::new(),
            nodes: Vec::new(),
        },
        running: Vec::new(),
    };

    s.launch("etcd", components::etcd(&dir.join("etcd"), &ports), &[])?;
    s.launch(
        "kube-apiserver",
        components::apiserver(&pki, &ports, serve_pods),
        &[],
    )?;
    let client = client_for(&kubeconfig).await?;
    s.wait_until("the API server answering /readyz", 180, || readyz(&client))
        .await?;

    s.launch(
        "kube-controller-manager",
        components::controller_manager(&kubeconfig, &pki, &ports),
        &[],
    )?;
    s.launch(
        "kube-scheduler",
        components::scheduler(&kubeconfig, &pki, &ports),
        &[],
    )?;
    let kwok_home = dir.join("kwok");
    std::fs::create_dir_all(&kwok_home).at(&kwok_home)?;
    s.launch(
        "kwok",
        components::kwok(&kubeconfig, bins),
        &[("KWOK_WORKDIR", &kwok_home)],
    )?;
    for port in [ports.controller_manager, ports.scheduler] {
        s.wait_until(
            &format!("a listener on 127.0.0.1:{port}"),
            60,
            || async move { TcpStream::connect((HOST, port)).is_ok() },
        )
        .await?;
    }

    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..opts.nodes {
        let name = format!("kwok-node-{i}");
        nodes
            .patch(
                &name,
                &PatchParams::apply("cutover-local-cluster").force(),
                &Patch::Apply(fake_node(&name, i)),
            )
            .await?;
        s.state.nodes.push(name);
    }
    write_state(&s.state)?;
    for name in s.state.nodes.clone() {
        s.wait_until(&format!("node {name} Ready and schedulable"), 120, || {
            let (nodes, name) = (nodes.clone(), name.clone());
            async move { matches!(nodes.get_opt(&name).await, Ok(Some(n)) if node_schedulable(&n)) }
        })
        .await?;
    }
    if let Some(bin_dir) = &opts.process_node {
        let pod_logs = dir.join("logs").join("pods");
        std::fs::create_dir_all(&pod_logs).at(&pod_logs)?;
        let args = vec![
            "--node-name".to_string(),
            PROCESS_NODE.to_string(),
            "--ip-block".to_string(),
            process_node_block(&opts.name).to_string(),
            "--bin-dir".to_string(),
            bin_dir.display().to_string(),
            "--log-dir".to_string(),
            pod_logs.display().to_string(),
        ];
        s.launch_exe(
            "cutover-process-node",
            &bin_dir.join("cutover-process-node"),
            args,
            &[("KUBECONFIG", &kubeconfig)],
        )?;
        s.state.nodes.push(PROCESS_NODE.to_string());
        write_state(&s.state)?;
        s.wait_until(&format!("node {PROCESS_NODE} Ready"), 60, || {
            let nodes = nodes.clone();
            async move {
                matches!(nodes.get_opt(PROCESS_NODE).await, Ok(Some(n)) if n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
            }
        })
        .await?;
    }
    if let Some(real) = &opts.real_node {
        start_real_node(&mut s, real, &pki, &cluster, &server, &nodes).await?;
    }
    Ok(s.state)
}

/// Check the machine, make sure no other cluster has the real node, record the host as it
/// is, then install the network guard and the bridge.
fn prepare_real_node(name: &str, dir: &Path) -> Result<(), Error> {
    if let Some(why) = host::unsupported() {
        return Err(Error::RealNodeUnsupported(why));
    }
    for other in list() {
        if other != name && real_node::read_state(&state_dir(&other))?.is_some() {
            return Err(Error::RealNodeBusy(other));
        }
    }
    let layout = real_node::Layout {
        dir: dir.to_path_buf(),
    };
    real_node::write_state(
        dir,
        &real_node::RealNodeState {
            before: host::HostSnapshot::take(),
            containerd_socket: layout.socket(),
        },
    )?;
    host::install_network()
}

/// containerd (and the images), kubelet and kube-proxy; waits for the node to be Ready.
async fn start_real_node(
    s: &mut Starter<'_>,
    real: &RealNodeOptions,
    pki: &pki::Pki,
    cluster: &str,
    server: &str,
    nodes: &Api<Node>,
) -> Result<(), Error> {
    let layout = real_node::Layout {
        dir: s.dir.to_path_buf(),
    };
    let ports = real_node::NodePorts {
        kubelet: free_port()?,
        kubelet_healthz: free_port()?,
        proxy_metrics: free_port()?,
        proxy_healthz: free_port()?,
    };
    let (kubelet_kc, proxy_kc) = real_node::write_configs(&layout, pki, cluster, server, ports)?;
    let containerd = which("containerd").unwrap_or_else(|| PathBuf::from("/usr/bin/containerd"));
    s.launch_exe(
        "containerd",
        &containerd,
        real_node::containerd_args(&layout),
        &[],
    )?;
    let socket = layout.socket();
    s.wait_until("containerd answering", 30, || {
        let socket = socket.clone();
        async move { real_node::ctr(&socket, &["version"]).is_ok() }
    })
    .await?;
    real_node::import_images(&socket, &real.images)?;
    s.launch_exe(
        "kubelet",
        &real.bin_dir.join("kubelet"),
        real_node::kubelet_args(&layout, &kubelet_kc),
        &[],
    )?;
    s.launch_exe(
        "kube-proxy",
        &real.bin_dir.join("kube-proxy"),
        real_node::kube_proxy_args(&proxy_kc, ports),
        &[],
    )?;
    s.state.nodes.push(real_node::NODE_NAME.to_string());
    write_state(&s.state)?;
    s.wait_until(&format!("node {} Ready", real_node::NODE_NAME), 120, || {
        let nodes = nodes.clone();
        async move {
            matches!(nodes.get_opt(real_node::NODE_NAME).await, Ok(Some(n)) if node_schedulable(&n))
        }
    })
    .await
}

/// Stop a real node's parts and give the machine back as it was: kubelet and kube-proxy
/// first, then every container (while containerd still runs), then the other processes;
/// then mounts, network, netfilter, sysctls, cgroups and host folders.
fn teardown(dir: &Path, processes: &[ProcessRecord]) -> Result<(), Error> {
    let real = real_node::read_state(dir)?;
    if let Some(real) = &real {
        let agents: Vec<ProcessRecord> = processes
            .iter()
            .rev()
            .filter(|p| p.component == "kube-proxy" || p.component == "kubelet")
            .cloned()
            .collect();
        process::stop_all(&agents, Duration::from_secs(10));
        real_node::remove_containers(&real.containerd_socket);
    }
    process::stop_all(&reversed(processes), Duration::from_secs(10));
    if let Some(real) = real {
        host::unmount_below(dir);
        host::restore(&real.before)?;
    }
    Ok(())
}

/// A Node that kwok manages. kwok's `node-initialize` stage fills in its status.
fn fake_node(name: &str, index: u32) -> serde_json::Value {
    let (k, v) = components::KWOK_NODE_ANNOTATION;
    let cidr = format!("10.244.{index}.0/24");
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { k: v, "node.alpha.kubernetes.io/ttl": "0" },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": { "podCIDR": cidr, "podCIDRs": [cidr] },
    })
}

/// Ready, and without the not-ready taint that kube-controller-manager removes.
fn node_schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
    ready && !tainted
}

fn component_failure(record: &ProcessRecord, reason: String) -> Error {
    let tail = process::tail(&record.log, 25);
    let lower = tail.to_lowercase();
    if lower.contains("address already in use") {
        let port = tail
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|d| d.parse::<u16>().ok())
            .find(|p| *p >= 1024)
            .unwrap_or(0);
        return Error::PortTaken {
            component: record.component.clone(),
            port,
            log: record.log.clone(),
            tail,
        };
    }
    Error::ComponentFailed {
        component: record.component.clone(),
        reason,
        log: record.log.clone(),
        tail,
    }
}

fn stop_and_remove(name: &str, processes: &[ProcessRecord]) -> Result<(), Error> {
    let dir = state_dir(name);
    teardown(&dir, processes)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).at(&dir)?;
    }
    Ok(())
}

/// Stop every process cluster `name` started and remove its state. Returns whether there
/// was a cluster to stop.
pub fn down(name: &str) -> Result<bool, Error> {
    validate_name(name)?;
    let _lock = NameLock::acquire(name)?;
    match read_state(name)? {
        Some(state) => {
            stop_and_remove(name, &state.processes)?;
            Ok(true)
        }
        None => {
            let dir = state_dir(name);
            let existed = dir.exists();
            if existed {
                std::fs::remove_dir_all(&dir).at(&dir)?;
            }
            Ok(existed)
        }
    }
}

/// Names of the clusters that have a state folder.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(clusters_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_with_log(text: &str) -> (ProcessRecord, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cutover-lc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join(format!("{}.log", text.len()));
        std::fs::write(&log, text).expect("write log");
        (
            ProcessRecord {
                component: "etcd".into(),
                pid: 1,
                exe: PathBuf::from("/nonexistent/etcd"),
                log: log.clone(),
            },
            log,
        )
    }

    #[test]
    fn a_taken_port_is_reported_as_such() {
        let (record, _) = record_with_log(
            "{\"level\":\"fatal\",\"msg\":\"listen tcp 127.0.0.1:23790: bind: address already in use\"}\n",
        );
        match component_failure(&record, "it exited with exit status: 1".into()) {
            Error::PortTaken {
                component, port, ..
            } => {
                assert_eq!(component, "etcd");
                assert_eq!(port, 23790);
            }
            other => panic!("expected PortTaken, got {other}"),
        }
    }

    #[test]
    fn other_failures_show_the_log_tail() {
        let (record, _) = record_with_log("line 1\nerror: something specific broke\n");
        let err = component_failure(&record, "it exited with exit status: 1".into());
        let msg = err.to_string();
        assert!(matches!(err, Error::ComponentFailed { .. }));
        assert!(msg.contains("something specific broke"), "{msg}");
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("dev").is_ok());
        assert!(validate_name("it-side-a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("Dev").is_err());
    }

    #[test]
    fn a_record_of_a_foreign_pid_is_not_ours() {
        // pid 1 runs something other than the recorded binary: never signal it.
        let (record, _) = record_with_log("");
        assert!(!process::is_running(&record));
    }
}
