//! End-to-end pieces: workspace binaries, a process-backed node of a test's own, a
//! `cutover-router` scoped to the test's namespace, a Gateway it serves, and pod templates
//! that run the demo app on the node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cutover_local_cluster::process;
use k8s_openapi::api::core::v1::Node;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::{Value, json};

use crate::{TestNamespace, cleanup, kubeconfig, netns, wait_for};

/// The GatewayClass every test's Gateway uses.
pub const GATEWAY_CLASS: &str = "cutover-router";

/// Remove from `cmd` the variables `cargo test` sets for a test binary: a cargo started by a
/// test would otherwise rebuild the build scripts that watch them, on every alternation
/// between the two builds.
pub fn without_test_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "OUT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
}

/// Build workspace `packages` (debug) and return the folder of their binaries.
pub fn build(packages: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    without_test_cargo_env(&mut cmd);
    cmd.args(["build", "-q"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd
        .current_dir(cutover_local_cluster::workspace_root())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build {packages:?} failed");
    cutover_local_cluster::workspace_root()
        .join("target")
        .join("debug")
}

/// `n` different free TCP ports on 127.0.0.1 (all held at once while chosen, so no two
/// are the same; free when asked, bind them soon).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET `path` from 127.0.0.1:`port`; the whole response (status line, headers, body).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path).await
}

/// GET `path` from `addr` (on this machine); the whole response.
pub async fn http_get_at(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

fn log_file(name: &str) -> (PathBuf, std::fs::File) {
    let dir = cutover_local_cluster::workspace_root()
        .join("target")
        .join("test-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&path)
        .expect("log file");
    (path, file)
}

/// SIGTERM, and wait as long as it takes: both the node agent and the router clean up
/// on SIGTERM (the agent stops its pods, each within their own grace period).
fn terminate(child: &mut Child) {
    let _ = process::stop(child, process::NO_DEADLINE);
}

/// A `cutover-process-node` of the test's own: Node `proc-<namespace>` with pod addresses
/// 10.244.<block>.0/24. On drop it stops its pods' processes and the Node is deleted.
#[derive(Debug)]
pub struct ProcessNode {
    child: Child,
    /// The Node's name.
    pub name: String,
    kubeconfig: PathBuf,
}

impl ProcessNode {
    /// Start the agent from `bin_dir` (which also holds the binaries images name) and wait
    /// until its Node is Ready. `block` must be unique among tests running at once.
    pub async fn start(ns: &TestNamespace, bin_dir: &Path, block: u8) -> ProcessNode {
        Self::start_in(&ns.client, &kubeconfig().await, &ns.name, bin_dir, block).await
    }

    /// The same on the cluster of `kubeconfig` (`client` talks to it), Node `proc-<suffix>`.
    pub async fn start_in(
        client: &kube::Client,
        kubeconfig: &Path,
        suffix: &str,
        bin_dir: &Path,
        block: u8,
    ) -> ProcessNode {
        Self::spawn(client, kubeconfig, kubeconfig, suffix, bin_dir, block, None).await
    }

    /// [`Self::start_in`] with the agent in `region`'s network namespace: its bridge and
    /// its pods' veths are in the region, so its pods are reached from the region only.
    /// The agent uses `region_kubeconfig` (see [`crate::netns::kubeconfig_for_regions`]);
    /// `kubeconfig` (from the host) deletes its Node at the end.
    pub async fn start_in_region(
        region: &netns::Region,
        client: &kube::Client,
        region_kubeconfig: &Path,
        kubeconfig: &Path,
        suffix: &str,
        bin_dir: &Path,
        block: u8,
    ) -> ProcessNode {
        Self::spawn(
            client,
            region_kubeconfig,
            kubeconfig,
            suffix,
            bin_dir,
            block,
            Some(region),
        )
        .await
    }

    async fn spawn(
        client: &kube::Client,
        agent_kubeconfig: &Path,
        kubeconfig: &Path,
        suffix: &str,
        bin_dir: &Path,
        block: u8,
        region: Option<&netns::Region>,
    ) -> ProcessNode {
        let name = format!("proc-{suffix}");
        let (_, out) = log_file(&name);
        let err = out.try_clone().expect("log file");
        let pod_logs = cutover_local_cluster::workspace_root()
            .join("target")
            .join("test-logs")
            .join(&name);
        let mut cmd = Command::new(bin_dir.join("cutover-process-node"));
        cmd.args(["--node-name", &name, "--ip-block", &block.to_string()])
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--log-dir")
            .arg(&pod_logs)
            .env("KUBECONFIG", agent_kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = netns::within(region, || cmd.spawn()).expect("start cutover-process-node");
        let node = ProcessNode {
            child,
            name,
            kubeconfig: kubeconfig.to_path_buf(),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        wait_for(
            &nodes,
            &node.name,
            "the process node Ready, without the not-ready taint",
            Duration::from_secs(60),
            |n: Option<&Node>| {
                let ready = n
                    .and_then(|n| n.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let tainted = n
                    .and_then(|n| n.spec.as_ref())
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")));
                ready && !tainted
            },
        )
        .await;
        node
    }

    /// A pod spec running the demo app `version` on this node (see [`demo_pod_spec`]).
    pub fn demo_pod_spec(&self, version: &str) -> Value {
        demo_pod_spec(&self.name, version)
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        // SIGTERM: the agent stops its pods' processes and removes their namespaces.
        terminate(&mut self.child);
        let node = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        cleanup(move |_| async move {
            if let Ok(client) = cutover_local_cluster::client_for(&kubeconfig).await {
                let nodes: Api<Node> = Api::all(client);
                let _ = nodes.delete(&node, &DeleteParams::default()).await;
            }
        });
    }
}

/// A pod spec running the demo app `version` as a container of its locally built image on
/// the real node (`cargo xtask image --load`), with a restricted security context.
pub fn real_node_demo_pod_spec(version: &str) -> Value {
    json!({
        "nodeSelector": { "kubernetes.io/hostname": cutover_local_cluster::REAL_NODE },
        "terminationGracePeriodSeconds": 5,
        "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [{
            "name": "app",
            "image": format!("{}/cutover-demo-app:{}", cutover_local_cluster::image::REGISTRY, env!("CARGO_PKG_VERSION")),
            "ports": [{ "name": "http", "containerPort": 8080 }],
            "env": [
                { "name": "CUTOVER_DEMO_LISTEN", "value": "0.0.0.0:8080" },
                { "name": "CUTOVER_DEMO_VERSION", "value": version }
            ],
            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "periodSeconds": 1 },
            "securityContext": {
                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] }
            }
        }]
    })
}

/// A pod spec running the demo app `version` on process node `node`: listening on the
/// pod IP, port 8080 (`http`), ready when `/healthz` answers.
pub fn demo_pod_spec(node: &str, version: &str) -> Value {
    json!({
        "nodeSelector": { "kubernetes.io/hostname": node },
        "tolerations": [{ "key": "cutover.dev/process-node", "operator": "Exists" }],
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "app", "image": format!("cutover-demo-app:{version}"),
            "ports": [{ "name": "http", "containerPort": 8080 }],
            "env": [
                { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                { "name": "CUTOVER_DEMO_LISTEN", "value": "$(POD_IP):8080" },
                { "name": "CUTOVER_DEMO_VERSION", "value": version }
            ],
            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "periodSeconds": 1 },
            // As for any pod behind a proxy: a deleted pod serves on until the endpoint
            // change has reached the proxies (kube-controller-manager, then their watch).
            "lifecycle": { "preStop": { "sleep": { "seconds": 2 } } }
        }]
    })
}

