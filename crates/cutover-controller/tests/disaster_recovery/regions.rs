//! The regional mode (`spec.coordination`, `spec.entry.dns`): one FailoverPolicy applied
//! in both clusters, each region's controller started with `--region` and talking to its
//! own region's etcd member (east, west, and a witness member), each region's CoreDNS
//! reading its own member, a client resolving through both DNS servers in turn and
//! writing to the address it gets.
//!
//! Each region is a network namespace of its own on a bridge ([`netns::Fabric`]): its
//! etcd member, CoreDNS, PostgreSQL server (the standby streams from the primary across
//! the bridge), controller, process node (its pods) and entry (`cutover-router` serving a
//! Gateway on the region's address, its HTTPRoute sending to Service `shop`) run in it, so
//! a partition is a netfilter drop between region addresses and a flapping link is a
//! bridge port taken down and up. The Kubernetes API servers stay on the host: east's
//! control plane is the shared test cluster, reached from the region through a relay on
//! the host's bridge address.
//!
//! In order, on one world: the start (east holds the lease and its address is served by
//! both DNS servers, its `DNSEndpoint` written); the witness cut off for a while (nothing
//! moves); the coordination quorum lost (east fences its own database before its lease can
//! expire, nobody is promoted, and east takes its lease back after); east lost whole
//! (controller, etcd member, DNS server, router, pods, database primary): west takes over,
//! clients get west's address, and every write acknowledged before the loss is on west's
//! promoted database. Then a world for east partitioned from the others, and one for a
//! planned handover (`kubectl cutover failover --to west`) and a refused request back.

use std::net::SocketAddr;

use cutover_controller::traffic::dns::dns_endpoint_resource;
use cutover_test_support::dns::{CoreDns, StubResolver, a_records, resolver};
use cutover_test_support::e2e::RouterProcess;
use cutover_test_support::etcd::EtcdCluster;
use cutover_test_support::netns::{self, Fabric};
use cutover_test_support::upstream::{EXTERNAL_DNS, GATEWAY_API};
use kube::api::DynamicObject;

use super::*;

const EAST: usize = 0;
const WEST: usize = 1;
const WITNESS: usize = 2;
const HOST: &str = "www.shop.test";

/// How many ready pods Service `shop` in `ns` has (0 when the API does not answer).
async fn ready_pods(client: &Client, ns: &str) -> usize {
    let eps = cutover_controller::endpoint_mirror::read(client, ns, "shop", 80, "http").await;
    match eps {
        Ok(eps) if eps.target_port > 0 => eps.addresses.len(),
        _ => 0,
    }
}

/// Waits until Service `shop` in `ns` has exactly `n` ready pods.
async fn wait_ready_pods(client: &Client, ns: &str, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = ready_pods(client, ns).await;
        if got == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Service shop in {ns} has {got} ready pods, not {n}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The regional world.
struct Regions {
    front: TestNamespace,
    west_ns: String,
    pair: Pair,
    etcd: EtcdCluster,
    dns: Vec<CoreDns>,
    east_controller: Option<ControllerProcess>,
    _west_controller: ControllerProcess,
    east_node: Option<ProcessNode>,
    _west_node: ProcessNode,
    /// Each region's entry: its `cutover-router`.
    routers: [Option<RouterProcess>; 2],
    entry_port: u16,
    /// East's and west's entry addresses (their regions' addresses).
    entries: [String; 2],
    bins: PathBuf,
    _west_guard: WestNamespace,
    standby: Standby,
    /// The API server relays of the controllers in the regions.
    _api_relays: [netns::Task; 2],
    /// Dropped last: every process of the regions has stopped by then.
    fabric: Fabric,
}

/// The size of each region's member: full (`spec.replicas` 1), or a pilot light
/// (`spec.replicas` 2, a standby kept at 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standby {
    FullSize,
    PilotLight,
}

/// The full size of each member.
fn full_size(standby: Standby) -> usize {
    match standby {
        Standby::FullSize => 1,
        Standby::PilotLight => 2,
    }
}

