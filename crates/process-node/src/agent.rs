//! The node agent: registers a tainted Node, keeps its Lease and Ready condition fresh,
//! and runs the pods bound to it as local processes — each pod in a network namespace of
//! its own on 10.244.<block>.<n> (see `network.rs`), so every pod can use the same container
//! port and Services get real endpoints. Readiness and
//! liveness probes run for real; deletion runs each container's `preStop` sleep (the
//! only hook it knows), sends SIGTERM, waits out the grace period (counted from the
//! deletion, hooks included, as the kubelet does), then SIGKILL, and confirms the deletion.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::container;
use crate::network::{Network, PodNet};
use crate::probe::{self, Probe};

/// The taint pods must tolerate to land here.
pub const TAINT_KEY: &str = "cutover.dev/process-node";
const MANAGER: &str = "cutover-process-node";

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node name.
    pub node: String,
    /// Where image binaries are.
    pub bin_dir: PathBuf,
    /// Where container logs go.
    pub log_dir: PathBuf,
    /// Third octet of pod addresses (10.244.<block>.0/24).
    pub ip_block: u8,
}

struct Ctr {
    name: String,
    child: Child,
    restarts: i32,
    /// When the process exited and its exit code, until it is restarted.
    exited: Option<(Instant, i32)>,
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    ready: bool,
    streak: (u32, u32),
    live_failures: u32,
    next_probe: Instant,
    started: Instant,
    /// `lifecycle.preStop.sleep`: how long it keeps running after its pod's deletion
    /// before SIGTERM, so Services and proxies stop sending to it first.
    pre_stop: Duration,
    /// SIGTERM sent (the pod is being deleted).
    terminated: bool,
}

/// A container's `lifecycle.preStop.sleep.seconds` (zero without one).
fn pre_stop_sleep(c: &k8s_openapi::api::core::v1::Container) -> Duration {
    c.lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.sleep.as_ref())
        .and_then(|s| u64::try_from(s.seconds).ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

struct RunningPod {
    net: PodNet,
    containers: Vec<Ctr>,
    stopping_since: Option<Instant>,
    reported: Option<serde_json::Value>,
}

fn now_time() -> Time {
    Time(jiff::Timestamp::now())
}

async fn register(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": cfg.node, "labels": {
            "kubernetes.io/hostname": cfg.node, "kubernetes.io/os": "linux", "type": "process" } },
        "spec": { "taints": [{ "key": TAINT_KEY, "value": "true", "effect": "NoSchedule" }] }
    });
    nodes
        .patch(
            &cfg.node,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await?;
    Ok(())
}

async fn heartbeat(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let t = now_time();
    let status = json!({ "status": {
        "conditions": [{ "type": "Ready", "status": "True", "reason": "ProcessNodeReady",
            "message": "cutover-process-node is running", "lastHeartbeatTime": t, "lastTransitionTime": t }],
        "addresses": [{ "type": "InternalIP", "address": format!("10.244.{}.1", cfg.ip_block) }, { "type": "Hostname", "address": cfg.node }],
        "capacity": { "cpu": "32", "memory": "64Gi", "pods": "110" },
        "allocatable": { "cpu": "32", "memory": "64Gi", "pods": "110" },
        "nodeInfo": { "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "cutover-process-node",
            "bootID": "", "containerRuntimeVersion": "process://", "kernelVersion": "", "kubeProxyVersion": "",
            "machineID": "", "osImage": "local processes", "systemUUID": "" }
    }});
    nodes
        .patch_status(&cfg.node, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = json!({ "spec": { "holderIdentity": cfg.node, "leaseDurationSeconds": 40, "renewTime": MicroTime(jiff::Timestamp::now()) } });
    if leases.get_opt(&cfg.node).await?.is_none() {
        let mut lease: Lease = serde_json::from_value(json!({ "metadata": { "name": cfg.node } }))?;
        lease.spec = serde_json::from_value(renew["spec"].clone())?;
        leases.create(&PostParams::default(), &lease).await?;
    } else {
        leases
            .patch(&cfg.node, &PatchParams::default(), &Patch::Merge(&renew))
            .await?;
    }
    Ok(())
}

fn ports_of(c: &k8s_openapi::api::core::v1::Container) -> Vec<(String, i32)> {
    c.ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect()
}

fn start_pod(cfg: &Config, pod: &Pod, net: PodNet) -> RunningPod {
    let ip = net.ip.clone();
    let mut containers = Vec::new();
    for c in pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default()
    {
        let log = cfg.log_dir.join(format!(
            "{}_{}_{}.log",
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            c.name
        ));
        match container::spawn(pod, &c, &net, &cfg.bin_dir, &log) {
            Ok(child) => {
                let ports = ports_of(&c);
                let readiness = c
                    .readiness_probe
                    .as_ref()
                    .and_then(|p| Probe::from_spec(p, &ip, &ports));
                let liveness = c
                    .liveness_probe
                    .as_ref()
                    .and_then(|p| Probe::from_spec(p, &ip, &ports));
                let ready = readiness.is_none();
                containers.push(Ctr {
                    name: c.name.clone(),
                    child,
                    restarts: 0,
                    exited: None,
                    readiness,
                    liveness,
                    ready,
                    streak: (0, 0),
                    live_failures: 0,
                    next_probe: Instant::now(),
                    started: Instant::now(),
                    pre_stop: pre_stop_sleep(&c),
                    terminated: false,
                });
            }
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), container = %c.name, error = %e, "cannot start the container's binary")
            }
        }
    }
    tracing::info!(pod = %pod.name_any(), %ip, "started");
    RunningPod {
        net,
        containers,
        stopping_since: None,
        reported: None,
    }
}

