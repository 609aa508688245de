//! Disaster recovery end to end: two local clusters (the test cluster, "east", which is
//! also the front cluster, and a second one, "west"), `cutover-router` in front, a real
//! PostgreSQL primary and hot standby, demo-app pods writing to them, a controller per
//! cluster. Scenarios, in one test because they share the second cluster:
//!
//! 1. Stopping the primary cluster's workloads under write load moves traffic to west
//!    within the detection budget; every write acknowledged before the failure is on the
//!    promoted standby (synchronous replication); the old primary refuses a real write.
//! 2. A standby lagging beyond `maxDataLossSeconds`: the automatic failover is refused
//!    with an Event saying why; `kubectl cutover failover --force` does it and the Event
//!    states the data at risk.
//! 3. A member health signal flapping every second moves traffic at most once.
//! 4. A drill produces a report (status, Event, ConfigMap) with RTO/RPO and a verdict;
//!    with an RTO target it cannot meet, it fails and says so.
//! 5. `spec.environments`: a BlueGreenDeployment whose green color runs in west. A release
//!    goes there, takes half the traffic through the gateway, then all of it on promotion;
//!    deleting the BlueGreenDeployment deletes what it made in west.
//! 6. The regional mode (one policy in each cluster, an etcd lease, a DNS entry): see
//!    `disaster_recovery/regions.rs`.

mod common;
#[path = "disaster_recovery/regions.rs"]
mod regions;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events;
use cutover_api::FailoverPolicy;
use cutover_api::k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use cutover_test_support::controller::{ControllerProcess, install_crds};
use cutover_test_support::e2e::{self, ProcessNode, RouterProcess};
use cutover_test_support::postgres::{self, Pair};
use cutover_test_support::upstream::{self, GATEWAY_API};
use cutover_test_support::{TestNamespace, local_cluster, wait_for};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The second cluster; brought down when dropped.
struct West {
    name: String,
    kubeconfig: PathBuf,
    client: Client,
}

impl Drop for West {
    fn drop(&mut self) {
        let _ = local_cluster::down(&self.name);
    }
}

/// The tests of this file, one at a time: each brings a second cluster up, and the
/// machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn west() -> West {
    west_named("west").await
}

async fn west_named(suffix: &str) -> West {
    let base = std::env::var("CUTOVER_TEST_CLUSTER").unwrap_or_else(|_| "cutover".into());
    let name = format!("{base}-{suffix}");
    let state = local_cluster::up(&local_cluster::UpOptions {
        name: name.clone(),
        nodes: 1,
        process_node: None,
        real_node: None,
    })
    .await
    .unwrap_or_else(|e| panic!("second local cluster {name}: {e}"));
    let client = local_cluster::client_for(&state.kubeconfig)
        .await
        .expect("client of the second cluster");
    install_crds(&client).await;
    West {
        name,
        kubeconfig: state.kubeconfig,
        client,
    }
}

/// One scenario's world.
struct World {
    front: TestNamespace,
    west_ns: String,
    pair: Pair,
    gw_port: u16,
    bins: PathBuf,
    east_node: Option<ProcessNode>,
    _west_node: ProcessNode,
    _router: RouterProcess,
    _controllers: Vec<ControllerProcess>,
    _west_ns: WestNamespace,
}

fn shop(node: &ProcessNode, version: &str, db: &str) -> Value {
    let mut pod = node.demo_pod_spec(version);
    pod["containers"][0]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!({ "name": "CUTOVER_DEMO_DATABASE_URL", "value": db }));
    json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } }, "spec": pod },
            "service": { "port": 80, "targetPort": 8080 },
        }
    })
}

async fn apply(client: &Client, ns: &str, obj: &Value) {
    let kind = obj["kind"].as_str().expect("kind");
    let name = obj["metadata"]["name"].as_str().expect("name");
    let pp = PatchParams::apply("cutover-tests").force();
    match kind {
        "BlueGreenDeployment" => {
            let api: Api<cutover_api::BlueGreenDeployment> = Api::namespaced(client.clone(), ns);
            api.patch(name, &pp, &Patch::Apply(obj)).await.map(|_| ())
        }
        "FailoverPolicy" => {
            let api: Api<FailoverPolicy> = Api::namespaced(client.clone(), ns);
            api.patch(name, &pp, &Patch::Apply(obj)).await.map(|_| ())
        }
        "Secret" => {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            api.patch(name, &pp, &Patch::Apply(obj)).await.map(|_| ())
        }
        other => panic!("no apply for {other}"),
    }
    .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
}