fn regional_policy(
    etcd: &EtcdCluster,
    standby: Standby,
    entries: &[String; 2],
    entry_port: u16,
) -> Value {
    let endpoints: Vec<String> = (0..3).map(|i| etcd.endpoint(i)).collect();
    let mut p = json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
        "metadata": { "name": "dr" },
        "spec": {
            "members": [
                { "name": "east", "region": "east", "blueGreenDeployment": "shop",
                  "entryAddresses": [entries[EAST]],
                  "database": { "postgres": { "secretName": "shop-db" } } },
                { "name": "west", "region": "west", "blueGreenDeployment": "shop",
                  "entryAddresses": [entries[WEST]],
                  "database": { "postgres": { "secretName": "shop-db" } } },
            ],
            "entry": { "dns": { "zone": "shop.test", "hostname": HOST, "ttl": 1 },
                       "url": format!("http://{HOST}:{entry_port}/healthz") },
            "drills": { "verifySeconds": 2 },
            "coordination": { "etcd": { "endpoints": endpoints }, "leaseSeconds": 3 },
            "healthCheck": { "interval": "200ms", "timeout": "300ms",
                             "failureThreshold": 3, "successThreshold": 2 },
        }
    });
    if standby == Standby::PilotLight {
        p["spec"]["pilotLight"] = json!({ "replicas": 1 });
    }
    p
}

/// A regional world named `name`, its process nodes on IP `blocks` (and its regions on
/// `10.252.<blocks.0>.0/24`).
async fn regions(west: &West, name: &str, blocks: (u8, u8), standby: Standby) -> Regions {
    let bins = e2e::build(&[
        "cutover-controller",
        "cutover-process-node",
        "cutover-demo-app",
        "cutover-router",
        "kubectl-cutover",
    ]);
    let (front, west_ns, west_guard) = namespaces(west, name).await;
    upstream::install_crds(&front.client, EXTERNAL_DNS).await;
    upstream::install_crds(&west.client, EXTERNAL_DNS).await;
    let fabric = Fabric::create(blocks.0, &["east", "west", "witness"]);
    let region = |i| fabric.region(i);
    let etcd = EtcdCluster::start_in(name, &[region(EAST), region(WEST), region(WITNESS)]).await;
    let mut dns = Vec::new();
    for (i, r) in [(EAST, "east"), (WEST, "west")] {
        let at = Some(region(i));
        let server = format!("{name}-{r}");
        dns.push(CoreDns::start_in(&server, "shop.test", "/skydns", &etcd.endpoint(i), at).await);
    }
    let pair = postgres::start_pair_in(name, true, [region(EAST), region(WEST)]).await;
    // The fence probe's table, made while both servers stream: the probe then writes
    // nothing on a primary that takes writes, and is refused on a fenced one.
    pair.primary()
        .execute("CREATE TABLE IF NOT EXISTS fence_probe (id int)")
        .await;
    let east_kubeconfig = cutover_test_support::kubeconfig().await;
    let (east_kc, east_api) = netns::kubeconfig_for_regions(&fabric, &east_kubeconfig, "east");
    let (west_kc, west_api) = netns::kubeconfig_for_regions(&fabric, &west.kubeconfig, "west");
    let east_node = ProcessNode::start_in_region(
        region(EAST),
        &front.client,
        &east_kc,
        &east_kubeconfig,
        &front.name,
        &bins,
        blocks.0,
    )
    .await;
    let west_node = ProcessNode::start_in_region(
        region(WEST),
        &west.client,
        &west_kc,
        &west.kubeconfig,
        &format!("{west_ns}-w"),
        &bins,
        blocks.1,
    )
    .await;
    let replicas = json!(full_size(standby));
    let mut shop_east = shop(&east_node, "east", &pair.primary().socket_conn());
    shop_east["spec"]["replicas"] = replicas.clone();
    apply(&front.client, &front.name, &shop_east).await;
    let mut shop_west = shop(&west_node, "west", &pair.standby().socket_conn());
    shop_west["spec"]["replicas"] = replicas;
    apply(&west.client, &west_ns, &shop_west).await;
    apply(
        &front.client,
        &front.name,
        &secret("shop-db", "url", pair.primary().url()),
    )
    .await;
    apply(
        &west.client,
        &west_ns,
        &secret("shop-db", "url", pair.standby().url()),
    )
    .await;
    let exe = bins.join("cutover-controller");
    let (east_etcd, west_etcd) = (etcd.endpoint(EAST), etcd.endpoint(WEST));
    let east_controller = ControllerProcess::start_in(
        region(EAST),
        &exe,
        &east_kc,
        &front.name,
        "region-east",
        15,
        &["--region", "east", "--etcd-endpoints", &east_etcd],
    );
    let west_controller = ControllerProcess::start_in(
        region(WEST),
        &exe,
        &west_kc,
        &west_ns,
        "region-west",
        15,
        &["--region", "west", "--etcd-endpoints", &west_etcd],
    );
    // Each region's entry: its router, serving Gateway `gw` on the region's address,
    // HTTPRoute `entry` sending everything to Service `shop`.
    let entry_port = e2e::free_port();
    for (client, ns) in [(&front.client, &front.name), (&west.client, &west_ns)] {
        upstream::install_crds(client, GATEWAY_API).await;
        e2e::gateway(client, ns, entry_port).await;
        let to_shop = json!({ "rules": [{ "backendRefs": [{ "name": "shop", "port": 80 }] }] });
        e2e::http_route(client, ns, "entry", to_shop).await;
    }
    let routers = [
        Some(RouterProcess::start_in(region(EAST), &bins, &front.name, &east_kc).await),
        Some(RouterProcess::start_in(region(WEST), &bins, &west_ns, &west_kc).await),
    ];
    let entries = [region(EAST).addr.to_string(), region(WEST).addr.to_string()];
    let policy = regional_policy(&etcd, standby, &entries, entry_port);
    apply(&front.client, &front.name, &policy).await;
    apply(&west.client, &west_ns, &policy).await;
    Regions {
        front,
        west_ns,
        pair,
        etcd,
        dns,
        east_controller: Some(east_controller),
        _west_controller: west_controller,
        east_node: Some(east_node),
        _west_node: west_node,
        routers,
        entry_port,
        entries,
        bins,
        _west_guard: west_guard,
        standby,
        _api_relays: [east_api, west_api],
        fabric,
    }
}