/// A `cutover-router` watching one namespace. SIGTERM on drop.
#[derive(Debug)]
pub struct RouterProcess {
    child: Child,
    /// Port of /metrics, /healthz, /debug/routes (on 127.0.0.1, or on its region's address).
    pub admin_port: u16,
    admin_ip: std::net::IpAddr,
    /// Its log.
    pub log: PathBuf,
}

impl RouterProcess {
    /// Its process id (for a caller that leaves it running).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `bin_dir/cutover-router` for `namespace` on the test cluster and wait until
    /// it answers /healthz.
    pub async fn start(bin_dir: &Path, namespace: &str) -> RouterProcess {
        Self::start_with(bin_dir, namespace, &kubeconfig().await).await
    }

    /// The same on the cluster of `kubeconfig`.
    pub async fn start_with(bin_dir: &Path, namespace: &str, kubeconfig: &Path) -> RouterProcess {
        Self::spawn(bin_dir, namespace, kubeconfig, None).await
    }

    /// The same in `region`'s network namespace: its Gateways' listeners and its admin
    /// endpoint bind the region's address (which the host reaches across the bridge);
    /// `kubeconfig` must reach the API server from the region (see
    /// [`netns::kubeconfig_for_regions`]).
    pub async fn start_in(
        region: &netns::Region,
        bin_dir: &Path,
        namespace: &str,
        kubeconfig: &Path,
    ) -> RouterProcess {
        Self::spawn(bin_dir, namespace, kubeconfig, Some(region)).await
    }

