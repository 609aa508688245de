//! `cargo xtask bench scale`: the controller under many BlueGreenDeployments.
//!
//! On a local cluster of its own it measures, in one run:
//! 1. baseline: N plain Deployments (1 replica each) until all are available — what the
//!    control plane itself needs for the same pods;
//! 2. N BlueGreenDeployments until all are Healthy (first rollout);
//! 3. a release of all N (new image) until all are Healthy on green;
//!
//! and prints throughput, the ratio to the baseline, and the controller's resident memory
//! (current and peak) from /proc.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_api::BlueGreenDeployment;
use cutover_local_cluster as local;
use cutover_local_cluster::process::ChildGuard;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How many BlueGreenDeployments (and baseline Deployments).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Keep the bench cluster afterwards.
    #[arg(long)]
    pub keep_cluster: bool,
    /// Seconds of idle (nothing changes) during which API requests are counted.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// Skip the plain-Deployment baseline (no ratios): for the controller's memory and
    /// requests alone, in a third less time.
    #[arg(long)]
    pub no_baseline: bool,
    /// Spread the objects over this many namespaces (`baseline-<k>`, `bench-<k>`), as in a
    /// cluster shared by many teams; with 1, all are in `baseline` and `bench`.
    /// kube-controller-manager matches every pod change against every Service of its
    /// namespace, so the count per namespace, not the total, sets that cost.
    #[arg(long, default_value_t = 1)]
    pub namespaces: usize,
}

/// The namespace of object `i` of `prefix` when spread over `k` namespaces.
fn namespace_of(prefix: &str, i: usize, k: usize) -> String {
    if k <= 1 {
        prefix.to_string()
    } else {
        format!("{prefix}-{}", i % k)
    }
}

/// The label on the baseline's Deployments, to tell them from the colors'.
const BASELINE_LABEL: &str = "cutover.dev/bench=baseline";

pub const CLUSTER: &str = "bench";

/// How long one phase may take: the control plane makes about 10 objects' pods a second
/// (kube-controller-manager's default client rate), with room to spare.
fn phase_timeout(n: usize) -> Duration {
    Duration::from_secs(600).max(Duration::from_millis(500) * u32::try_from(n).unwrap_or(u32::MAX))
}

/// `child` killed (SIGKILL, no grace) when dropped, so a failing benchmark leaves nothing
/// running.
pub fn kill_on_drop(child: std::process::Child) -> ChildGuard {
    ChildGuard::new(child, Duration::ZERO)
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based), in clock ticks.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds each control-plane process has used so far, by component.
fn plane_cpu(state: &local::ClusterState) -> BTreeMap<String, f64> {
    state
        .processes
        .iter()
        .map(|p| (p.component.clone(), cpu_seconds(p.pid)))
        .collect()
}

/// The controller's API requests so far, by `verb resource`.
async fn api_requests(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = cutover_test_support::e2e::http_get(port, "/metrics")
        .await
        .context("the controller's /metrics")?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("cutover_api_requests_total{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some((
                format!("{} {}", label("verb")?, label("resource")?),
                value.parse::<f64>().ok()?,
            ))
        })
        .collect())
}

/// Requests between two readings, by kind, largest first.
fn requests_between(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = b
        .iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    out.sort_by(|x, y| y.1.total_cmp(&x.1));
    out
}

/// Leader election renews its Lease on a timer whatever the number of objects.
fn is_lease(kind: &str) -> bool {
    kind.ends_with("coordination.k8s.io/leases")
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Wait until `n` objects of `api` satisfy `ok`, counted from one watch as events arrive:
/// a LIST every poll (the first version of this benchmark) cost this process a core at
/// thousands of objects, taking CPU from the control plane it measures.
async fn wait_all<K>(
    what: &str,
    api: Api<K>,
    config: kube::runtime::watcher::Config,
    n: usize,
    timeout: Duration,
    ok: impl Fn(&K) -> bool,
) -> anyhow::Result<Duration>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use futures::TryStreamExt as _;
    use kube::runtime::watcher::{self, Event};
    let start = Instant::now();
    let mut state: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let mut done = 0usize;
    let mut relist: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    let stream = watcher::watcher(api, config);
    let mut stream = std::pin::pin!(stream);
    let counting = async {
        while let Some(event) = stream.try_next().await? {
            match event {
                Event::Apply(o) => {
                    let now = ok(&o);
                    let was = state.insert(o.meta().name.clone().unwrap_or_default(), now);
                    done = done + usize::from(now) - usize::from(was == Some(true));
                }
                Event::Delete(o) => {
                    let was = state.remove(o.meta().name.as_deref().unwrap_or_default());
                    done -= usize::from(was == Some(true));
                }
                Event::Init => relist.clear(),
                Event::InitApply(o) => {
                    relist.insert(o.meta().name.clone().unwrap_or_default(), ok(&o));
                }
                Event::InitDone => {
                    state = std::mem::take(&mut relist);
                    done = state.values().filter(|v| **v).count();
                }
            }
            if done >= n {
                return Ok::<_, anyhow::Error>(start.elapsed());
            }
        }
        bail!("{what}: the watch ended")
    };
    match tokio::time::timeout(timeout, counting).await {
        Ok(result) => result,
        Err(_) => bail!("{what}: only {done}/{n} after {timeout:?}"),
    }
}

