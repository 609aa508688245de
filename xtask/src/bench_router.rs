//! `cargo xtask bench router`: the data plane against the same backends, in one run.
//!
//! Two demo-app pods (v1 and v2, release builds) run on the bench cluster's process node.
//! The same load (Debian's `wrk`, keep-alive connections) is sent in turn to:
//! 1. direct: the v1 pod itself (the baseline: what the backend can do);
//! 2. `cutover-router` (release build), serving a Gateway whose HTTPRoute splits 90/10;
//! 3. nginx and 4. HAProxy (Debian packages), configured with the same 90/10 weights and
//!    upstream keep-alive.
//!
//! Targets are measured in interleaved rounds and the medians reported: throughput, p50 and
//! p99 latency, throughput as a share of the better peer, and p99 added over direct access.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use cutover_local_cluster as local;
use cutover_local_cluster::process::{self, ChildGuard};
use cutover_test_support::e2e::{self, RouterProcess, table_backends};
use cutover_test_support::upstream::{self, GATEWAY_API};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::bench::CLUSTER;

/// A peer proxy started in its own process group; SIGTERM to the whole group when dropped
/// (nginx's workers outlive a killed master otherwise), then wait for it to exit.
fn group_on_drop(leader: std::process::Child) -> ChildGuard {
    ChildGuard::group(leader, process::NO_DEADLINE)
}

const NS: &str = "router-bench";

#[derive(Debug, Args)]
pub struct RouterBenchArgs {
    /// Seconds of load per target and round.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Interleaved rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Route flips for the switch-latency measurement.
    #[arg(long, default_value_t = 20)]
    pub switches: usize,
    /// Keep the bench cluster afterwards.
    #[arg(long)]
    pub keep_cluster: bool,
}

/// One wrk run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
    ]
    .into_iter()
    .filter(|(bin, _)| {
        !["/usr/bin", "/usr/sbin"]
            .iter()
            .any(|d| Path::new(d).join(bin).exists())
    })
    .map(|(_, pkg)| pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing {} (Debian packages)", missing.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!(
            "could not install {}; install them (apt-get install {}) and run again",
            missing.join(" "),
            missing.join(" ")
        );
    }
    Ok(())
}

fn ms(text: &str) -> Option<f64> {
    let (num, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * factor)
}

