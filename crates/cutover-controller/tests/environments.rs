//! `spec.environments`: each color in a namespace of its own (colors in another cluster are
//! tested end to end, with real traffic, in `disaster_recovery.rs`).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
use cutover_api::{BlueGreenDeployment, COLOR_LABEL, Color, Phase};
use cutover_test_support::{TestNamespace, watch_while};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::runtime::watcher;
use serde_json::json;

const OWNER_UID: &str = "cutover.dev/owner-uid";

fn environments(blue: &str, green: &str) -> serde_json::Value {
    json!({ "environments": { "blue": { "namespace": blue }, "green": { "namespace": green } } })
}

/// Ready addresses of the EndpointSlices of Service `svc` in `ns`.
async fn ready_addresses(ns: &TestNamespace, svc: &str) -> BTreeSet<String> {
    ready_addresses_in(&ns.api(), svc).await
}

fn addresses(slices: &[EndpointSlice]) -> BTreeSet<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.clone())
        .collect()
}

/// Delete a BlueGreenDeployment and wait until it is gone (its finalizer done), while
/// the controller runs: a test must not leave a namespace held by a finalizer.
async fn delete_and_wait(ns: &TestNamespace, name: &str) {
    let api: Api<BlueGreenDeployment> = ns.api();
    let uid = api.get(name).await.expect("get").metadata.uid.expect("uid");
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        TIMEOUT,
        kube::runtime::wait::await_condition(api, name, conditions::is_deleted(&uid)),
    )
    .await
    .expect("the BlueGreenDeployment gone (its finalizer done) in time")
    .expect("watch");
}

async fn deployment_in(ns: &TestNamespace, name: &str) -> Option<Deployment> {
    ns.api::<Deployment>()
        .get_opt(name)
        .await
        .expect("get Deployment")
}

/// A Deployment `name` in `ns` the BlueGreenDeployment does not own, with `labels`.
async fn bystander(ns: &TestNamespace, name: &str, labels: serde_json::Value) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                          "spec": { "containers": [{ "name": "app", "image": "other:1" }] } }
        }
    }))
    .expect("deployment");
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .expect("create bystander");
}

