//! `cargo xtask demo`: the README's first command. On a local cluster of its own (built the
//! first time), with live HTTP traffic the whole time:
//!
//! 1. demo-app v1 runs as real processes on the process-backed node behind a
//!    BlueGreenDeployment, a Gateway served by `cutover-router`, and an HTTPRoute;
//! 2. v2 (good) is released with weighted steps and an analysis of its error ratio, read by
//!    a real Prometheus from the router's per-backend metrics, and goes to 100 %;
//! 3. v3 answers 20 % of its requests with 500s: the analysis catches it and the release is
//!    aborted, traffic back on v2, without anyone touching anything;
//! 4. a summary per release: duration, requests, failed requests, and for v3 the time from
//!    its first error to the rollback.
//!
//! Exits 0 when v1→v2 failed no request and v3 was rolled back on its own; stops every
//! process it started (also on Ctrl-C) unless `--keep`.
//!
//! With `--real-node` the same story runs as production would: the pods are containers of
//! the locally built images on the real node, and the controller and the router are the
//! Helm chart's, in their pods, reached through their Services.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_api::{BlueGreenDeployment, Color, Phase};
use cutover_local_cluster as local;
use cutover_local_cluster::process::{self, Stopped};
use cutover_test_support::e2e::{self, RouterProcess, table_backends};
use cutover_test_support::load::{Load, Report};
use cutover_test_support::prometheus::Prometheus;
use cutover_test_support::upstream::{self, GATEWAY_API};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave everything running afterwards (prints how to stop it).
    #[arg(long)]
    pub keep: bool,
    /// Shorter pauses and analysis windows (for the integration test).
    #[arg(long)]
    pub fast: bool,
    /// Run on a real node (containerd, kubelet), with the controller and the router
    /// installed by the Helm chart from the locally built images.
    #[arg(long)]
    pub real_node: bool,
}

pub const CLUSTER: &str = "demo";
/// The cluster of `--real-node`.
pub const REAL_CLUSTER: &str = "demo-real";
const NS: &str = "default";

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
struct Child(std::process::Child, &'static str);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(Stopped::Killed(_)) = process::stop(&mut self.0, Duration::from_secs(5)) {
            // Not eprintln!: stderr may be gone (a closed pipe) while cleaning up.
            let _ = writeln!(std::io::stderr(), "    stopped {}", self.1);
        }
    }
}

fn ensure_prometheus() -> anyhow::Result<()> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .any(|p| Path::new(p).exists());
    if found {
        return Ok(());
    }
    eprintln!("==> Prometheus is missing: installing Debian's `prometheus` package (apt-get)");
    let ok = Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "prometheus",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("could not install Prometheus; run `apt-get install prometheus` and try again");
    }
    Ok(())
}

/// The pods of the demo app `version`: processes on the process node, or containers on
/// the real node.
fn pod_spec(real_node: bool, version: &str) -> serde_json::Value {
    if real_node {
        e2e::real_node_demo_pod_spec(version)
    } else {
        e2e::demo_pod_spec(local::PROCESS_NODE, version)
    }
}

/// The BlueGreenDeployment, its steps and analysis.
fn shop(version: &str, error_rate: f64, args: &DemoArgs) -> serde_json::Value {
    let pause = if args.fast { "2s" } else { "10s" };
    let mut spec = pod_spec(args.real_node, version);
    if let Some(env) = spec["containers"][0]["env"].as_array_mut() {
        env.push(json!({ "name": "CUTOVER_DEMO_ERROR_RATE", "value": error_rate.to_string() }));
    }
    json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } }, "spec": spec },
            "service": { "port": 80, "targetPort": 8080 },
            "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
            "strategy": {
                "standby": { "mode": "Warm" },
                "steps": [
                    { "setWeight": 20 },
                    { "pause": { "duration": pause } },
                    { "analysis": { "templates": [{ "templateName": "error-ratio" }] } },
                    { "setWeight": 50 },
                    { "pause": { "duration": pause } },
                    { "analysis": { "templates": [{ "templateName": "error-ratio" }] } }
                ]
            }
        }
    })
}

/// The analysis: the new color's share of 5xx answers, from the router's metrics.
fn template(prometheus: &str, fast: bool) -> serde_json::Value {
    let backend = "{{args.namespace}}/{{args.newService}}:80";
    json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": { "name": "error-ratio" },
        "spec": { "metrics": [{
            "name": "error-ratio",
            "interval": if fast { "1s" } else { "2s" },
            "count": if fast { 3 } else { 5 },
            "successCondition": "result < 0.05",
            "failureCondition": "result >= 0.05",
            "failureLimit": 0,
            "provider": { "prometheus": {
                "address": prometheus,
                "query": format!(
                    "sum(rate(cutover_router_requests_total{{backend=\"{backend}\",code=\"5xx\"}}[5s])) / sum(rate(cutover_router_requests_total{{backend=\"{backend}\"}}[5s]))"
                )
            } }
        }] }
    })
}