fn secret(name: &str, key: &str, value: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
            "stringData": { key: value } })
}

/// A front namespace (CRDs and Gateway API CRDs installed) and one of the same name in
/// west, deleted when the guard is dropped.
async fn namespaces(west: &West, prefix: &str) -> (TestNamespace, String, WestNamespace) {
    let front = TestNamespace::new(prefix).await;
    install_crds(&front.client).await;
    upstream::install_crds(&front.client, GATEWAY_API).await;
    let west_ns = front.name.clone();
    let nss: Api<Namespace> = Api::all(west.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": west_ns } })).expect("ns"),
    )
    .await
    .expect("namespace in west");
    let guard = WestNamespace(west.client.clone(), west_ns.clone());
    (front, west_ns, guard)
}

/// Start a world: PostgreSQL pair, both members' BlueGreenDeployments, router, Gateway,
/// entry route, controllers. Blocks `east`/`west` are the process nodes' IP blocks.
async fn world(west: &West, prefix: &str, synchronous: bool, blocks: (u8, u8)) -> World {
    let bins = e2e::build(&[
        "cutover-controller",
        "cutover-process-node",
        "cutover-demo-app",
        "cutover-router",
        "kubectl-cutover",
    ]);
    let (front, west_ns, west_guard) = namespaces(west, prefix).await;
    let pair = postgres::start_pair(prefix, synchronous).await;
    let east_node = ProcessNode::start(&front, &bins, blocks.0).await;
    let west_node = ProcessNode::start_in(
        &west.client,
        &west.kubeconfig,
        &format!("{west_ns}-w"),
        &bins,
        blocks.1,
    )
    .await;
    apply(
        &front.client,
        &front.name,
        &shop(&east_node, "east", &pair.primary().socket_conn()),
    )
    .await;
    apply(
        &west.client,
        &west_ns,
        &shop(&west_node, "west", &pair.standby().socket_conn()),
    )
    .await;
    let controllers = vec![
        ControllerProcess::start(&bins.join("cutover-controller"), &front.name, "front", 15).await,
        ControllerProcess::start_with(
            &bins.join("cutover-controller"),
            &west.kubeconfig,
            &west_ns,
            "west",
            15,
        ),
    ];
    let router = RouterProcess::start(&bins, &front.name).await;
    let gw_port = e2e::free_port();
    e2e::gateway(&front.client, &front.name, gw_port).await;
    e2e::http_route(
        &front.client,
        &front.name,
        "entry",
        json!({ "rules": [{ "backendRefs": [{ "name": "dr-east", "port": 80 }] }] }),
    )
    .await;
    let kubeconfig = std::fs::read_to_string(&west.kubeconfig).expect("west kubeconfig");
    for s in [
        secret("west-kubeconfig", "kubeconfig", &kubeconfig),
        secret("east-db", "url", pair.primary().url()),
        secret("west-db", "url", pair.standby().url()),
    ] {
        apply(&front.client, &front.name, &s).await;
    }
    World {
        front,
        _west_ns: west_guard,
        west_ns,
        pair,
        gw_port,
        bins,
        east_node: Some(east_node),
        _west_node: west_node,
        _router: router,
        _controllers: controllers,
    }
}

fn policy(w: &World, extra: Value) -> Value {
    let mut spec = json!({
        "members": [
            { "name": "east", "blueGreenDeployment": "shop",
              "database": { "postgres": { "secretName": "east-db" } } },
            { "name": "west", "blueGreenDeployment": "shop", "namespace": w.west_ns,
              "clusterRef": { "secretName": "west-kubeconfig" },
              "database": { "postgres": { "secretName": "west-db" } } },
        ],
        "entry": { "httpRoute": { "name": "entry" },
                   "url": format!("http://127.0.0.1:{}/", w.gw_port) },
        "healthCheck": { "interval": "200ms", "timeout": "300ms",
                         "failureThreshold": 3, "successThreshold": 2 },
        "minHoldSeconds": 120,
        "dataGate": { "maxDataLossSeconds": 2 },
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({ "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
            "metadata": { "name": "dr" }, "spec": spec })
}

async fn wait_policy(
    w: &World,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&FailoverPolicy) -> bool,
) -> FailoverPolicy {
    let api: Api<FailoverPolicy> = w.front.api();
    wait_for(&api, "dr", what, timeout, |p: Option<&FailoverPolicy>| {
        p.is_some_and(&ok)
    })
    .await
}

fn active(p: &FailoverPolicy) -> Option<&str> {
    p.status.as_ref()?.active_member.as_deref()
}

fn healthy_both(p: &FailoverPolicy) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Healthy")
            && s.members.len() == 2
            && s.members.iter().all(|m| m.healthy && !m.down)
    })
}