#[tokio::test]
async fn colors_in_namespaces_of_their_own_release_switch_and_clean_up() {
    let (home, _ctrl) = setup("env-home").await;
    let blue_ns = TestNamespace::new("env-blue").await;
    let green_ns = TestNamespace::new("env-green").await;
    // Config is read at home and snapshotted where each color runs.
    let cm: ConfigMap = serde_json::from_value(
        json!({ "metadata": { "name": "settings" }, "data": { "mode": "fast" } }),
    )
    .expect("cm");
    home.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");
    let mut spec = environments(&blue_ns.name, &green_ns.name);
    spec["template"] = json!({ "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{
        "name": "app", "image": "shop:1", "ports": [{ "containerPort": 8080 }],
        "envFrom": [{ "configMapRef": { "name": "settings" } }] }] } });
    create(&home, &bgd("shop", "shop:1", 2, spec)).await;
    // What it must never delete: objects in the colors' namespaces it does not own, even
    // those labelled as Cutover's or as another BlueGreenDeployment's.
    bystander(
        &blue_ns,
        "bystander",
        json!({ "app.kubernetes.io/managed-by": "cutover" }),
    )
    .await;
    bystander(&green_ns, "decoy", json!({ OWNER_UID: "someone-else" })).await;

    let b = healthy_on(&home, "shop", Color::Blue).await;
    let uid = b.metadata.uid.clone().expect("uid");
    assert!(
        b.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "cutover.dev/environments"),
        "a BlueGreenDeployment with remote colors has the clean-up finalizer"
    );
    let blue_status = b
        .status
        .as_ref()
        .and_then(|s| s.blue.clone())
        .expect("blue");
    assert_eq!(
        blue_status.namespace.as_deref(),
        Some(blue_ns.name.as_str())
    );

    // Blue runs in its namespace, marked with the owner's uid, and nothing runs at home.
    let d = deployment_in(&blue_ns, "shop-blue")
        .await
        .expect("shop-blue in the blue namespace");
    assert_eq!(
        d.metadata.labels.as_ref().and_then(|l| l.get(OWNER_UID)),
        Some(&uid)
    );
    assert!(d.metadata.owner_references.is_none());
    assert!(deployment_in(&home, "shop-blue").await.is_none());
    // Its config snapshot is there too, and the pods use it.
    let snapshots = blue_ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("cutover.dev/snapshot-of=settings"))
        .await
        .expect("list snapshots");
    let snapshot = snapshots
        .items
        .first()
        .expect("a snapshot in the blue namespace");
    let env_from = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers[0].env_from.clone())
        .expect("envFrom");
    assert_eq!(
        env_from[0].config_map_ref.as_ref().map(|r| r.name.clone()),
        snapshot.metadata.name.clone()
    );

    // The live Service at home has no selector; its endpoints are blue's, mirrored.
    let live: Service = home.api::<Service>().get("shop").await.expect("live");
    assert!(
        live.spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .is_none()
    );
    let slices: Api<EndpointSlice> = home.api();
    let blue_eps = ready_addresses(&blue_ns, "shop-blue").await;
    assert_eq!(blue_eps.len(), 2, "both blue pods are ready endpoints");
    let live_slice = slices.get("shop").await.expect("live EndpointSlice");
    assert_eq!(
        live_slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(COLOR_LABEL))
            .map(String::as_str),
        Some("blue")
    );
    assert_eq!(addresses(std::slice::from_ref(&live_slice)), blue_eps);

    // A release to green in its namespace: the live Service is never empty, and ends on
    // green's endpoints.
    let seen = Arc::new(Mutex::new(Vec::<(Option<String>, usize)>::new()));
    let record = seen.clone();
    let home_ref = &home;
    watch_while(
        &slices,
        watcher::Config::default().fields("metadata.name=shop"),
        move |objs| {
            if let Some(s) = objs.first() {
                let color = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(COLOR_LABEL))
                    .cloned();
                let n = addresses(std::slice::from_ref(s.as_ref())).len();
                let mut v = record.lock().expect("lock");
                if v.last() != Some(&(color.clone(), n)) {
                    v.push((color, n));
                }
            }
        },
        async move {
            set_image(home_ref, "shop", "shop:2").await;
            healthy_on(home_ref, "shop", Color::Green).await;
        },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter().all(|(_, n)| *n > 0),
        "the live Service had no endpoints at some point: {seen:?}"
    );
    assert_eq!(
        seen.last().map(|(c, n)| (c.as_deref(), *n)),
        Some((Some("green"), 2)),
        "{seen:?}"
    );
    let green_eps = ready_addresses(&green_ns, "shop-green").await;
    assert_eq!(
        addresses(&[slices.get("shop").await.expect("live")]),
        green_eps
    );
    assert!(deployment_in(&green_ns, "shop-green").await.is_some());
    // The per-color Services at home mirror each color.
    assert_eq!(ready_addresses(&home, "shop-green").await, green_eps);

    // Deleting the BlueGreenDeployment deletes what it owns in the colors' namespaces —
    // and nothing else.
    delete_and_wait(&home, "shop").await;
    assert!(deployment_in(&blue_ns, "shop-blue").await.is_none());
    assert!(deployment_in(&green_ns, "shop-green").await.is_none());
    assert!(
        blue_ns
            .api::<Service>()
            .get_opt("shop-blue")
            .await
            .expect("get")
            .is_none()
    );
    assert!(deployment_in(&blue_ns, "bystander").await.is_some());
    assert!(deployment_in(&green_ns, "decoy").await.is_some());
}