/// One release's outcome.
struct Outcome {
    name: &'static str,
    seconds: f64,
    report: Report,
    rollback_seconds: Option<f64>,
}

async fn wait_phase(
    api: &Api<BlueGreenDeployment>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&BlueGreenDeployment) -> bool,
) -> anyhow::Result<BlueGreenDeployment> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let b = api.get("shop").await?;
        let msg = b
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default();
        if msg != last {
            eprintln!("    {:>5.1}s  {msg}", started.elapsed().as_secs_f64());
            last = msg;
        }
        if pred(&b) {
            return Ok(b);
        }
        if started.elapsed() > timeout {
            bail!("{what}: not reached within {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase_is(b: &BlueGreenDeployment, p: Phase, color: Color) -> bool {
    let st = b.status.clone().unwrap_or_default();
    st.phase == Some(p)
        && st.active_color == Some(color)
        && st.observed_generation >= b.metadata.generation
}

async fn release(
    api: &Api<BlueGreenDeployment>,
    version: &str,
    error_rate: f64,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let spec = shop(version, error_rate, args);
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "template": spec["spec"]["template"] } })),
    )
    .await?;
    Ok(())
}

async fn scenario(
    args: &DemoArgs,
    state: &local::ClusterState,
    guards: &mut Vec<Child>,
    kept: &mut Vec<u32>,
) -> anyhow::Result<Vec<Outcome>> {
    let client = local::client_for(&state.kubeconfig).await?;
    eprintln!("==> installing the Cutover CRDs and Gateway API v1.6 (from its Go module)");
    cutover_test_support::controller::install_crds(&client).await;
    upstream::install_crds(&client, GATEWAY_API).await;

    let stack = if args.real_node {
        in_cluster(&client, state).await?
    } else {
        local_processes(state, guards).await?
    };
    let prometheus = &stack.prometheus;
    // Start from nothing the demo made before.
    let api: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), NS);
    if api.get_opt("shop").await?.is_some() {
        api.delete("shop", &DeleteParams::default()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while api.get_opt("shop").await?.is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    e2e::gateway(&client, NS, stack.gateway_port).await;
    e2e::blue_route(&client, NS, "shop").await;
    let templates: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "cutover.dev",
            "v1alpha1",
            "AnalysisTemplate",
        )),
    );
    templates
        .patch(
            "error-ratio",
            &PatchParams::apply("cutover-demo").force(),
            &Patch::Apply(template(&prometheus.url(), args.fast)),
        )
        .await?;
    let bgd: BlueGreenDeployment = serde_json::from_value(shop("v1", 0.0, args))?;
    eprintln!(
        "==> v1: BlueGreenDeployment `shop`, 2 pods of cutover-demo-app {}",
        if args.real_node {
            format!("as containers on {}", local::REAL_NODE)
        } else {
            format!("as processes on {}", local::PROCESS_NODE)
        }
    );
    api.create(&PostParams::default(), &bgd).await?;
    wait_phase(&api, "v1 Healthy on blue", Duration::from_secs(120), |b| {
        phase_is(b, Phase::Healthy, Color::Blue)
    })
    .await?;
    e2e::wait_routes_at(
        &stack.routers,
        "v1's endpoints",
        Duration::from_secs(60),
        |r| {
            table_backends(r)
                .iter()
                .any(|(n, _, eps)| n.ends_with("/shop-blue:80") && eps.len() == 2)
        },
    )
    .await;

    let url = stack.url.clone();
    eprintln!("==> load: 4 clients on {url} the whole time");
    eprintln!(
        "==> watch along in another terminal (or `kubectl cutover get shop -w` with target/debug on PATH):\n    target/debug/kubectl-cutover get shop -w --kubeconfig {} -n {NS}",
        state.kubeconfig.display()
    );
    let load = Load::start(&url, 4, Duration::from_secs(5), Duration::from_secs(1800));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut outcomes = Vec::new();
    eprintln!("==> v2 (good): 20 % → analysis → 50 % → analysis → 100 %");
    let before = load.snapshot().await;
    let started = Instant::now();
    release(&api, "v2", 0.0, args).await?;
    wait_phase(&api, "v2 Healthy on green", Duration::from_secs(300), |b| {
        phase_is(b, Phase::Healthy, Color::Green)
    })
    .await?;
    outcomes.push(Outcome {
        name: "v1 → v2 (good)",
        seconds: started.elapsed().as_secs_f64(),
        report: load.snapshot().await.since(&before),
        rollback_seconds: None,
    });

    eprintln!("==> v3 (20 % errors): the analysis must catch it and send traffic back to v2");
    let before = load.snapshot().await;
    let started = Instant::now();
    release(&api, "v3", 0.2, args).await?;
    // The first error a client sees from v3, then the rollback: all traffic on green again.
    let mut first_error: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = String::new();
    let rolled_back = loop {
        let now = load.snapshot().await.since(&before);
        if first_error.is_none() && now.failed() > 0 {
            first_error = Some(Instant::now());
            eprintln!(
                "    {:>5.1}s  first failed request from v3",
                started.elapsed().as_secs_f64()
            );
        }
        let b = api.get("shop").await?;
        let st = b.status.clone().unwrap_or_default();
        let msg = st.message.clone().unwrap_or_default();
        if msg != last {
            eprintln!("    {:>5.1}s  {msg}", started.elapsed().as_secs_f64());
            last = msg;
        }
        if st.phase == Some(Phase::Degraded) && st.abort && st.active_color == Some(Color::Green) {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("v3 was not rolled back within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Traffic is back when the router no longer sends to v3's color.
    e2e::wait_routes_at(
        &stack.routers,
        "all traffic back on v2",
        Duration::from_secs(30),
        |r| {
            table_backends(r)
                .iter()
                .all(|(n, w, _)| !n.ends_with("/shop-blue:80") || *w == 0)
        },
    )
    .await;
    let back = Instant::now().max(rolled_back);
    tokio::time::sleep(Duration::from_secs(2)).await;
    outcomes.push(Outcome {
        name: "v2 → v3 (20 % errors)",
        seconds: started.elapsed().as_secs_f64(),
        report: load.snapshot().await.since(&before),
        rollback_seconds: first_error.map(|f| back.duration_since(f).as_secs_f64()),
    });
    let total = load.stop().await;
    eprintln!("==> load stopped: {} requests in all", total.total);
    if args.keep {
        kept.extend(stack.prometheus.pid());
        kept.extend(stack.router.as_ref().map(RouterProcess::pid));
        std::mem::forget(stack);
    }
    Ok(outcomes)
}

/// What the scenario talks to, wherever Cutover runs.
struct Stack {
    /// Prometheus scraping the routers (queried by the analysis).
    prometheus: Prometheus,
    /// The routers' admin addresses (their tables).
    routers: Vec<std::net::SocketAddr>,
    /// The router as a local process, if it is one.
    router: Option<RouterProcess>,
    /// The Gateway's listener port.
    gateway_port: u16,
    /// Where the clients send their requests.
    url: String,
}

/// The router, the controller and Prometheus as local processes; pods on the process node.
async fn local_processes(
    state: &local::ClusterState,
    guards: &mut Vec<Child>,
) -> anyhow::Result<Stack> {
    let bins = local::workspace_root().join("target").join("debug");
    let logs = local::state_dir(CLUSTER).join("logs");
    let spawn = |bin: &str, args: &[&str], log: &str| -> anyhow::Result<std::process::Child> {
        let out = std::fs::File::create(logs.join(log))?;
        Command::new(bins.join(bin))
            .args(args)
            .env("KUBECONFIG", &state.kubeconfig)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {bin}"))
    };
    let router = RouterProcess::start_with(&bins, NS, &state.kubeconfig).await;
    eprintln!(
        "==> cutover-router running (metrics: http://127.0.0.1:{}/metrics)",
        router.admin_port
    );
    guards.push(Child(
        spawn(
            "cutover-controller",
            &[
                "--namespace",
                NS,
                "--http-addr",
                "127.0.0.1:0",
                "--identity",
                "demo",
            ],
            "cutover-controller.log",
        )?,
        "cutover-controller",
    ));
    eprintln!(
        "==> cutover-controller running (log: {})",
        logs.join("cutover-controller.log").display()
    );
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", router.admin_port).parse()?;
    let prometheus = Prometheus::start(&[admin]).await;
    eprintln!(
        "==> Prometheus running at {} (scraping the router every second)",
        prometheus.url()
    );
    let gateway_port = e2e::free_port();
    Ok(Stack {
        prometheus,
        routers: vec![admin],
        router: Some(router),
        gateway_port,
        url: format!("http://127.0.0.1:{gateway_port}/"),
    })
}

/// The Helm chart (controller and router from the locally built images) on the real node;
/// Prometheus on the bridge address, where the controller's pods reach it.
async fn in_cluster(client: &kube::Client, state: &local::ClusterState) -> anyhow::Result<Stack> {
    let helm = local::ensure_helm()?;
    let chart = local::workspace_root()
        .join("deploy")
        .join("helm")
        .join("cutover");
    eprintln!("==> helm install cutover (controller and router, the images just built)");
    let out = Command::new(&helm)
        .args(["upgrade", "--install", "cutover"])
        .arg(&chart)
        .args([
            "-n",
            "cutover-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "300s",
        ])
        .env("KUBECONFIG", &state.kubeconfig)
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), "cutover-system");
    let routers: Vec<std::net::SocketAddr> = pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=cutover-router"))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.status?.pod_ip)
        .map(|ip| format!("{ip}:9091").parse())
        .collect::<Result<_, _>>()?;
    let bridge: std::net::IpAddr = local::host::BRIDGE_IP.parse()?;
    let prometheus = Prometheus::start_on(bridge, &routers).await;
    eprintln!(
        "==> Prometheus running at {} (scraping {} router pods every second)",
        prometheus.url(),
        routers.len()
    );
    let service: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "cutover-system");
    let ip = service
        .get("cutover-router")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the router Service's ClusterIP")?;
    Ok(Stack {
        prometheus,
        routers,
        router: None,
        // The chart's router Service sends port 80 to the pods' 8080.
        gateway_port: 8080,
        url: format!("http://{ip}/"),
    })
}