/// Parse `wrk --latency` output.
fn parse_wrk(out: &str) -> anyhow::Result<Sample> {
    let field = |prefix: &str| -> Option<&str> {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let p50_ms = field("50%")
        .and_then(ms)
        .context("no p50 in wrk's output")?;
    let p99_ms = field("99%")
        .and_then(ms)
        .context("no p99 in wrk's output")?;
    let non2xx = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let socket = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .unwrap_or(0);
    Ok(Sample {
        rps,
        p50_ms,
        p99_ms,
        errors: non2xx + socket,
    })
}

fn wrk(url: &str, connections: u32, seconds: u64) -> anyhow::Result<Sample> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            url,
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk")?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn nginx_conf(dir: &Path, port: u16, blue: &str, green: &str) -> String {
    format!(
        "worker_processes 2;\npid {pid};\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
           upstream shop {{ server {blue}:8080 weight=9; server {green}:8080 weight=1; keepalive 128; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://shop;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    )
}

fn haproxy_conf(port: u16, blue: &str, green: &str) -> String {
    format!(
        "global\n  nbthread 2\n  maxconn 4000\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  http-reuse always\n\
         frontend front\n  bind 127.0.0.1:{port}\n  default_backend shop\n\
         backend shop\n  balance roundrobin\n  server blue {blue}:8080 weight 90\n  server green {green}:8080 weight 10\n"
    )
}

async fn wait_answering(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn backends(client: &kube::Client) -> anyhow::Result<(String, String)> {
    let pp = PatchParams::apply("cutover-bench").force();
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    Api::<Namespace>::all(client.clone())
        .patch(NS, &pp, &Patch::Apply(&ns))
        .await?;
    for (name, version) in [("blue", "v1"), ("green", "v2")] {
        let d: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": name },
            "spec": { "replicas": 1, "selector": { "matchLabels": { "app": name } },
                "template": { "metadata": { "labels": { "app": name } },
                    "spec": e2e::demo_pod_spec(local::PROCESS_NODE, version) } }
        }))?;
        Api::<Deployment>::namespaced(client.clone(), NS)
            .patch(name, &pp, &Patch::Apply(&d))
            .await?;
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": { "name": name },
            "spec": { "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
        }))?;
        Api::<Service>::namespaced(client.clone(), NS)
            .patch(name, &pp, &Patch::Apply(&svc))
            .await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = pods.list(&ListParams::default()).await?.items;
        let ready_ip = |app: &str| {
            list.iter()
                .filter(|p| p.labels().get("app").map(String::as_str) == Some(app))
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        };
        if let (Some(b), Some(g)) = (ready_ip("blue"), ready_ip("green")) {
            return Ok((b, g));
        }
        if Instant::now() > deadline {
            bail!(
                "the backend pods did not become ready on {}",
                local::PROCESS_NODE
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

use kube::ResourceExt as _;

pub async fn run(args: RouterBenchArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    ensure_tools()?;
    if let Some(why) = local::process_node_unsupported() {
        bail!("the router benchmark needs the process-backed node: {why}");
    }
    crate::test::cargo(
        &[
            "build",
            "--release",
            "-p",
            "cutover-router",
            "-p",
            "cutover-demo-app",
            "-p",
            "cutover-process-node",
        ],
        &[],
    )?;
    let release: PathBuf = local::workspace_root().join("target").join("release");
    let _ = local::down(CLUSTER);
    let state = local::up(&local::UpOptions {
        name: CLUSTER.into(),
        nodes: 1,
        process_node: Some(release.clone()),
        real_node: None,
    })
    .await?;
    let client = local::client_for(&state.kubeconfig).await?;
    upstream::install_crds(&client, GATEWAY_API).await;
    let (blue, green) = backends(&client).await?;
    eprintln!("==> backends: v1 on {blue}:8080, v2 on {green}:8080");

    let router_port = e2e::free_port();
    e2e::gateway(&client, NS, router_port).await;
    e2e::http_route(
        &client,
        NS,
        "shop",
        json!({ "rules": [{ "backendRefs": [
            { "name": "blue", "port": 80, "weight": 90 },
            { "name": "green", "port": 80, "weight": 10 }
        ] }] }),
    )
    .await;
    let router = RouterProcess::start_with(&release, NS, &state.kubeconfig).await;
    router
        .wait_routes(
            "both backends ready at 90/10",
            Duration::from_secs(60),
            |r| {
                let b = table_backends(r);
                b.iter()
                    .any(|(n, w, e)| n.ends_with("/blue:80") && *w == 90 && e.len() == 1)
                    && b.iter()
                        .any(|(n, w, e)| n.ends_with("/green:80") && *w == 10 && e.len() == 1)
            },
        )
        .await;

    let dir = local::workspace_root()
        .join("target")
        .join("bench")
        .join("router");
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let nginx_port = e2e::free_port();
    let nginx_conf_path = nginx_dir.join("nginx.conf");
    std::fs::write(
        &nginx_conf_path,
        nginx_conf(&nginx_dir, nginx_port, &blue, &green),
    )?;
    let _nginx = group_on_drop(
        Command::new("nginx")
            .arg("-p")
            .arg(&nginx_dir)
            .arg("-c")
            .arg(&nginx_conf_path)
            .args(["-g", "daemon off;"])
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    let haproxy_port = e2e::free_port();
    let haproxy_conf_path = dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_conf_path,
        haproxy_conf(haproxy_port, &blue, &green),
    )?;
    let _haproxy = group_on_drop(
        Command::new("haproxy")
            .arg("-f")
            .arg(&haproxy_conf_path)
            .arg("-db")
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .context("starting haproxy")?,
    );
    let targets = [
        ("direct", format!("http://{blue}:8080/")),
        ("cutover-router", format!("http://127.0.0.1:{router_port}/")),
        ("nginx", format!("http://127.0.0.1:{nginx_port}/")),
        ("haproxy", format!("http://127.0.0.1:{haproxy_port}/")),
    ];
    for (_, url) in &targets {
        wait_answering(url).await?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 1..=args.rounds {
        for (i, (name, url)) in targets.iter().enumerate() {
            wrk(url, args.connections, 1)?; // warm-up: connections, pools, caches
            let s = wrk(url, args.connections, args.seconds)?;
            eprintln!(
                "round {round}: {name:<15} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {}",
                s.rps, s.p50_ms, s.p99_ms, s.errors
            );
            samples[i].push(s);
        }
    }
    let med: Vec<(f64, f64, f64, u64)> = samples
        .iter()
        .map(|v| {
            (
                median(v.iter().map(|s| s.rps).collect()),
                median(v.iter().map(|s| s.p50_ms).collect()),
                median(v.iter().map(|s| s.p99_ms).collect()),
                v.iter().map(|s| s.errors).sum(),
            )
        })
        .collect();
    let direct = med[0];
    println!(
        "\nrouter benchmark: {} connections, {} s x {} rounds per target (medians), weights 90/10",
        args.connections, args.seconds, args.rounds
    );
    println!(
        "{:<15} {:>10} {:>9} {:>9} {:>11} {:>13} {:>7}",
        "target", "req/s", "p50 ms", "p99 ms", "vs direct", "p99 added ms", "errors"
    );
    for ((name, _), m) in targets.iter().zip(&med) {
        println!(
            "{name:<15} {:>10.0} {:>9.3} {:>9.3} {:>10.2}x {:>13.3} {:>7}",
            m.0,
            m.1,
            m.2,
            m.0 / direct.0,
            m.2 - direct.2,
            m.3
        );
    }
    let best_peer = med[2].0.max(med[3].0);
    println!(
        "cutover-router: {:.1} % of the better peer's throughput (goal >= 90 %), p99 added {:.3} ms (goal < 1 ms)",
        med[1].0 * 100.0 / best_peer,
        med[1].2 - direct.2
    );
    let split = split_through(&router).await;
    switch_latency(&client, &router, router_port, args.switches).await?;
    println!("{split}");
    drop(router);
    if !args.keep_cluster {
        local::down(CLUSTER)?;
    }
    Ok(())
}

/// How fast a route change reaches the traffic: the route's only backend flips between v1
/// and v2; time from sending the update to the first answer from the new version, against
/// the time the API server takes to accept the write (measured in the same run).
async fn switch_latency(
    client: &kube::Client,
    router: &RouterProcess,
    port: u16,
    switches: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://127.0.0.1:{port}/");
    // Start from v1 alone, so an answer from v2 can only come from a flip.
    e2e::http_route(
        client,
        NS,
        "shop",
        json!({ "rules": [{ "backendRefs": [{ "name": "blue", "port": 80 }] }] }),
    )
    .await;
    router
        .wait_routes("blue alone", Duration::from_secs(30), |r| {
            let b = table_backends(r);
            b.len() == 1 && b[0].0.ends_with("/blue:80")
        })
        .await;
    let mut writes = Vec::new();
    let mut follows = Vec::new();
    for i in 0..switches {
        let (backend, version) = if i % 2 == 0 {
            ("green", "v2")
        } else {
            ("blue", "v1")
        };
        let started = Instant::now();
        e2e::http_route(
            client,
            NS,
            "shop",
            json!({ "rules": [{ "backendRefs": [{ "name": backend, "port": 80 }] }] }),
        )
        .await;
        writes.push(started.elapsed().as_secs_f64() * 1000.0);
        let deadline = started + Duration::from_secs(30);
        loop {
            let body = http
                .get(&url)
                .send()
                .await?
                .text()
                .await
                .unwrap_or_default();
            if body.contains(&format!("\"version\":\"{version}\"")) {
                follows.push(started.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("the router did not follow the route to {backend} within 30 s");
            }
        }
    }
    let p90 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[(v.len() * 9 / 10).min(v.len() - 1)]
    };
    let (w, f) = (median(writes.clone()), median(follows.clone()));
    println!(
        "route switch ({switches} flips): API write median {w:.1} ms (p90 {:.1}); first answer from the new backend median {f:.1} ms (p90 {:.1}); ratio {:.2}",
        p90(&writes),
        p90(&follows),
        f / w.max(0.001)
    );
    Ok(())
}

async fn split_through(router: &RouterProcess) -> String {
    let metrics = router.metrics().await;
    let count = |backend: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("cutover_router_requests_total") && l.contains(backend))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (b, g) = (count("/blue:80\""), count("/green:80\""));
    format!(
        "split through cutover-router: {:.2} % to v2 of {:.0} requests",
        g * 100.0 / (b + g).max(1.0),
        b + g
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  2 threads and 32 connections\n\
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us  10.00ms   90.00%\n\
            Latency Distribution\n     50%  850.00us\n     75%    1.20ms\n     90%    1.80ms\n     99%    3.50ms\n\
            200000 requests in 10.00s, 30.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Non-2xx or 3xx responses: 4\nRequests/sec:  20000.50\nTransfer/sec:      3.00MB\n";
        let s = parse_wrk(out).expect("parsed");
        assert_eq!(s.rps, 20000.5);
        assert!((s.p50_ms - 0.85).abs() < 1e-9);
        assert_eq!(s.p99_ms, 3.5);
        assert_eq!(s.errors, 7);
    }
}