#[tokio::test]
async fn a_missing_namespace_or_an_object_it_does_not_own_is_refused_and_left_alone() {
    let (home, _ctrl) = setup("env-refuse").await;
    let green_ns = TestNamespace::new("env-taken").await;
    let missing = format!("{}-missing", home.name);
    create(
        &home,
        &bgd("nowhere", "shop:1", 1, environments(&home.name, &missing)),
    )
    .await;
    let b = wait_bgd(
        &home,
        "nowhere",
        "Degraded for the missing namespace",
        |b| phase(b) == Some(Phase::Degraded),
    )
    .await;
    let message = b.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("spec.environments.green.namespace") && message.contains(&missing),
        "{message}"
    );
    assert!(
        deployment_in(&home, "nowhere-blue").await.is_none(),
        "nothing is deployed while the spec is refused"
    );

    // A Deployment of the same name that someone else owns, in green's namespace.
    bystander(&green_ns, "shop-green", json!({ "team": "theirs" })).await;
    let before = deployment_in(&green_ns, "shop-green")
        .await
        .expect("theirs");
    create(
        &home,
        &bgd(
            "shop",
            "shop:1",
            1,
            environments(&home.name, &green_ns.name),
        ),
    )
    .await;
    let b = wait_bgd(&home, "shop", "Degraded for the conflict", |b| {
        phase(b) == Some(Phase::Degraded)
    })
    .await;
    let message = b.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains("shop-green") && message.contains("not owned"),
        "{message}"
    );
    let after = deployment_in(&green_ns, "shop-green")
        .await
        .expect("theirs");
    assert_eq!(
        (before.metadata.generation, before.metadata.labels),
        (after.metadata.generation, after.metadata.labels),
        "the other owner's Deployment was changed"
    );
}

#[tokio::test]
async fn environments_cannot_change_once_set() {
    let (home, _ctrl) = setup("env-immutable").await;
    let other = TestNamespace::new("env-other").await;
    create(
        &home,
        &bgd("shop", "shop:1", 1, environments(&home.name, &other.name)),
    )
    .await;
    let api: Api<BlueGreenDeployment> = home.api();
    let err = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "environments": { "green": { "namespace": home.name } } } }),
            ),
        )
        .await
        .expect_err("moving a color is rejected");
    assert!(err.to_string().contains("spec.environments"), "{err}");
    let err = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "environments": null } })),
        )
        .await
        .expect_err("dropping environments is rejected");
    assert!(err.to_string().contains("spec.environments"), "{err}");
    delete_and_wait(&home, "shop").await;
}