fn summary(outcomes: &[Outcome]) -> bool {
    println!();
    println!(
        "{:<24} {:>9} {:>10} {:>8} {:>22}",
        "release", "duration", "requests", "failed", "first error→rollback"
    );
    for o in outcomes {
        println!(
            "{:<24} {:>8.1}s {:>10} {:>8} {:>22}",
            o.name,
            o.seconds,
            o.report.total,
            o.report.failed(),
            o.rollback_seconds
                .map_or("-".to_string(), |s| format!("{s:.1}s"))
        );
    }
    let good = outcomes
        .first()
        .is_some_and(|o| o.report.failed() == 0 && o.report.total > 0);
    let caught = outcomes
        .get(1)
        .is_some_and(|o| o.rollback_seconds.is_some());
    println!();
    println!(
        "v1 → v2 without a failed request: {}; v3 rolled back on its own: {}",
        if good { "yes" } else { "NO" },
        if caught { "yes" } else { "NO" }
    );
    good && caught
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.real_node {
        crate::test::install_packages()?;
    } else if let Some(why) = local::process_node_unsupported() {
        bail!("the demo runs pods as local processes and {why}");
    }
    ensure_prometheus()?;
    let cluster = if args.real_node {
        REAL_CLUSTER
    } else {
        CLUSTER
    };
    eprintln!(
        "==> building the binaries (cutover-controller, cutover-router, cutover-process-node, cutover-demo-app, kubectl-cutover)"
    );
    crate::test::cargo(
        &[
            "build",
            "-p",
            "cutover-controller",
            "-p",
            "cutover-router",
            "-p",
            "cutover-process-node",
            "-p",
            "cutover-demo-app",
            "-p",
            "kubectl-cutover",
        ],
        &[],
    )?;
    eprintln!(
        "==> starting the local cluster `{cluster}` (the first run builds Kubernetes from its Go modules: 10-30 min)"
    );
    let options = if args.real_node {
        eprintln!("==> building the images (buildah) for the real node");
        local::UpOptions {
            name: cluster.into(),
            nodes: 0,
            process_node: None,
            real_node: Some(crate::cluster::real_node_options(true)?),
        }
    } else {
        local::UpOptions {
            name: cluster.into(),
            nodes: 1,
            process_node: Some(local::workspace_root().join("target").join("debug")),
            real_node: None,
        }
    };
    let up = local::up(&options);
    let state = tokio::select! {
        r = up => r.context("starting the demo cluster")?,
        _ = tokio::signal::ctrl_c() => {
            // Whatever had started is in the cluster's state file.
            let _ = local::down(cluster);
            bail!("interrupted; stopped what had started");
        }
    };
    let mut guards = Vec::new();
    let mut kept = Vec::new();
    let result = tokio::select! {
        r = scenario(&args, &state, &mut guards, &mut kept) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let ok = match &result {
        Ok(outcomes) => summary(outcomes),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            false
        }
    };
    if args.keep && result.is_ok() {
        kept.extend(guards.iter().map(|g| g.0.id()));
        guards.into_iter().for_each(std::mem::forget);
        let pids: Vec<String> = kept.iter().map(ToString::to_string).collect();
        println!(
            "everything keeps running; explore with:\n  export KUBECONFIG={}\n  target/debug/kubectl-cutover get shop -w\nstop it all with:\n  kill {}; cargo xtask cluster down --name {cluster}",
            state.kubeconfig.display(),
            pids.join(" ")
        );
    } else {
        drop(guards);
        local::down(cluster)?;
        let _ = writeln!(std::io::stderr(), "==> stopped everything the demo started");
    }
    result?;
    if !ok {
        bail!("the demo's outcomes were not met (see above)");
    }
    Ok(())
}