/// The kubelet's crash-loop back-off: 10 s, doubling, at most 5 minutes.
fn restart_backoff(restarts: i32) -> Duration {
    Duration::from_secs(10u64 << restarts.clamp(0, 5)).min(Duration::from_secs(300))
}

async fn probe_pod(http: &reqwest::Client, cfg: &Config, pod: &Pod, rp: &mut RunningPod) {
    for ctr in &mut rp.containers {
        if ctr.exited.is_none()
            && let Ok(Some(status)) = ctr.child.try_wait()
        {
            // Exited: not ready; restarted after the back-off (restartPolicy Always).
            tracing::info!(pod = %pod.name_any(), container = %ctr.name, ?status, "container exited");
            ctr.exited = Some((Instant::now(), status.code().unwrap_or(137)));
            ctr.ready = false;
        }
        if let Some((at, _)) = ctr.exited {
            if at.elapsed() < restart_backoff(ctr.restarts) {
                continue;
            }
            if let Some(spec) = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == ctr.name))
            {
                let log = cfg.log_dir.join(format!(
                    "{}_{}_{}.log",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    ctr.name
                ));
                if let Ok(child) = container::spawn(pod, spec, &rp.net, &cfg.bin_dir, &log) {
                    ctr.child = child;
                    ctr.restarts += 1;
                    ctr.exited = None;
                    ctr.ready = ctr.readiness.is_none();
                    ctr.streak = (0, 0);
                    ctr.started = Instant::now();
                }
            }
            continue;
        }
        if Instant::now() < ctr.next_probe {
            continue;
        }
        if let Some(p) = ctr.readiness.clone()
            && ctr.started.elapsed() >= p.initial_delay
        {
            ctr.next_probe = Instant::now() + p.period;
            if probe::check(http, &p).await {
                ctr.streak = (ctr.streak.0 + 1, 0);
                if ctr.streak.0 >= p.success_threshold {
                    ctr.ready = true;
                }
            } else {
                ctr.streak = (0, ctr.streak.1 + 1);
                if ctr.streak.1 >= p.failure_threshold || !ctr.ready {
                    ctr.ready = false;
                }
            }
        }
        if let Some(p) = ctr.liveness.clone()
            && ctr.started.elapsed() >= p.initial_delay
        {
            if probe::check(http, &p).await {
                ctr.live_failures = 0;
            } else {
                ctr.live_failures += 1;
                if ctr.live_failures >= p.failure_threshold {
                    container::signal(&ctr.child, Signal::SIGKILL);
                    ctr.live_failures = 0;
                }
            }
        }
    }
}

fn status_of(rp: &RunningPod, pod: &Pod, host_ip: &str) -> serde_json::Value {
    let all_ready = !rp.containers.is_empty() && rp.containers.iter().all(|c| c.ready);
    let flag = |b: bool| if b { "True" } else { "False" };
    let t = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now_time);
    let cond =
        |ty: &str, b: bool| json!({ "type": ty, "status": flag(b), "lastTransitionTime": t });
    let containers: Vec<serde_json::Value> = rp
        .containers
        .iter()
        .map(|c| json!({
            "name": c.name, "ready": c.ready, "restartCount": c.restarts, "started": c.exited.is_none(),
            "image": c.name, "imageID": "", "containerID": format!("process://{}", c.child.id()),
            "state": match c.exited {
                None => json!({ "running": { "startedAt": t } }),
                Some((_, code)) => json!({ "waiting": { "reason": "CrashLoopBackOff",
                    "message": format!("the process exited with code {code}; restarting after the back-off") } }),
            }
        }))
        .collect();
    json!({ "status": {
        "phase": "Running", "hostIP": host_ip, "hostIPs": [{ "ip": host_ip }],
        "podIP": rp.net.ip, "podIPs": [{ "ip": rp.net.ip }], "startTime": t,
        "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", all_ready), cond("Ready", all_ready)],
        "containerStatuses": containers,
    }})
}