/// The kubeconfig of the test cluster, with its server address replaced by `server`.
async fn kubeconfig_text(server: Option<&str>) -> String {
    let text = std::fs::read_to_string(cutover_test_support::kubeconfig().await)
        .expect("the test cluster's kubeconfig");
    match server {
        None => text,
        Some(s) => text
            .lines()
            .map(|l| match l.split_once("server:") {
                Some((indent, _)) => format!("{indent}server: {s}"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

async fn put_secret(ns: &TestNamespace, name: &str, kubeconfig: &str) {
    let secret = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name },
                         "stringData": { "kubeconfig": kubeconfig } });
    ns.api::<k8s_openapi::api::core::v1::Secret>()
        .patch(
            name,
            &PatchParams::apply("cutover-tests").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply Secret");
}

/// Green "in another cluster" (this one, through a kubeconfig Secret). When that cluster
/// stops answering, the release waits and says why, and the live Service's mirror still
/// follows blue's pods at home.
#[tokio::test]
async fn an_unreachable_cluster_holds_the_release_and_the_reachable_mirror_follows_its_pods() {
    let (home, _ctrl) = setup("env-down").await;
    let other = TestNamespace::new("env-down-green").await;
    put_secret(&home, "remote", &kubeconfig_text(None).await).await;
    let spec = json!({ "environments": { "green": { "namespace": other.name,
                                                    "clusterRef": { "secretName": "remote" } } } });
    create(&home, &bgd("shop", "shop:1", 2, spec)).await;
    healthy_on(&home, "shop", Color::Blue).await;
    let slices: Api<EndpointSlice> = home.api();
    let live = slices.get("shop").await.expect("live EndpointSlice");
    assert_eq!(addresses(std::slice::from_ref(&live)).len(), 2);

    // The "other cluster" stops answering.
    put_secret(
        &home,
        "remote",
        &kubeconfig_text(Some("https://127.0.0.1:1")).await,
    )
    .await;
    let b = wait_bgd(
        &home,
        "shop",
        "Degraded: the cluster does not answer",
        |b| {
            phase(b) == Some(Phase::Degraded)
                && b.status
                    .as_ref()
                    .and_then(|s| s.message.as_deref())
                    .is_some_and(|m| m.contains("the release waits"))
        },
    )
    .await;
    assert!(
        condition(&b, "Degraded").is_some_and(|c| c.reason == "ClusterUnreachable"),
        "{:?}",
        b.status
    );
    // Blue's pods change at home (a third one): the live mirror follows.
    home.api::<Deployment>()
        .patch(
            "shop-blue",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("scale blue");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let live = slices.get("shop").await.expect("live EndpointSlice");
        let mirrored = addresses(std::slice::from_ref(&live));
        let blue = ready_addresses(&home, "shop-blue").await;
        if mirrored.len() == 3 && mirrored == blue {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live mirror did not follow blue: {mirrored:?} vs {blue:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The cluster answers again: the release goes on from where it was.
    put_secret(&home, "remote", &kubeconfig_text(None).await).await;
    healthy_on(&home, "shop", Color::Blue).await;
    delete_and_wait(&home, "shop").await;
}

/// The live switch with each color in a namespace of its own (the controller rewrites the
/// live Service's mirrored EndpointSlice) against the same BlueGreenDeployment with both
/// colors at home (the controller changes the live Service's selector and Kubernetes'
/// EndpointSlice controller follows) — the baseline, in the same run, alternating. Each
/// run: a release paused before promotion; from the promote request to the moment the live
/// Service's ready endpoints are exactly the new color's pods, seen through a watch.
/// `cargo xtask bench environments` (`CUTOVER_BENCH_RUNS`, default 10).
#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench environments"]
async fn switch_latency_benchmark() {
    let runs = cutover_test_support::bench::runs();
    let (home, _ctrl) = setup("env-bench").await;
    let blue_ns = TestNamespace::new("env-bench-blue").await;
    let green_ns = TestNamespace::new("env-bench-green").await;
    let paused = json!({ "strategy": { "steps": [{ "pause": {} }] } });
    create(&home, &bgd("local", "shop:0", 2, paused.clone())).await;
    let mut spread = environments(&blue_ns.name, &green_ns.name);
    spread["strategy"] = paused["strategy"].clone();
    create(&home, &bgd("spread", "shop:0", 2, spread)).await;
    healthy_on(&home, "local", Color::Blue).await;
    healthy_on(&home, "spread", Color::Blue).await;
    let slices: Api<EndpointSlice> = home.api();
    let mut times: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in 1..=runs {
        for name in ["local", "spread"] {
            set_image(&home, name, &format!("shop:{run}")).await;
            let b = wait_bgd(&home, name, "the release paused before promotion", |b| {
                phase(b) == Some(Phase::Paused)
            })
            .await;
            let new = match cutover_test_support::release::active(&b) {
                Some(Color::Blue) => "green",
                _ => "blue",
            };
            // Its pods are ready; their endpoints follow (the EndpointSlice controller).
            let deadline = std::time::Instant::now() + TIMEOUT;
            let target = loop {
                let t = ready_addresses(&home, &format!("{name}-{new}")).await;
                if t.len() == 2 {
                    break t;
                }
                assert!(std::time::Instant::now() < deadline, "{name}-{new}: {t:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            let seen: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
            let done = Arc::new(tokio::sync::Notify::new());
            let (record, notify) = (seen.clone(), done.clone());
            let want = target.clone();
            let started = watch_while(
                &slices,
                watcher::Config::default().labels(&format!("kubernetes.io/service-name={name}")),
                move |objs| {
                    let now: Vec<EndpointSlice> = objs.iter().map(|s| s.as_ref().clone()).collect();
                    let mut r = record.lock().expect("lock");
                    if r.is_none() && addresses(&now) == want {
                        *r = Some(std::time::Instant::now());
                        notify.notify_one();
                    }
                },
                async {
                    let t0 = std::time::Instant::now();
                    request(&home, name, cutover_api::requests::PROMOTE).await;
                    tokio::time::timeout(TIMEOUT, done.notified())
                        .await
                        .expect("the live Service switched in time");
                    t0
                },
            )
            .await;
            let at = seen.lock().expect("lock").expect("seen");
            times
                .entry(name)
                .or_default()
                .push(at.duration_since(started).as_secs_f64() * 1000.0);
            healthy_on(
                &home,
                name,
                if new == "green" {
                    Color::Green
                } else {
                    Color::Blue
                },
            )
            .await;
        }
    }
    let (lm, lp, lmin, lmax) = cutover_test_support::bench::summary(&times["local"]);
    let (sm, sp, smin, smax) = cutover_test_support::bench::summary(&times["spread"]);
    println!(
        "live switch, promote request → live Service on the new color's pods, {runs} runs each:"
    );
    println!(
        "  baseline, both colors at home (selector):  median {lm:.1} ms, p90 {lp:.1} ms, min {lmin:.1}, max {lmax:.1}"
    );
    println!(
        "  colors in their own namespaces (mirror):   median {sm:.1} ms, p90 {sp:.1} ms, min {smin:.1}, max {smax:.1}"
    );
    println!(
        "  ratio (medians) mirror / selector: {:.2}",
        sm / lm.max(f64::EPSILON)
    );
    delete_and_wait(&home, "spread").await;
}

/// A color in a second local cluster: from a pod change there to the mirrored
/// EndpointSlice at home. The baseline, in the same runs, is Kubernetes' own path in that
/// cluster: from the pod's deletion to its EndpointSlice there changing.
/// The controller's part is the rest: the watch of that cluster seeing the slice change,
/// one pass, and one write at home.
#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench environments"]
async fn remote_pod_change_benchmark() {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use std::time::Instant;

    let runs = cutover_test_support::bench::runs();
    let base = std::env::var("CUTOVER_TEST_CLUSTER").unwrap_or_else(|_| "cutover".into());
    let far = Far::up(&format!("{base}-far")).await;
    let (home, _ctrl) = setup("env-far").await;
    let far_ns = home.name.clone();
    let namespaces: Api<Namespace> = Api::all(far.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": far_ns } })).expect("ns"),
        )
        .await
        .expect("namespace in the far cluster");
    let kubeconfig = std::fs::read_to_string(&far.kubeconfig).expect("far kubeconfig");
    put_secret(&home, "far", &kubeconfig).await;
    let spec = json!({ "environments": { "blue": { "namespace": far_ns,
                                                   "clusterRef": { "secretName": "far" } } } });
    create(&home, &bgd("shop", "shop:1", 2, spec)).await;
    healthy_on(&home, "shop", Color::Blue).await;

    let far_slices: Api<EndpointSlice> = Api::namespaced(far.client.clone(), &far_ns);
    let far_pods: Api<Pod> = Api::namespaced(far.client.clone(), &far_ns);
    let home_slices: Api<EndpointSlice> = home.api();
    let (mut baseline, mut mirror) = (Vec::new(), Vec::new());
    type Log = Arc<Mutex<Vec<(Instant, BTreeSet<String>)>>>;
    for _ in 0..runs {
        let before = ready_addresses_in(&far_slices, "shop-blue").await;
        assert_eq!(before.len(), 2, "{before:?}");
        let (far_log, home_log): (Log, Log) = Default::default();
        let (fl, hl) = (far_log.clone(), home_log.clone());
        let done = Arc::new(tokio::sync::Notify::new());
        let notify = done.clone();
        let before_set = before.clone();
        let deleted_at = watch_while(
            &far_slices,
            watcher::Config::default().labels("kubernetes.io/service-name=shop-blue"),
            move |objs| {
                let now: Vec<EndpointSlice> = objs.iter().map(|s| s.as_ref().clone()).collect();
                fl.lock()
                    .expect("lock")
                    .push((Instant::now(), addresses(&now)));
            },
            watch_while(
                &home_slices,
                watcher::Config::default().labels("kubernetes.io/service-name=shop"),
                move |objs| {
                    let now: Vec<EndpointSlice> = objs.iter().map(|s| s.as_ref().clone()).collect();
                    let set = addresses(&now);
                    hl.lock().expect("lock").push((Instant::now(), set.clone()));
                    // The first change at home (kwok may give the replacement the
                    // freed address back, so the end state can equal the start).
                    if set != before_set {
                        notify.notify_one();
                    }
                },
                async {
                    let pod = far_pods
                        .list(&ListParams::default().labels(&format!("{COLOR_LABEL}=blue")))
                        .await
                        .expect("pods")
                        .items
                        .into_iter()
                        .next()
                        .expect("a blue pod");
                    let t0 = Instant::now();
                    far_pods
                        .delete(&pod.metadata.name.expect("name"), &DeleteParams::default())
                        .await
                        .expect("delete the pod");
                    tokio::time::timeout(TIMEOUT, done.notified())
                        .await
                        .expect("the home mirror followed the far pods in time");
                    t0
                },
            ),
        )
        .await;
        let far_log = far_log.lock().expect("lock").clone();
        let home_log = home_log.lock().expect("lock").clone();
        let (home_at, after) = home_log
            .iter()
            .find(|(_, s)| *s != before)
            .cloned()
            .expect("the home mirror's new endpoints");
        let far_at = far_log
            .iter()
            .find(|(_, s)| *s == after)
            .map(|(t, _)| *t)
            .expect("the far slice held them first");
        baseline.push(far_at.duration_since(deleted_at).as_secs_f64() * 1000.0);
        mirror.push(home_at.duration_since(far_at).as_secs_f64() * 1000.0);
        // Back to two ready pods, mirrored, before the next run.
        healthy_on(&home, "shop", Color::Blue).await;
        let deadline = Instant::now() + TIMEOUT;
        while ready_addresses_in(&home_slices, "shop").await.len() != 2 {
            assert!(
                Instant::now() < deadline,
                "the mirror did not come back to 2 pods"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let (bm, bp, bmin, bmax) = cutover_test_support::bench::summary(&baseline);
    let (mm, mp, mmin, mmax) = cutover_test_support::bench::summary(&mirror);
    println!("a pod of a color in a second cluster is replaced, {runs} runs:");
    println!(
        "  baseline, pod deleted → its EndpointSlice there changes: median {bm:.1} ms, p90 {bp:.1} ms, min {bmin:.1}, max {bmax:.1}"
    );
    println!(
        "  that change → the same endpoints in the mirrored EndpointSlice at home: median {mm:.1} ms, p90 {mp:.1} ms, min {mmin:.1}, max {mmax:.1}"
    );
    println!(
        "  ratio (medians) mirror / baseline: {:.2}",
        mm / bm.max(f64::EPSILON)
    );
    delete_and_wait(&home, "shop").await;
}

/// Ready addresses of Service `svc`'s EndpointSlices through `slices`.
async fn ready_addresses_in(slices: &Api<EndpointSlice>, svc: &str) -> BTreeSet<String> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .expect("list EndpointSlices");
    addresses(&list.items)
}

/// A second local cluster; brought down when dropped.
struct Far {
    name: String,
    kubeconfig: std::path::PathBuf,
    client: kube::Client,
}

impl Far {
    async fn up(name: &str) -> Far {
        let state = cutover_test_support::local_cluster::up(
            &cutover_test_support::local_cluster::UpOptions {
                name: name.to_string(),
                nodes: 1,
                process_node: None,
                real_node: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("second local cluster {name}: {e}"));
        let client = cutover_test_support::local_cluster::client_for(&state.kubeconfig)
            .await
            .expect("client of the second cluster");
        Far {
            name: name.to_string(),
            kubeconfig: state.kubeconfig,
            client,
        }
    }
}

impl Drop for Far {
    fn drop(&mut self) {
        let _ = cutover_test_support::local_cluster::down(&self.name);
    }
}

/// `spec.workloadRef` with the colors in namespaces of their own: the user's Service at
/// home is switched through a mirrored EndpointSlice of the live color's endpoints (its
/// own selector narrowed to the color, which selects nothing at home), and given back
/// when the BlueGreenDeployment goes. The Service has ready endpoints at every moment.
#[tokio::test]
async fn an_adopted_deployment_moves_to_colors_elsewhere_and_back_with_its_service_never_empty() {
    use cutover_test_support::workload;
    let (home, _ctrl) = setup("env-adopt").await;
    let blue_ns = TestNamespace::new("env-adopt-blue").await;
    let green_ns = TestNamespace::new("env-adopt-green").await;
    let pod = json!({ "containers": [{ "name": "app", "image": "shop:1", "ports": [{ "containerPort": 8080 }] }] });
    workload::deployment(&home, "shop", 2, pod).await;
    workload::service(&home, "shop").await;
    let slices: Api<EndpointSlice> = home.api();
    let of_shop = || watcher::Config::default().labels("kubernetes.io/service-name=shop");
    cutover_test_support::wait_for(
        &home.api::<Deployment>(),
        "shop",
        "the Deployment available",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.available_replicas)
                == Some(2)
        },
    )
    .await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while ready_addresses(&home, "shop").await.len() != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Service's endpoints"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let before = ready_addresses(&home, "shop").await;

    // Every state of the Service's endpoints (all its slices) from adoption to give-back.
    let seen = Arc::new(Mutex::new(Vec::<BTreeSet<String>>::new()));
    let record = seen.clone();
    let (home_ref, blue_ref, green_ref) = (&home, &blue_ns, &green_ns);
    watch_while(
        &slices,
        of_shop(),
        move |objs| {
            let all: Vec<EndpointSlice> = objs.iter().map(|s| s.as_ref().clone()).collect();
            let now = addresses(&all);
            let mut v = record.lock().expect("lock");
            if v.last() != Some(&now) {
                v.push(now);
            }
        },
        async move {
            let mut b = cutover_test_support::workload::adopting("shop", "shop", 2, "OnSuccess");
            b.spec.environments = serde_json::from_value(
                environments(&blue_ref.name, &green_ref.name)["environments"].clone(),
            )
            .expect("environments");
            create(home_ref, &b).await;
            healthy_on(home_ref, "shop", Color::Blue).await;
            let blue_eps = ready_addresses(blue_ref, "shop-blue").await;
            let deadline = std::time::Instant::now() + TIMEOUT;
            while ready_addresses(home_ref, "shop").await != blue_eps {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the Service serves blue alone"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            home_ref
                .api::<Deployment>()
                .patch(
                    "shop",
                    &PatchParams::apply("helm").force(),
                    &Patch::Apply(json!({
                        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop" },
                        "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "shop:2" }] } } }
                    })),
                )
                .await
                .expect("set the image");
            healthy_on(home_ref, "shop", Color::Green).await;
            let green_eps = ready_addresses(green_ref, "shop-green").await;
            let deadline = std::time::Instant::now() + TIMEOUT;
            while ready_addresses(home_ref, "shop").await != green_eps {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the Service serves green alone"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            delete_and_wait(home_ref, "shop").await;
            let deadline = std::time::Instant::now() + TIMEOUT;
            while ready_addresses(home_ref, "shop").await.len() != 2
                || home_ref
                    .api::<EndpointSlice>()
                    .get_opt("shop")
                    .await
                    .expect("get")
                    .is_some()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the Deployment's pods alone behind the Service"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    eprintln!("the Service's ready endpoints over time: {seen:?}");
    assert!(
        seen.iter().all(|s| !s.is_empty()),
        "the Service had no ready endpoint at some point: {seen:?}"
    );
    assert_eq!(seen.first(), Some(&before));
    let svc = home
        .api::<Service>()
        .get("shop")
        .await
        .expect("the Service stays");
    assert_eq!(
        svc.spec.and_then(|s| s.selector),
        Some([("app".to_string(), "shop".to_string())].into()),
        "its own selector again"
    );
    assert!(
        svc.metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .all(|k| !k.starts_with("cutover.dev/")),
        "no annotation of Cutover's left"
    );
    let d = home.api::<Deployment>().get("shop").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(2));
    assert!(deployment_in(&blue_ns, "shop-blue").await.is_none());
    assert!(deployment_in(&green_ns, "shop-green").await.is_none());
}