/// Which member answered `GET /` through the gateway (its version), if any did.
async fn served_by(port: u16) -> Option<String> {
    let raw = e2e::http_get(port, "/").await?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: Value = serde_json::from_str(body).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Write load through the gateway: each client POSTs `/write/<id>` in a loop.
struct Writes {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, Instant)>>>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writes {
    fn start(port: u16, clients: usize, prefix: &str) -> Writes {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let tasks = (0..clients)
            .map(|c| {
                let (stop, ack, failed, http) = (
                    stop.clone(),
                    acknowledged.clone(),
                    failed.clone(),
                    http.clone(),
                );
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("{prefix}-{c}-{n}");
                        let url = format!("http://127.0.0.1:{port}/write/{id}");
                        match http.post(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                ack.lock().expect("lock").push((id, Instant::now()));
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Writes {
            stop,
            acknowledged,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (Vec<(String, Instant)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let ack = self.acknowledged.lock().expect("lock").clone();
        (ack, self.failed.load(Ordering::Relaxed))
    }
}

fn cli(kubeconfig: &Path, bins: &Path, ns: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bins.join("kubectl-cutover"))
        .args(["--kubeconfig", &kubeconfig.display().to_string(), "-n", ns])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kubectl-cutover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn scenario_primary_failure(west: &West) {
    let mut w = world(west, "dr-fail", true, (85, 86)).await;
    apply(&w.front.client, &w.front.name, &policy(&w, json!({}))).await;
    let p = wait_policy(&w, "both members healthy, traffic on east", TIMEOUT, |p| {
        healthy_both(p) && active(p) == Some("east")
    })
    .await;
    let budget = p
        .status
        .as_ref()
        .and_then(|s| s.detection_budget_seconds)
        .expect("detection budget");
    let deadline = Instant::now() + TIMEOUT;
    while served_by(w.gw_port).await.as_deref() != Some("east") {
        assert!(
            Instant::now() < deadline,
            "east never answered through the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The entry is probed as clients reach it, and reported.
    wait_policy(&w, "the entry reported reachable", TIMEOUT, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "EntryReachable" && c.status == "True")
        })
    })
    .await;

    let writes = Writes::start(w.gw_port, 4, "w");
    let ack_deadline = Instant::now() + TIMEOUT;
    while writes.acknowledged.lock().expect("lock").len() < 200 {
        assert!(
            Instant::now() < ack_deadline,
            "writes were not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The failure: every workload of the primary cluster stops.
    let failed_at = Instant::now();
    drop(w.east_node.take());
    let mut recovered = None;
    while recovered.is_none() {
        assert!(
            failed_at.elapsed() < TIMEOUT,
            "traffic never reached west through the gateway"
        );
        if served_by(w.gw_port).await.as_deref() == Some("west") {
            recovered = Some(failed_at.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let recovered = recovered.unwrap_or_default();
    // Writes go on against the promoted standby.
    let before = writes.acknowledged.lock().expect("lock").len();
    let more = Instant::now() + TIMEOUT;
    while writes.acknowledged.lock().expect("lock").len() < before + 100 {
        assert!(
            Instant::now() < more,
            "no write acknowledged after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (acknowledged, failed) = writes.finish().await;

    let p = wait_policy(&w, "failed over to west", TIMEOUT, |p| {
        active(p) == Some("west") && p.status.as_ref().is_some_and(|s| s.moving.is_none())
    })
    .await;
    let st = p.status.clone().unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("FailedOver"), "{st:?}");
    assert_eq!(st.failed_from.as_deref(), Some("east"));
    println!(
        "failover: first answer from west {:.3}s after the failure (detection budget {budget:.2}s)",
        recovered.as_secs_f64()
    );
    assert!(
        recovered.as_secs_f64() < budget + 5.0,
        "recovery took {recovered:?}, more than the detection budget {budget}s plus 5s for the move"
    );

    // Every acknowledged write is on the new primary.
    let acked_before: Vec<&str> = acknowledged
        .iter()
        .filter(|(_, t)| *t < failed_at)
        .map(|(id, _)| id.as_str())
        .collect();
    let present: BTreeSet<String> = w
        .pair
        .standby()
        .query_one("SELECT string_agg(id, ',') FROM cutover_demo_writes")
        .await
        .split(',')
        .map(str::to_string)
        .collect();
    let missing: Vec<&&str> = acked_before
        .iter()
        .filter(|id| !present.contains(**id))
        .collect();
    println!(
        "writes: {} acknowledged ({} before the failure), {} failed, {} missing after the failover",
        acknowledged.len(),
        acked_before.len(),
        failed,
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    assert!(
        acknowledged
            .iter()
            .all(|(id, _)| present.contains(id.as_str())),
        "a write acknowledged after the failover is missing"
    );

    // The old primary is fenced: a real write is refused.
    let refused = w
        .pair
        .primary()
        .try_execute("INSERT INTO cutover_demo_writes (id, version) VALUES ('after-fence', 'x')")
        .await;
    let err = refused.expect_err("the fenced old primary accepted a write");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(!w.pair.standby().is_in_recovery().await);
    let done = events(&w.front.client, &w.front.name, "FailoverDone").await;
    assert_eq!(done.len(), 1, "{done:?}");
}

async fn scenario_lagging_standby(west: &West) {
    let w = world(west, "dr-lag", false, (87, 88)).await;
    apply(&w.front.client, &w.front.name, &policy(&w, json!({}))).await;
    wait_policy(&w, "both members healthy", TIMEOUT, healthy_both).await;
    // The standby stops replaying while the primary keeps committing. It first replays the
    // table's creation, so that it has a last replayed transaction to measure the lag from.
    w.pair
        .primary()
        .execute("CREATE TABLE IF NOT EXISTS t (n int)")
        .await;
    let deadline = Instant::now() + TIMEOUT;
    while w
        .pair
        .standby()
        .query_one("SELECT to_regclass('t') IS NOT NULL")
        .await
        != "t"
    {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed CREATE TABLE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.pair.standby().pause_replay().await;
    let writer = Committer::start(w.pair.primary().url());
    let deadline = Instant::now() + TIMEOUT;
    while writer.committed.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never committed on the primary: {:?}",
            writer.last_error.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_policy(&w, "west lagging more than 2s", TIMEOUT, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.members
                .iter()
                .any(|m| m.name == "west" && m.lag_seconds.is_some_and(|l| l > 2.0))
        })
    })
    .await;
    let mut w = w;
    drop(w.east_node.take());
    let p = wait_policy(&w, "automatic failover refused", TIMEOUT, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Degraded")
                && s.message.as_deref().is_some_and(|m| m.contains("refused"))
        })
    })
    .await;
    assert_eq!(active(&p), Some("east"));
    let refused = events(&w.front.client, &w.front.name, "FailoverRefused").await;
    assert!(
        refused.iter().any(|m| m.contains("maxDataLossSeconds")),
        "{refused:?}"
    );

    let kubeconfig = cutover_test_support::kubeconfig().await;
    let (code, out, err) = cli(
        &kubeconfig,
        &w.bins,
        &w.front.name,
        &["failover", "dr", "--to", "west", "--force"],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    writer.finish().await;
    let p = wait_policy(&w, "forced over to west", TIMEOUT, |p| {
        active(p) == Some("west")
    })
    .await;
    assert!(p.status.is_some_and(|s| s.moving.is_none()));
    let started = events(&w.front.client, &w.front.name, "FailoverStarted").await;
    assert!(
        started
            .iter()
            .any(|m| m.contains("forced") && m.contains("data at risk")),
        "{started:?}"
    );
}

/// Commits to a database in a loop (reconnecting after an error) until finished.
struct Committer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Committer {
    fn start(url: &str) -> Committer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let task = {
            let (stop, committed, last_error) =
                (stop.clone(), committed.clone(), last_error.clone());
            let url = url.to_string();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                        Ok((client, conn)) => {
                            tokio::spawn(conn);
                            client
                        }
                        Err(e) => {
                            *last_error.lock().expect("lock") = Some(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        match client.execute("INSERT INTO t VALUES (1)", &[]).await {
                            Ok(_) => {
                                committed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                *last_error.lock().expect("lock") = Some(format!("insert: {e}"));
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        };
        Committer {
            stop,
            committed,
            last_error,
            task,
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn scenario_flapping(west: &West) {
    let w = world(west, "dr-flap", true, (89, 90)).await;
    // East's health check URL flips every second.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let begun = Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let up = begun.elapsed().as_secs().is_multiple_of(2);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if up {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    let mut p = policy(&w, json!({}));
    p["spec"]["members"][0]["healthCheckUrl"] = json!(format!("http://127.0.0.1:{port}/"));
    apply(&w.front.client, &w.front.name, &p).await;
    wait_policy(&w, "the policy observed", TIMEOUT, |p| {
        p.status.as_ref().is_some_and(|s| s.members.len() == 2)
    })
    .await;
    // Twenty seconds of flapping.
    let api: Api<FailoverPolicy> = w.front.api();
    let mut seen_moves = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        // A poll tolerates a dropped connection (an idle keep-alive the server closed as
        // the request went out); the next one reads again.
        if let Ok(Some(s)) = api.get("dr").await.map(|p| p.status) {
            seen_moves.insert(s.failovers);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = api.get("dr").await.expect("get").status.unwrap_or_default();
    println!("flapping for 20s: {} move(s)", st.failovers);
    assert!(st.failovers <= 1, "{st:?}");
    let done = events(&w.front.client, &w.front.name, "FailoverDone").await;
    assert!(done.len() <= 1, "{done:?}");
}

async fn scenario_drill(west: &West) {
    let w = world(west, "dr-drill", true, (91, 92)).await;
    apply(
        &w.front.client,
        &w.front.name,
        &policy(&w, json!({ "drills": { "rtoTargetSeconds": 30, "rpoTargetSeconds": 1, "verifySeconds": 2 } })),
    )
    .await;
    wait_policy(&w, "both members healthy", TIMEOUT, healthy_both).await;
    let kubeconfig = cutover_test_support::kubeconfig().await;
    let (code, out, err) = cli(&kubeconfig, &w.bins, &w.front.name, &["drill", "dr"]);
    println!("{out}");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let p = wait_policy(&w, "a passed drill", TIMEOUT, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.last_drill.as_ref())
            .is_some_and(|d| d.verdict.as_deref() == Some("Passed"))
    })
    .await;
    let report = p.status.and_then(|s| s.last_drill).expect("report");
    let rto = report.rto_seconds.expect("RTO");
    assert!(rto > 0.0 && rto < 30.0, "{report:?}");
    assert_eq!(report.rpo_seconds, Some(0.0), "{report:?}");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.from, "east");
    assert_eq!(report.to, "west");
    let cms: Api<ConfigMap> = w.front.api();
    let cm = cms
        .get(report.config_map.as_deref().expect("ConfigMap"))
        .await
        .expect("report ConfigMap");
    assert!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("report.txt"))
            .is_some_and(|t| t.contains("Passed")),
        "{cm:?}"
    );
    assert!(
        !events(&w.front.client, &w.front.name, "DrillPassed")
            .await
            .is_empty()
    );
    assert_eq!(served_by(w.gw_port).await.as_deref(), Some("east"));

    // A target it cannot meet.
    let api: Api<FailoverPolicy> = w.front.api();
    api.patch(
        "dr",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "drills": { "rtoTargetSeconds": 0.001 } } })),
    )
    .await
    .expect("patch");
    let (code, out, _) = cli(&kubeconfig, &w.bins, &w.front.name, &["drill", "dr"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("exceeds the target"), "{out}");
    let failed = events(&w.front.client, &w.front.name, "DrillFailed").await;
    assert!(
        failed
            .iter()
            .any(|m| m.contains("RTO") && m.contains("exceeds")),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disaster_recovery_across_two_clusters() {
    if let Some(why) = local_cluster::process_node_unsupported() {
        panic!("this test runs pods as processes: {why}");
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let west = west().await;
    scenario_primary_failure(&west).await;
    scenario_lagging_standby(&west).await;
    scenario_flapping(&west).await;
    scenario_drill(&west).await;
    scenario_colors_across_clusters(&west).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disaster_recovery_across_regions() {
    if let Some(why) = local_cluster::process_node_unsupported() {
        panic!("this test runs pods as processes: {why}");
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let west = west_named("region-west").await;
    regions::scenario_regions(&west).await;
}

/// `cargo xtask bench dr`: region losses and partitions of the regional mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: cargo xtask bench dr"]
async fn regions_benchmark() {
    if let Some(why) = local_cluster::process_node_unsupported() {
        panic!("this benchmark runs pods as processes: {why}");
    }
    let west = west_named("region-west").await;
    regions::benchmark(&west, cutover_test_support::bench::runs()).await;
}

/// A demo-app BlueGreenDeployment `version` whose pods may run on `nodes` (one per
/// cluster), green in `west_ns` of the cluster in Secret `west-kubeconfig`, traffic through
/// HTTPRoute `shop` in two steps.
fn spread_shop(nodes: [&ProcessNode; 2], version: &str, west_ns: &str) -> Value {
    let mut pod = nodes[0].demo_pod_spec(version);
    pod.as_object_mut().expect("pod").remove("nodeSelector");
    pod["affinity"] = json!({ "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "kubernetes.io/hostname",
            "operator": "In", "values": [nodes[0].name, nodes[1].name] }] }] } } });
    json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } }, "spec": pod },
            "service": { "port": 80, "targetPort": 8080 },
            "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
            "strategy": { "steps": [{ "setWeight": 50 }, { "pause": {} }] },
            "environments": { "green": { "namespace": west_ns,
                                         "clusterRef": { "secretName": "west-kubeconfig" } } },
        }
    })
}