fn bgd(i: usize, image: &str) -> anyhow::Result<BlueGreenDeployment> {
    let name = format!("svc-{i:04}");
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "BlueGreenDeployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app", "image": image }] } },
            "service": { "port": 80 },
            // The control plane makes about 4 objects' pods a second: at thousands, a
            // release waits longer than the default 600 s deadline for its new color, which
            // would end it Degraded (5,000: 1,873 did) rather than measure it.
            "strategy": { "progressDeadlineSeconds": 7200 }
        }
    }))?)
}

fn plain(i: usize) -> anyhow::Result<Deployment> {
    let name = format!("plain-{i:04}");
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "labels": { "cutover.dev/bench": "baseline" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } }, "spec": { "containers": [{ "name": "app", "image": "x:1" }] } }
        }
    }))?)
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    api.patch(
        name,
        &PatchParams::apply("cutover-bench").force(),
        &Patch::Apply(&ns),
    )
    .await?;
    Ok(())
}

/// Build the controller (release), start the bench cluster with `nodes` kwok nodes and
/// install the CRDs: the controller binary, the cluster, a client.
pub async fn prepare(nodes: u32) -> anyhow::Result<(PathBuf, local::ClusterState, kube::Client)> {
    crate::test::cargo(&["build", "--release", "-p", "cutover-controller"], &[])?;
    let bin = local::workspace_root().join("target/release/cutover-controller");
    let state = local::up(&local::UpOptions {
        name: CLUSTER.into(),
        nodes,
        process_node: None,
        real_node: None,
    })
    .await?;
    let client = local::client_for(&state.kubeconfig).await?;
    cutover_test_support::controller::install_crds(&client).await;
    Ok((bin, state, client))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (n, k) = (args.count, args.namespaces.max(1));
    let _ = local::down(CLUSTER);
    let (bin, state, client) = prepare(2).await?;
    for i in 0..k.min(n.max(1)) {
        namespace(&client, &namespace_of("baseline", i, k)).await?;
        namespace(&client, &namespace_of("bench", i, k)).await?;
    }
    let plane_start = plane_cpu(&state);

    // 1. Baseline: the control plane alone.
    let baseline = if args.no_baseline {
        None
    } else {
        let started = Instant::now();
        for i in 0..n {
            let deployments: Api<Deployment> =
                Api::namespaced(client.clone(), &namespace_of("baseline", i, k));
            deployments
                .create(&PostParams::default(), &plain(i)?)
                .await?;
        }
        let baseline = started.elapsed()
            + wait_all(
                "baseline Deployments available",
                Api::<Deployment>::all(client.clone()),
                kube::runtime::watcher::Config::default().labels(BASELINE_LABEL),
                n,
                phase_timeout(n),
                |d: &Deployment| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1),
            )
            .await?;
        eprintln!("baseline: {n} Deployments available in {baseline:?}");
        Some(baseline)
    };
    let plane_baseline = plane_cpu(&state);

    // 2. The controller rolls out N BlueGreenDeployments.
    let log = local::state_dir(CLUSTER)
        .join("logs")
        .join("cutover-controller.log");
    let port = cutover_test_support::e2e::free_port();
    let mut controller = std::process::Command::new(&bin);
    if k == 1 {
        controller.args(["--namespace", "bench"]);
    }
    let child = controller
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--identity",
            "bench",
            "--lease-namespace",
            &namespace_of("bench", 0, k),
        ])
        .env("KUBECONFIG", &state.kubeconfig)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting cutover-controller")?;
    let mut child = kill_on_drop(child);
    let pid = child.id();
    let bgds: Api<BlueGreenDeployment> = Api::all(client.clone());
    let bgds_of = |i: usize| -> Api<BlueGreenDeployment> {
        Api::namespaced(client.clone(), &namespace_of("bench", i, k))
    };
    let healthy_on = |color: cutover_api::Color| {
        move |b: &BlueGreenDeployment| {
            b.status.as_ref().is_some_and(|s| {
                s.phase == Some(cutover_api::Phase::Healthy) && s.active_color == Some(color)
            })
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while cutover_test_support::e2e::http_get(port, "/metrics")
        .await
        .is_none()
    {
        if Instant::now() > deadline {
            bail!("the controller did not serve /metrics on 127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (requests_start, cpu_start) = (api_requests(port).await?, cpu_seconds(pid));
    let started = Instant::now();
    for i in 0..n {
        bgds_of(i)
            .create(&PostParams::default(), &bgd(i, "svc:1")?)
            .await?;
    }
    let rollout = started.elapsed()
        + wait_all(
            "first rollouts",
            bgds.clone(),
            kube::runtime::watcher::Config::default(),
            n,
            phase_timeout(n),
            healthy_on(cutover_api::Color::Blue),
        )
        .await?;
    let (rss_after_rollout, _) = rss_kib(pid);
    let plane_rollout = plane_cpu(&state);
    let (requests_rollout, cpu_rollout) = (api_requests(port).await?, cpu_seconds(pid));
    eprintln!("rollout: {n} BlueGreenDeployments Healthy in {rollout:?}");

    // 3. Release all of them.
    let started = Instant::now();
    for i in 0..n {
        let patch = serde_json::json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "svc:2" }] } } } });
        bgds_of(i)
            .patch(
                &format!("svc-{i:04}"),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
    }
    let release = started.elapsed()
        + wait_all(
            "releases",
            bgds.clone(),
            kube::runtime::watcher::Config::default(),
            n,
            phase_timeout(n),
            healthy_on(cutover_api::Color::Green),
        )
        .await?;
    let (requests_release, cpu_release) = (api_requests(port).await?, cpu_seconds(pid));
    let plane_release = plane_cpu(&state);
    eprintln!(
        "release: {n} BlueGreenDeployments Healthy on green in {release:?}; idle for {}s",
        args.idle_seconds
    );
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let requests_idle = api_requests(port).await?;
    let (rss, peak) = rss_kib(pid);
    let _ = child.stop();
    let total = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
        requests_between(a, b).iter().map(|(_, v)| v).sum::<f64>()
    };
    let per = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| total(a, b) / n as f64;
    let idle = requests_between(&requests_release, &requests_idle);
    let idle_objects: f64 = idle
        .iter()
        .filter(|(k, _)| !is_lease(k))
        .map(|(_, v)| v)
        .sum();
    let idle_lease: f64 = idle
        .iter()
        .filter(|(k, _)| is_lease(k))
        .map(|(_, v)| v)
        .sum();

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    println!();
    let spread = if k > 1 {
        format!(", {k} namespaces")
    } else {
        String::new()
    };
    println!(
        "| measurement ({n} objects{spread}, 1 pod per color) | time | per second | vs baseline |"
    );
    println!("|---|---|---|---|");
    let ratio = |d: Duration| {
        baseline.map_or_else(
            || "—".to_string(),
            |b| format!("{:.2}", d.as_secs_f64() / b.as_secs_f64()),
        )
    };
    if let Some(baseline) = baseline {
        println!(
            "| baseline: plain Deployments available | {:.1} s | {:.1} | 1.00 |",
            baseline.as_secs_f64(),
            per_s(baseline)
        );
    }
    println!(
        "| BlueGreenDeployments Healthy (first rollout) | {:.1} s | {:.1} | {} |",
        rollout.as_secs_f64(),
        per_s(rollout),
        ratio(rollout)
    );
    println!(
        "| releases to green Healthy (new image on all) | {:.1} s | {:.1} | {} |",
        release.as_secs_f64(),
        per_s(release),
        ratio(release)
    );
    println!(
        "| controller RSS after rollout / after release / peak | {:.1} / {:.1} / {:.1} MiB | | |",
        rss_after_rollout as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| controller API requests per BlueGreenDeployment: rollout / release / {} s idle | {:.1} / {:.1} / {:.2} | | |",
        args.idle_seconds,
        per(&requests_start, &requests_rollout),
        per(&requests_rollout, &requests_release),
        per(&requests_release, &requests_idle)
    );
    println!(
        "| of the idle requests: the leader Lease / everything else | {idle_lease:.0} / {idle_objects:.0} | | |"
    );
    println!(
        "| controller CPU seconds: rollout / release | {:.1} / {:.1} | | |",
        cpu_rollout - cpu_start,
        cpu_release - cpu_rollout
    );
    for (component, end) in &plane_release {
        let at = |m: &BTreeMap<String, f64>| m.get(component).copied().unwrap_or(0.0);
        println!(
            "| {component} CPU seconds: baseline / rollout / release | {:.1} / {:.1} / {:.1} | | |",
            at(&plane_baseline) - at(&plane_start),
            at(&plane_rollout) - at(&plane_baseline),
            end - at(&plane_rollout)
        );
    }
    println!();
    for (phase, a, b) in [
        ("rollout", &requests_start, &requests_rollout),
        ("release", &requests_rollout, &requests_release),
    ] {
        let kinds: Vec<String> = requests_between(a, b)
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v / n as f64))
            .collect();
        println!(
            "requests per object during the {phase}: {}",
            kinds.join(", ")
        );
    }
    if !args.keep_cluster {
        local::down(CLUSTER)?;
    }
    Ok(())
}