fn stop_all(running: &mut BTreeMap<String, RunningPod>, network: &Network) {
    for rp in running.values_mut() {
        rp.containers
            .iter()
            .for_each(|c| container::signal(&c.child, Signal::SIGTERM));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for rp in running.values_mut() {
        for c in &mut rp.containers {
            while matches!(c.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            container::signal(&c.child, Signal::SIGKILL);
            let _ = c.child.wait();
        }
    }
    running.clear();
    network.teardown();
}

/// Run until SIGTERM or Ctrl-C; then stop every pod process it started.
pub async fn run(client: Client, cfg: Config) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut running: BTreeMap<String, RunningPod> = BTreeMap::new();
    let mut network = Network::setup(cfg.ip_block).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the pod network (the process node needs root, or CAP_NET_ADMIN, and iproute2): {e}"
        )
    })?;
    let result = tokio::select! {
        r = serve(&client, &cfg, &mut running, &mut network) => r,
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    stop_all(&mut running, &network);
    tracing::info!("stopped every pod process");
    result
}

async fn serve(
    client: &Client,
    cfg: &Config,
    running: &mut BTreeMap<String, RunningPod>,
    network: &mut Network,
) -> anyhow::Result<()> {
    let client = client.clone();
    let cfg = cfg.clone();
    register(&client, &cfg).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let pods: Api<Pod> = Api::all(client.clone());
    let host_ip = network.gateway();
    let mut last_beat = Instant::now() - Duration::from_secs(60);
    loop {
        if last_beat.elapsed() >= Duration::from_secs(5) {
            if let Err(e) = heartbeat(&client, &cfg).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
            last_beat = Instant::now();
        }
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", cfg.node));
        let list = match pods.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut seen = Vec::new();
        for pod in &list {
            let uid = pod.uid().unwrap_or_default();
            seen.push(uid.clone());
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let grace = Duration::from_secs(
                    pod.metadata
                        .deletion_grace_period_seconds
                        .and_then(|g| u64::try_from(g).ok())
                        .unwrap_or(30),
                );
                let done = match running.get_mut(&uid) {
                    None => true,
                    Some(rp) => {
                        let since = *rp.stopping_since.get_or_insert_with(Instant::now);
                        for c in rp.containers.iter_mut().filter(|c| !c.terminated) {
                            if since.elapsed() >= c.pre_stop.min(grace) {
                                container::signal(&c.child, Signal::SIGTERM);
                                c.terminated = true;
                            }
                        }
                        if since.elapsed() >= grace {
                            rp.containers
                                .iter()
                                .for_each(|c| container::signal(&c.child, Signal::SIGKILL));
                        }
                        rp.containers
                            .iter_mut()
                            .all(|c| matches!(c.child.try_wait(), Ok(Some(_))))
                    }
                };
                if done {
                    if let Some(rp) = running.remove(&uid) {
                        network.remove_pod(&rp.net);
                    }
                    let _ = api
                        .delete(
                            &pod.name_any(),
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::default()
                            },
                        )
                        .await;
                }
                continue;
            }
            if !running.contains_key(&uid) {
                let net = match network.add_pod() {
                    Ok(net) => net,
                    Err(e) => {
                        tracing::warn!(pod = %pod.name_any(), error = %e, "cannot create the pod's network");
                        continue;
                    }
                };
                running.insert(uid.clone(), start_pod(&cfg, pod, net));
            }
            if let Some(rp) = running.get_mut(&uid) {
                probe_pod(&http, &cfg, pod, rp).await;
                let status = status_of(rp, pod, &host_ip);
                if rp.reported.as_ref() != Some(&status) {
                    match api
                        .patch_status(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&status),
                        )
                        .await
                    {
                        Ok(_) => rp.reported = Some(status),
                        Err(e) => {
                            tracing::warn!(pod = %pod.name_any(), error = %e, "status update failed")
                        }
                    }
                }
            }
        }
        // Pods gone from the API (force-deleted): stop their processes.
        running.retain(|uid, rp| {
            let keep = seen.contains(uid);
            if !keep {
                rp.containers.iter_mut().for_each(|c| {
                    container::signal(&c.child, Signal::SIGKILL);
                    let _ = c.child.wait();
                });
                network.remove_pod(&rp.net);
            }
            keep
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pre_stop_sleep_delays_the_sigterm_and_nothing_else_does() {
        let container = |lifecycle: serde_json::Value| -> k8s_openapi::api::core::v1::Container {
            serde_json::from_value(json!({ "name": "app", "lifecycle": lifecycle }))
                .expect("a container")
        };
        assert_eq!(
            pre_stop_sleep(&container(
                json!({ "preStop": { "sleep": { "seconds": 2 } } })
            )),
            Duration::from_secs(2)
        );
        assert_eq!(
            pre_stop_sleep(&container(
                json!({ "preStop": { "exec": { "command": ["true"] } } })
            )),
            Duration::ZERO
        );
        assert_eq!(pre_stop_sleep(&container(json!({}))), Duration::ZERO);
        assert_eq!(
            pre_stop_sleep(&container(
                json!({ "preStop": { "sleep": { "seconds": -1 } } })
            )),
            Duration::ZERO
        );
    }
}