/// Versions answering `n` requests through the gateway, counted.
async fn versions(port: u16, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let v = served_by(port).await.unwrap_or_else(|| "error".into());
        *seen.entry(v).or_insert(0) += 1;
    }
    seen
}

async fn wait_versions(
    port: u16,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, usize>) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let seen = versions(port, 20).await;
        if ok(&seen) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario_colors_across_clusters(west: &West) {
    use cutover_api::k8s_openapi::api::apps::v1::Deployment;
    use cutover_api::{BlueGreenDeployment, Color, Phase, requests};
    use cutover_test_support::release::{healthy_on, phase, request, wait_bgd};
    let bins = e2e::build(&[
        "cutover-controller",
        "cutover-process-node",
        "cutover-demo-app",
        "cutover-router",
    ]);
    let (front, west_ns, _west_guard) = namespaces(west, "env-x").await;
    let east_node = ProcessNode::start(&front, &bins, 95).await;
    let west_node = ProcessNode::start_in(
        &west.client,
        &west.kubeconfig,
        &format!("{west_ns}-w"),
        &bins,
        96,
    )
    .await;
    let kubeconfig = std::fs::read_to_string(&west.kubeconfig).expect("west kubeconfig");
    apply(
        &front.client,
        &front.name,
        &secret("west-kubeconfig", "kubeconfig", &kubeconfig),
    )
    .await;
    let _ctrl =
        ControllerProcess::start(&bins.join("cutover-controller"), &front.name, "front", 15).await;
    let _router = RouterProcess::start(&bins, &front.name).await;
    let port = e2e::free_port();
    e2e::gateway(&front.client, &front.name, port).await;
    e2e::http_route(
        &front.client,
        &front.name,
        "shop",
        json!({ "rules": [{ "backendRefs": [{ "name": "shop-blue", "port": 80 }] }] }),
    )
    .await;

    // Revision 1 goes to blue, at home (east).
    let nodes = [&east_node, &west_node];
    apply(
        &front.client,
        &front.name,
        &spread_shop(nodes, "v1", &west_ns),
    )
    .await;
    healthy_on(&front, "shop", Color::Blue).await;
    wait_versions(port, "v1 answering through the gateway", |s| {
        s.get("v1") == Some(&20)
    })
    .await;

    // Revision 2 goes to green, in west: half the traffic at the pause, from the other
    // cluster, then all of it.
    apply(
        &front.client,
        &front.name,
        &spread_shop(nodes, "v2", &west_ns),
    )
    .await;
    let b = wait_bgd(&front, "shop", "paused at 50% with green in west", |b| {
        phase(b) == Some(Phase::Paused) && b.status.as_ref().map(|s| s.weight) == Some(50)
    })
    .await;
    let green = b.status.and_then(|s| s.green).expect("green status");
    assert_eq!(green.cluster.as_deref(), Some("west-kubeconfig"));
    assert_eq!(green.ready_replicas, 2);
    let west_deployments: Api<Deployment> = Api::namespaced(west.client.clone(), &west_ns);
    let d = west_deployments
        .get("shop-green")
        .await
        .expect("shop-green runs in west");
    assert!(
        d.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("cutover.dev/owner-uid"))
    );
    let split = versions(port, 60).await;
    println!("spread across clusters at 50%: {split:?}");
    assert_eq!(split.get("error"), None, "{split:?}");
    assert!(
        split.get("v1").copied().unwrap_or(0) >= 10 && split.get("v2").copied().unwrap_or(0) >= 10,
        "both clusters answer at 50%: {split:?}"
    );
    request(&front, "shop", requests::PROMOTE).await;
    healthy_on(&front, "shop", Color::Green).await;
    wait_versions(port, "v2 (west) answering all traffic", |s| {
        s.get("v2") == Some(&20)
    })
    .await;

    // Deleting it deletes its objects in west.
    let api: Api<BlueGreenDeployment> = front.api();
    let uid = api
        .get("shop")
        .await
        .expect("bgd")
        .metadata
        .uid
        .expect("uid");
    api.delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        TIMEOUT,
        kube::runtime::wait::await_condition(
            api,
            "shop",
            kube::runtime::wait::conditions::is_deleted(&uid),
        ),
    )
    .await
    .expect("the BlueGreenDeployment gone in time")
    .expect("watch");
    assert!(
        west_deployments
            .get_opt("shop-green")
            .await
            .expect("get")
            .is_none(),
        "shop-green in west deleted with its BlueGreenDeployment"
    );
}