    async fn spawn(
        bin_dir: &Path,
        namespace: &str,
        kubeconfig: &Path,
        region: Option<&netns::Region>,
    ) -> RouterProcess {
        let admin_port = free_port();
        let admin_ip = region.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |r| r.ip());
        let (log, out) = log_file(&format!("{namespace}-router"));
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(bin_dir.join("cutover-router"));
        cmd.args([
            "--namespace",
            namespace,
            "--admin-addr",
            &std::net::SocketAddr::new(admin_ip, admin_port).to_string(),
        ]);
        if region.is_some() {
            cmd.args(["--listen", &admin_ip.to_string()]);
        }
        cmd.env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,cutover_router=debug,kube_client=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = netns::within(region, || cmd.spawn()).expect("start cutover-router");
        let router = RouterProcess {
            child,
            admin_port,
            admin_ip,
            log,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while http_get_at(router.admin(), "/healthz").await.is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "cutover-router did not answer /healthz; log:\n{}",
                std::fs::read_to_string(&router.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        router
    }

    /// SIGKILL: no chance to finish requests in flight, as in a region lost.
    pub fn kill(&mut self) {
        let _ = process::stop(&mut self.child, Duration::ZERO);
    }

    /// The table in use (`/debug/routes`).
    pub async fn routes(&self) -> Value {
        routes_at(self.admin()).await
    }

    fn admin(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.admin_ip, self.admin_port)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get_at(self.admin(), "/metrics")
            .await
            .unwrap_or_default()
    }

    /// Poll the router's table (it is not an API object to watch) until `predicate` holds;
    /// panics after `timeout` naming `what`.
    pub async fn wait_routes(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_routes_at(&[self.admin()], what, timeout, predicate).await
    }
}

/// The table a router serves (`/debug/routes` on its admin address).
pub async fn routes_at(admin: std::net::SocketAddr) -> Value {
    let text = http_get_at(admin, "/debug/routes")
        .await
        .unwrap_or_default();
    text.split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

/// Poll the tables of the routers at `admins` (not API objects to watch) until `predicate`
/// holds for every one; returns the last router's; panics after `timeout` naming `what`.
pub async fn wait_routes_at(
    admins: &[std::net::SocketAddr],
    what: &str,
    timeout: Duration,
    predicate: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut all = true;
        let mut last = Value::Null;
        for admin in admins {
            last = routes_at(*admin).await;
            all &= predicate(&last);
        }
        if all {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for the router to show {what}; table: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Backends of the router's table as (backend name, weight, ready endpoints), across every
/// port, host and rule.
pub fn table_backends(routes: &Value) -> Vec<(String, u64, Vec<String>)> {
    let mut out = Vec::new();
    for groups in routes["ports"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for g in groups.as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                for b in r["backends"].as_array().into_iter().flatten() {
                    let weight = b[0].as_u64().unwrap_or(0);
                    let name = b[1]["name"].as_str().unwrap_or("").to_string();
                    let eps = b[1]["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                    out.push((name, weight, eps));
                }
            }
        }
    }
    out
}

/// An API for Gateway API objects of `kind` (v1), in `ns` or cluster-wide.
pub fn gateway_api(client: &kube::Client, ns: Option<&str>, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Apply the GatewayClass `cutover-router` and a Gateway `gw` with an HTTP listener on
/// `port` in namespace `ns` (Gateway API CRDs must be installed).
pub async fn gateway(client: &kube::Client, ns: &str, port: u16) {
    let pp = PatchParams::apply("cutover-tests").force();
    let class = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": { "name": GATEWAY_CLASS },
        "spec": { "controllerName": "cutover.dev/router" }
    });
    gateway_api(client, None, "GatewayClass")
        .patch(GATEWAY_CLASS, &pp, &Patch::Apply(&class))
        .await
        .expect("apply GatewayClass");
    let gw = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "gw" },
        "spec": { "gatewayClassName": GATEWAY_CLASS,
            "listeners": [{ "name": "http", "port": port, "protocol": "HTTP" }] }
    });
    gateway_api(client, Some(ns), "Gateway")
        .patch("gw", &pp, &Patch::Apply(&gw))
        .await
        .expect("apply Gateway");
}

/// Apply HTTPRoute `name` in `ns` with `spec` (its parentRefs default to the Gateway `gw`).
pub async fn http_route(client: &kube::Client, ns: &str, name: &str, mut spec: Value) {
    if spec.get("parentRefs").is_none() {
        spec["parentRefs"] = json!([{ "name": "gw" }]);
    }
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": name }, "spec": spec
    });
    gateway_api(client, Some(ns), "HTTPRoute")
        .patch(
            name,
            &PatchParams::apply("cutover-tests").force(),
            &Patch::Apply(&route),
        )
        .await
        .expect("apply HTTPRoute");
}

/// Apply HTTPRoute `name` in `ns` with one rule whose only backend is `<name>-blue`, port
/// 80: the route a BlueGreenDeployment `name` with `trafficRouting.gatewayAPI.httpRoute:
/// <name>` starts from.
pub async fn blue_route(client: &kube::Client, ns: &str, name: &str) {
    http_route(
        client,
        ns,
        name,
        json!({ "rules": [{ "backendRefs": [{ "name": format!("{name}-blue"), "port": 80 }] }] }),
    )
    .await;
}

/// The HTTPRoutes API of the test's namespace.
pub fn http_routes(ns: &TestNamespace) -> Api<DynamicObject> {
    gateway_api(&ns.client, Some(&ns.name), "HTTPRoute")
}