/// `coordination.state` and `.holder` of the policy in `ns` of `client`'s cluster.
async fn lease_of(client: &Client, ns: &str) -> (Option<String>, Option<String>, Option<i64>) {
    let api: Api<FailoverPolicy> = Api::namespaced(client.clone(), ns);
    let p = api.get_opt("dr").await.ok().flatten();
    let c = p.and_then(|p| p.status).and_then(|s| s.coordination);
    (
        c.as_ref().map(|c| c.state.clone()),
        c.as_ref().and_then(|c| c.holder.clone()),
        c.and_then(|c| c.token),
    )
}

/// Waits until the policy in `ns` reports `state` with `holder`.
async fn wait_lease(
    client: &Client,
    ns: &str,
    state: &str,
    holder: Option<&str>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let (s, h, _) = lease_of(client, ns).await;
        if s.as_deref() == Some(state) && h.as_deref() == holder {
            return;
        }
        if Instant::now() >= deadline {
            let api: Api<FailoverPolicy> = Api::namespaced(client.clone(), ns);
            let status = api
                .get_opt("dr")
                .await
                .ok()
                .flatten()
                .and_then(|p| p.status);
            panic!(
                "the policy in {ns} did not report {state} held by {holder:?} within {within:?} (it reports {s:?} held by {h:?}): {status:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resolves `HOST` until it gives `want`, within `within`.
async fn wait_resolves(r: &StubResolver, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = a_records(r, HOST).await;
        if got.as_deref().is_ok_and(|g| g == [want.to_string()]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{HOST} did not resolve to {want} within {within:?} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The policy's DNSEndpoint targets in `ns`, if it exists.
async fn dns_endpoint(client: &Client, ns: &str) -> Option<Value> {
    let ar = dns_endpoint_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let o = api.get_opt("dr").await.ok().flatten()?;
    Some(o.data["spec"]["endpoints"][0]["targets"].clone())
}

/// Writes through DNS: each client resolves `HOST` (through the stub resolver, which keeps
/// an answer for its TTL) and POSTs `/write/<id>` to the address it got.
struct DnsWrites {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(String, Instant, String)>>>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsWrites {
    fn start(r: &StubResolver, port: u16, clients: usize) -> DnsWrites {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let tasks = (0..clients)
            .map(|c| {
                let (stop, ack, failed, http, r) = (
                    stop.clone(),
                    acknowledged.clone(),
                    failed.clone(),
                    http.clone(),
                    r.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = format!("region-{c}-{n}");
                        let ok = match a_records(&r, HOST).await {
                            Ok(ips) if !ips.is_empty() => {
                                let url = format!("http://{}:{port}/write/{id}", ips[0]);
                                match http.post(&url).send().await {
                                    Ok(resp) if resp.status().is_success() => {
                                        let v: Value = resp.json().await.unwrap_or_default();
                                        let version = v["version"].as_str().unwrap_or_default();
                                        ack.lock().expect("lock").push((
                                            id,
                                            Instant::now(),
                                            version.to_string(),
                                        ));
                                        true
                                    }
                                    _ => false,
                                }
                            }
                            _ => false,
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        DnsWrites {
            stop,
            acknowledged,
            failed,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    /// Waits until `n` more writes are acknowledged by `version`; returns when the first
    /// of them was.
    async fn wait_acked_by(&self, version: &str, n: usize, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        let start = self.acked();
        loop {
            let first = {
                let ack = self.acknowledged.lock().expect("lock");
                let by: Vec<Instant> = ack[start..]
                    .iter()
                    .filter(|(_, _, v)| v == version)
                    .map(|(_, t, _)| *t)
                    .collect();
                (by.len() >= n).then(|| by[0])
            };
            if let Some(t) = first {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{n} writes were not acknowledged by {version} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> (Vec<(String, Instant, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let ack = self.acknowledged.lock().expect("lock").clone();
        (ack, self.failed.load(Ordering::Relaxed))
    }
}

/// Whether a real write to `server` is refused as read-only.
async fn refuses_writes(server: &postgres::Server) -> bool {
    server
        .try_execute("CREATE TABLE IF NOT EXISTS fence_probe (id int)")
        .await
        .is_err_and(|e| e.to_string().contains("read-only"))
}

/// The ids in `server`'s write table.
async fn ids_in(server: &postgres::Server) -> BTreeSet<String> {
    server
        .query_one("SELECT coalesce(string_agg(id, ','), '') FROM cutover_demo_writes")
        .await
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Records every change of the answer clients get for `HOST` (sampled every 50 ms with a
/// fresh resolver, so no cache hides one): the moves of traffic.
struct Moves {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Moves {
    fn watch(servers: Vec<SocketAddr>) -> Moves {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                // As the stub resolver asks them: the first server that answers.
                let mut answer = None;
                for (i, server) in servers.iter().enumerate() {
                    if let Ok(ips) = a_records(&resolver(&[*server]), HOST).await {
                        answer = ips.first().cloned().map(|ip| (ip, i));
                        break;
                    }
                }
                if let Some((ip, from)) = answer
                    && seen.last() != Some(&ip)
                {
                    eprintln!(
                        "{:.2}s: {HOST} → {ip} (from DNS server {from})",
                        started.elapsed().as_secs_f64()
                    );
                    seen.push(ip);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        });
        Moves { stop, task }
    }

    /// The answers in the order seen; moves are one fewer.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Waits for the start: east holds the lease, both DNS servers give its address.
async fn started(w: &Regions, west: &West) -> StubResolver {
    let (east_c, west_c) = (&w.front.client, &west.client);
    wait_lease(east_c, &w.front.name, "Active", Some("east"), TIMEOUT).await;
    wait_lease(west_c, &w.west_ns, "Standby", Some("east"), TIMEOUT).await;
    let both = resolver(&[w.dns[EAST].addr, w.dns[WEST].addr]);
    wait_resolves(&both, &w.entries[EAST], TIMEOUT).await;
    // East at its full size; west too, or at its pilot-light size of 1.
    let full = full_size(w.standby);
    wait_ready_pods(east_c, &w.front.name, full, TIMEOUT).await;
    let west_size = match w.standby {
        Standby::FullSize => full,
        Standby::PilotLight => 1,
    };
    wait_ready_pods(west_c, &w.west_ns, west_size, TIMEOUT).await;
    // Each region's router sends to those pods.
    for (router, n) in w.routers.iter().zip([full, west_size]) {
        if let Some(router) = router {
            router
                .wait_routes("the entry's route to shop's ready pods", TIMEOUT, |t| {
                    e2e::table_backends(t)
                        .iter()
                        .any(|(b, _, eps)| b.contains("shop") && eps.len() == n)
                })
                .await;
        }
    }
    both
}

/// What a region loss measured.
struct RegionLoss {
    /// From the loss to the first write acknowledged by west.
    rto: Duration,
    acknowledged: usize,
    failed: u64,
    /// Acknowledged writes not on west's promoted database.
    lost: usize,
}

/// East lost whole under write load through DNS: controller, etcd member, DNS server,
/// entry, pods and database primary at once.
async fn lose_east(w: &mut Regions, west: &West) -> RegionLoss {
    let both = started(w, west).await;
    let writes = DnsWrites::start(&both, w.entry_port, 4);
    writes.wait_acked_by("east", 100, TIMEOUT).await;
    let lost = Instant::now();
    drop(w.east_controller.take());
    w.etcd.kill(EAST);
    w.dns[EAST].kill();
    if let Some(router) = w.routers[EAST].as_mut() {
        router.kill();
    }
    drop(w.east_node.take());
    w.pair.primary().kill().await;
    let first_west = writes.wait_acked_by("west", 1, TIMEOUT).await;
    // West serves at its full size: it published its entry only with all of it ready.
    let full = full_size(w.standby);
    let all_ready = format!("{full} of {full} replicas ready");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let moved = events(&west.client, &w.west_ns, "FailedOver").await;
        if moved.iter().any(|n| n.contains(&all_ready)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "west's FailedOver Event does not say {all_ready:?}: {moved:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writes.wait_acked_by("west", 50, TIMEOUT).await;
    wait_ready_pods(&west.client, &w.west_ns, full, TIMEOUT).await;
    let (acknowledged, failed) = writes.finish().await;
    wait_lease(&west.client, &w.west_ns, "Active", Some("west"), TIMEOUT).await;
    let present = ids_in(w.pair.standby()).await;
    let lost_writes = acknowledged
        .iter()
        .filter(|(id, _, _)| !present.contains(id))
        .count();
    RegionLoss {
        rto: first_west.saturating_duration_since(lost),
        acknowledged: acknowledged.len(),
        failed,
        lost: lost_writes,
    }
}

/// What a partition measured.
struct Partition {
    /// From the cut to east's database refusing writes.
    fenced: Duration,
    /// From the cut to west's database taking writes.
    promoted: Duration,
    /// Traffic moves seen by clients (from the cut through the heal).
    moves: usize,
    /// Writes acknowledged by east after west was promoted, or acknowledged and missing
    /// from west: writes two primaries accepted.
    split: usize,
    /// Committed on east's database after the split but never acknowledged (PostgreSQL
    /// commits locally before it waits for the synchronous standby).
    unacknowledged_on_east: usize,
}

/// East cut off from the other regions (every frame between its address and theirs
/// dropped: etcd's peers, the database's replication, the controllers) while everything
/// of it keeps running and clients still reach it, under write load; then healed.
async fn partition_east(w: &mut Regions, west: &West) -> Partition {
    let both = started(w, west).await;
    let writes = DnsWrites::start(&both, w.entry_port, 4);
    writes.wait_acked_by("east", 100, TIMEOUT).await;
    let moves = Moves::watch(vec![w.dns[EAST].addr, w.dns[WEST].addr]);
    let cut = Instant::now();
    w.fabric.cut(EAST, WEST);
    w.fabric.cut(EAST, WITNESS);
    let (mut fenced, mut promoted) = (None, None);
    while fenced.is_none() || promoted.is_none() {
        assert!(
            cut.elapsed() < TIMEOUT,
            "no fence ({fenced:?}) or no promotion ({promoted:?})"
        );
        if fenced.is_none() && refuses_writes(w.pair.primary()).await {
            fenced = Some(cut.elapsed());
        }
        if promoted.is_none() && !w.pair.standby().is_in_recovery().await {
            promoted = Some(cut.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (fenced, promoted) = (fenced.unwrap_or_default(), promoted.unwrap_or_default());
    writes.wait_acked_by("west", 50, TIMEOUT).await;
    // Healed: nothing moves back (failback Manual).
    w.fabric.heal();
    w.etcd.wait_serving(EAST, Duration::from_secs(10)).await;
    wait_lease(
        &w.front.client,
        &w.front.name,
        "Standby",
        Some("west"),
        TIMEOUT,
    )
    .await;
    writes.wait_acked_by("west", 50, TIMEOUT).await;
    let (acknowledged, _) = writes.finish().await;
    let answers = moves.finish().await;
    wait_lease(&west.client, &w.west_ns, "Active", Some("west"), TIMEOUT).await;
    assert!(
        refuses_writes(w.pair.primary()).await,
        "east's database was unfenced"
    );
    let promoted_at = cut + promoted;
    let on_west = ids_in(w.pair.standby()).await;
    let on_east = ids_in(w.pair.primary()).await;
    let split = acknowledged
        .iter()
        .filter(|(id, t, v)| (v == "east" && *t >= promoted_at) || !on_west.contains(id))
        .count();
    let acked: BTreeSet<&String> = acknowledged.iter().map(|(id, _, _)| id).collect();
    let unacknowledged_on_east = on_east
        .iter()
        .filter(|id| !on_west.contains(*id) && !acked.contains(id))
        .count();
    Partition {
        fenced,
        promoted,
        moves: answers.len().saturating_sub(1),
        split,
        unacknowledged_on_east,
    }
}

/// The witness cut off, a flapping link of east and the coordination quorum lost: nothing
/// moves; east fences its own database while it cannot renew, and takes its lease back.
async fn nothing_moves(w: &mut Regions, west: &West) {
    let (east_c, east_ns) = (&w.front.client, w.front.name.clone());
    let both = started(w, west).await;
    let (_, _, token) = lease_of(east_c, &east_ns).await;
    assert!(token.is_some_and(|t| t > 0), "{token:?}");
    assert_eq!(
        dns_endpoint(east_c, &east_ns).await,
        Some(json!([w.entries[EAST]]))
    );
    assert_eq!(dns_endpoint(&west.client, &w.west_ns).await, None);
    // `kubectl cutover get fp` in east: the holder, its token, each region's health.
    let kubeconfig = cutover_test_support::kubeconfig().await;
    let (code, out, err) = cli(&kubeconfig, &w.bins, &east_ns, &["get", "fp", "dr"]);
    assert_eq!(code, 0, "{err}");
    let token_text = format!("token {}", token.unwrap_or_default());
    for want in [
        "lease   Active  holder east",
        &token_text,
        "region east",
        "region west",
    ] {
        assert!(out.contains(want), "`get fp dr` lacks {want:?}:\n{out}");
    }
    let (code, out, err) = cli(&west.kubeconfig, &w.bins, &w.west_ns, &["get", "fp"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Standby"), "{out}");
    // A drill asked for in west's cluster: east, the holder, points the records at west
    // for verifySeconds and back; the lease and the databases stay; both clusters get
    // the report.
    let answers = Moves::watch(vec![w.dns[EAST].addr, w.dns[WEST].addr]);
    let (code, out, err) = cli(
        &west.kubeconfig,
        &w.bins,
        &w.west_ns,
        &["drill", "dr", "--timeout", "2m"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Passed"), "{out}");
    let answers = answers.finish().await;
    let (east_entry, west_entry) = (&w.entries[EAST], &w.entries[WEST]);
    assert_eq!(
        answers,
        [
            east_entry.as_str(),
            west_entry.as_str(),
            east_entry.as_str()
        ],
        "the drill's moves"
    );
    for (client, ns) in [(east_c, &east_ns), (&west.client, &w.west_ns)] {
        let api: Api<FailoverPolicy> = Api::namespaced(client.clone(), ns);
        let deadline = Instant::now() + TIMEOUT;
        let report = loop {
            let st = api.get("dr").await.expect("the policy").status;
            if let Some(r) = st
                .and_then(|s| s.last_drill)
                .filter(|r| r.config_map.is_some())
            {
                break r;
            }
            assert!(Instant::now() < deadline, "no drill report in {ns}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(report.verdict.as_deref(), Some("Passed"), "{report:?}");
        assert_eq!((report.from.as_str(), report.to.as_str()), ("east", "west"));
        assert!(report.rto_seconds.is_some_and(|s| s > 0.0), "{report:?}");
        assert_eq!(report.rpo_seconds, Some(0.0), "{report:?}");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let name = report.config_map.clone().unwrap_or_default();
        assert!(
            cms.get_opt(&name).await.expect("read").is_some(),
            "{name} in {ns}"
        );
    }
    assert!(
        w.pair.standby().is_in_recovery().await,
        "the drill promoted west"
    );
    let writes = DnsWrites::start(&both, w.entry_port, 4);
    writes.wait_acked_by("east", 100, TIMEOUT).await;
    let steady = async |why: &str, w: &Regions| {
        let (s, h, t) = lease_of(east_c, &east_ns).await;
        assert_eq!(
            (s.as_deref(), h.as_deref()),
            (Some("Active"), Some("east")),
            "{why}"
        );
        assert_eq!(t, token, "the lease changed hands: {why}");
        assert!(
            w.pair.standby().is_in_recovery().await,
            "west was promoted: {why}"
        );
    };

    // The witness region's link down for three lease TTLs.
    w.fabric.set_link(WITNESS, false);
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        steady("witness cut off", w).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.fabric.set_link(WITNESS, true);
    // East's link flapping: 400 ms down, 800 ms up, six times. Nothing moves: clients are
    // never sent to west, west is never promoted, and east holds the lease after. (With
    // real packet loss TCP's retransmission backoff stretches each outage, and etcd's
    // elections can keep east's member from serving through the whole flapping: east may
    // then fence itself meanwhile and take the lease again after, under a new token.)
    let answers = Moves::watch(vec![w.dns[EAST].addr, w.dns[WEST].addr]);
    for _ in 0..6 {
        w.fabric.set_link(EAST, false);
        tokio::time::sleep(Duration::from_millis(400)).await;
        w.fabric.set_link(EAST, true);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            w.pair.standby().is_in_recovery().await,
            "west was promoted: east's link flapping; east's etcd member:\n{}",
            w.etcd.log_tail(EAST)
        );
    }
    w.etcd.wait_serving(EAST, Duration::from_secs(10)).await;
    wait_lease(east_c, &east_ns, "Active", Some("east"), TIMEOUT).await;
    writes.wait_acked_by("east", 50, TIMEOUT).await;
    assert!(
        w.pair.standby().is_in_recovery().await,
        "west was promoted after east's link flapped"
    );
    let answers = answers.finish().await;
    assert!(
        answers.iter().all(|a| *a == w.entries[EAST]),
        "clients were sent elsewhere while east's link flapped: {answers:?}"
    );
    let (_, _, after) = lease_of(east_c, &east_ns).await;
    println!(
        "flapping link: nothing moved; east's lease token {} → {} ({})",
        token.unwrap_or_default(),
        after.unwrap_or_default(),
        if after == token {
            "held throughout"
        } else {
            "east fenced itself meanwhile and took the lease again"
        }
    );

    // The quorum lost: every region cut off from every other one.
    let cut = Instant::now();
    w.fabric.cut(EAST, WEST);
    w.fabric.cut(EAST, WITNESS);
    w.fabric.cut(WEST, WITNESS);
    while !refuses_writes(w.pair.primary()).await {
        assert!(cut.elapsed() < TIMEOUT, "east never fenced its database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = cut.elapsed();
    wait_lease(east_c, &east_ns, "Fenced", None, TIMEOUT).await;
    wait_lease(&west.client, &w.west_ns, "Unreachable", None, TIMEOUT).await;
    let hold = Instant::now() + Duration::from_secs(4);
    while Instant::now() < hold {
        assert!(
            w.pair.standby().is_in_recovery().await,
            "west was promoted without a quorum"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "quorum lost: east fenced its database {:.2}s after the cut (lease 3s)",
        fenced_after.as_secs_f64()
    );
    w.fabric.heal();
    wait_lease(east_c, &east_ns, "Active", Some("east"), TIMEOUT).await;
    wait_resolves(&both, &w.entries[EAST], TIMEOUT).await;
    writes.wait_acked_by("east", 50, TIMEOUT).await;
    assert!(
        w.pair.standby().is_in_recovery().await,
        "west was promoted after the heal"
    );
    let _ = writes.finish().await;
}

/// A failover request (`kubectl cutover failover dr --to west`, asked in east's cluster)
/// under write load: east fences its database and hands the lease to west, which promotes
/// its standby and publishes; every acknowledged write is on west's promoted database.
/// A request back to east is then refused (its database is a fenced old primary, not a
/// standby), saying so, and moves nothing.
async fn hand_over(w: &mut Regions, west: &West) {
    let (east_c, east_ns) = (&w.front.client, w.front.name.clone());
    let both = started(w, west).await;
    let writes = DnsWrites::start(&both, w.entry_port, 4);
    writes.wait_acked_by("east", 100, TIMEOUT).await;
    let kubeconfig = cutover_test_support::kubeconfig().await;
    let asked = Instant::now();
    let (code, out, err) = cli(
        &kubeconfig,
        &w.bins,
        &east_ns,
        &["failover", "dr", "--to", "west", "--timeout", "1m"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("traffic on west"), "{out}");
    wait_lease(&west.client, &w.west_ns, "Active", Some("west"), TIMEOUT).await;
    wait_resolves(&both, &w.entries[WEST], TIMEOUT).await;
    let first_west = writes.wait_acked_by("west", 50, TIMEOUT).await;
    assert!(
        !w.pair.standby().is_in_recovery().await,
        "west's database was not promoted"
    );
    wait_lease(east_c, &east_ns, "Standby", Some("west"), TIMEOUT).await;
    let (acknowledged, _) = writes.finish().await;
    let present = ids_in(w.pair.standby()).await;
    let lost = acknowledged
        .iter()
        .filter(|(id, _, _)| !present.contains(id))
        .count();
    assert_eq!(lost, 0, "acknowledged writes lost in the handover");
    let started_ev = events(east_c, &east_ns, "FailoverStarted").await;
    assert!(
        started_ev
            .iter()
            .any(|m| m.contains("handed the lease to west")),
        "{started_ev:?}"
    );
    println!(
        "handover: first write acknowledged by west {:.2}s after the request; {} acknowledged, 0 lost",
        first_west.saturating_duration_since(asked).as_secs_f64(),
        acknowledged.len()
    );
    // Back to east, asked in west's cluster: refused, nothing moves.
    let (code, out, err) = cli(
        &west.kubeconfig,
        &w.bins,
        &w.west_ns,
        &["failover", "dr", "--to", "east", "--timeout", "1m"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("not a standby"),
        "{out}{err}"
    );
    wait_lease(&west.client, &w.west_ns, "Active", Some("west"), TIMEOUT).await;
    let refused = events(&west.client, &w.west_ns, "FailoverRefused").await;
    assert!(!refused.is_empty(), "no FailoverRefused Event in west");
}

pub(super) async fn scenario_regions(west: &West) {
    let mut w = regions(west, "dr-regions", (91, 92), Standby::PilotLight).await;
    nothing_moves(&mut w, west).await;
    let loss = lose_east(&mut w, west).await;
    println!(
        "region lost: first write acknowledged by west {:.2}s after; {} writes acknowledged, {} failed, {} lost",
        loss.rto.as_secs_f64(),
        loss.acknowledged,
        loss.failed,
        loss.lost
    );
    assert_eq!(loss.lost, 0, "acknowledged writes lost");
    let (_, _, west_token) = lease_of(&west.client, &w.west_ns).await;
    assert!(west_token.is_some_and(|t| t > 0));
    assert_eq!(
        dns_endpoint(&west.client, &w.west_ns).await,
        Some(json!([w.entries[WEST]]))
    );
    drop(w);

    let mut w = regions(west, "dr-partition", (93, 94), Standby::FullSize).await;
    let cut = partition_east(&mut w, west).await;
    println!(
        "partition: east fenced {:.2}s, west promoted {:.2}s after the cut; {} move(s), {} writes accepted by two primaries, {} committed on east and never acknowledged",
        cut.fenced.as_secs_f64(),
        cut.promoted.as_secs_f64(),
        cut.moves,
        cut.split,
        cut.unacknowledged_on_east
    );
    assert!(
        cut.fenced < cut.promoted,
        "east fenced after west was promoted"
    );
    assert_eq!(cut.moves, 1, "traffic moved more than once (or never)");
    assert_eq!(cut.split, 0, "writes accepted by two primaries");
    drop(w);

    let mut w = regions(west, "dr-handover", (79, 80), Standby::FullSize).await;
    hand_over(&mut w, west).await;
}

/// `cargo xtask bench dr`: region losses and partitions, a fresh world for each trial.
pub(super) async fn benchmark(west: &West, runs: usize) {
    let mut losses = Vec::new();
    for standby in [Standby::FullSize, Standby::PilotLight] {
        let (mut rto, mut lost, mut acked) = (Vec::new(), 0, 0);
        for run in 0..runs {
            let name = format!("bench-loss-{}-{run}", full_size(standby));
            let mut w = regions(west, &name, (91, 92), standby).await;
            let l = lose_east(&mut w, west).await;
            println!(
                "region loss {} ({standby:?} standby): RTO {:.3}s, {} acknowledged, {} lost",
                run + 1,
                l.rto.as_secs_f64(),
                l.acknowledged,
                l.lost
            );
            rto.push(l.rto.as_secs_f64());
            lost += l.lost;
            acked += l.acknowledged;
        }
        losses.push((standby, rto, lost, acked));
    }
    let (mut fence, mut promote, mut moves, mut split, mut unacked, mut ordered) =
        (Vec::new(), Vec::new(), 0, 0, 0, 0);
    for run in 0..runs * 2 {
        let mut w = regions(
            west,
            &format!("bench-cut-{run}"),
            (93, 94),
            Standby::FullSize,
        )
        .await;
        let p = partition_east(&mut w, west).await;
        println!(
            "partition {}: fenced {:.3}s, promoted {:.3}s, {} move(s), {} split, {} unacknowledged on east",
            run + 1,
            p.fenced.as_secs_f64(),
            p.promoted.as_secs_f64(),
            p.moves,
            p.split,
            p.unacknowledged_on_east
        );
        fence.push(p.fenced.as_secs_f64());
        promote.push(p.promoted.as_secs_f64());
        moves = moves.max(p.moves);
        split += p.split;
        unacked += p.unacknowledged_on_east;
        ordered += usize::from(p.fenced < p.promoted);
    }
    for (standby, rto, lost, acked) in losses {
        let (m, p90, min, max) = cutover_test_support::bench::summary(&rto);
        let size = match standby {
            Standby::FullSize => "full-size standby (1 of 1 replica)".to_string(),
            Standby::PilotLight => format!(
                "pilot-light standby (1 of {} replicas, serving at full size)",
                full_size(standby)
            ),
        };
        println!(
            "region loss over {runs} trials, {size}: RTO median {m:.3}s, p90 {p90:.3}s, min {min:.3}s, max {max:.3}s (goal < 5s); {lost} of {acked} acknowledged writes lost (goal 0)"
        );
    }
    let (fm, fp90, _, _) = cutover_test_support::bench::summary(&fence);
    let (pm, pp90, _, _) = cutover_test_support::bench::summary(&promote);
    println!(
        "partitions over {} trials: fence before promotion in {ordered}; cut to self-fencing median {fm:.3}s (p90 {fp90:.3}s), cut to new primary median {pm:.3}s (p90 {pp90:.3}s); most moves in a trial {moves}; {split} writes accepted by two primaries (goal 0); {unacked} committed on the old primary, never acknowledged",
        runs * 2
    );
}