/// Deletes a namespace of the west cluster when dropped.
struct WestNamespace(Client, String);

impl Drop for WestNamespace {
    fn drop(&mut self) {
        let (client, ns) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    let api: Api<Namespace> = Api::all(client);
                    let _ = api.delete(&ns, &DeleteParams::default()).await;
                });
            }
        })
        .join();
    }
}

/// The failover benchmark (`cargo xtask bench failover`): `CUTOVER_BENCH_RUNS` (default 10)
/// fresh worlds; in each, the primary cluster's workloads stop under load and the time to
/// the first good answer from the standby through the gateway is measured. Reported
/// against the detection budget (interval × failureThreshold + timeout), the floor a
/// threshold-based detector cannot beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: cargo xtask bench failover"]
async fn failover_benchmark() {
    if let Some(why) = local_cluster::process_node_unsupported() {
        panic!("this benchmark runs pods as processes: {why}");
    }
    let runs = cutover_test_support::bench::runs();
    let west = west().await;
    let mut times = Vec::new();
    let mut budget = 0.0;
    for run in 0..runs {
        let mut w = world(&west, "dr-bench", true, (93, 94)).await;
        apply(&w.front.client, &w.front.name, &policy(&w, json!({}))).await;
        let p = wait_policy(&w, "both members healthy", TIMEOUT, |p| {
            healthy_both(p) && active(p) == Some("east")
        })
        .await;
        budget = p
            .status
            .and_then(|s| s.detection_budget_seconds)
            .unwrap_or_default();
        let deadline = Instant::now() + TIMEOUT;
        while served_by(w.gw_port).await.as_deref() != Some("east") {
            assert!(Instant::now() < deadline, "east never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let writes = Writes::start(w.gw_port, 2, "b");
        let failed_at = Instant::now();
        drop(w.east_node.take());
        loop {
            assert!(failed_at.elapsed() < TIMEOUT, "west never answered");
            if served_by(w.gw_port).await.as_deref() == Some("west") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = failed_at.elapsed().as_secs_f64();
        let _ = writes.finish().await;
        println!("run {}: {took:.3}s", run + 1);
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    println!(
        "failover over {runs} runs: median {median:.3}s, p90 {p90:.3}s, min {:.3}s, max {:.3}s; \
         detection budget {budget:.2}s (median = {:.2}× budget); goal < 3s",
        times[0],
        times[times.len() - 1],
        median / budget.max(f64::EPSILON)
    );
}
