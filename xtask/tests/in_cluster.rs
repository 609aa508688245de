//! Cutover installed as users install it, tested as it runs in production: the Helm chart
//! with the locally built images on the real node, the controller in its pods under its
//! own ServiceAccount (in-cluster config), the router in its pods, and the README's tour
//! driven by `kubectl cutover` with real HTTP through the router: release, promote (with
//! the leader pod killed mid-release), undo to the warm standby, abort — no failed request.
//! Then least privilege, `helm upgrade`, and `helm uninstall` leaving only the CRDs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, get, xtask};
use cutover_api::BlueGreenDeployment;
use cutover_test_support::load::Load;
use cutover_test_support::local_cluster::{self as local, image};
use cutover_test_support::upstream::{GATEWAY_API, install_crds};
use futures::StreamExt as _;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

const CLUSTER: &str = "realnode-e2e";
const NS: &str = "shop";
const SYSTEM: &str = "cutover-system";

/// Run a program; (exit code, stdout, stderr).
fn run(program: &Path, args: &[&str], kubeconfig: &Path) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl cutover ARGS` in namespace shop; must succeed.
fn cutover(bin: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    let (code, out, err) = run(bin, &all, kubeconfig);
    assert_eq!(code, 0, "kubectl cutover {args:?}: {out}\n{err}");
    out
}

/// The demo app as images v1, v2, v3 (the version in the image, as a real release would
/// ship it), built from the context `cargo xtask image` made, and imported.
fn demo_versions(socket: &Path) {
    let images = local::workspace_root().join("target").join("images");
    let base = images.join("context").join("cutover-demo-app");
    let recipe = std::fs::read_to_string(
        local::workspace_root().join("deploy/images/cutover-demo-app/Containerfile"),
    )
    .expect("the demo app's Containerfile");
    let mut archives = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let ctx = images.join("context").join(format!("demo-{v}"));
        let _ = std::fs::remove_dir_all(&ctx);
        let status = Command::new("cp")
            .args(["-a"])
            .arg(&base)
            .arg(&ctx)
            .status()
            .expect("cp");
        assert!(status.success());
        let containerfile = ctx.join("Containerfile");
        std::fs::write(
            &containerfile,
            format!("{recipe}ENV CUTOVER_DEMO_VERSION={v}\n"),
        )
        .expect("Containerfile");
        let built = image::build_context(
            &containerfile,
            &ctx,
            &format!("{}/cutover-demo-app:{v}", image::REGISTRY),
            &[],
            &images,
            &format!("demo-{v}"),
        )
        .expect("demo image");
        archives.push(built.archive);
    }
    local::real_node::import_images(socket, &archives).expect("import");
}

fn shop() -> BlueGreenDeployment {
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop", "namespace": NS },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": {
                "metadata": { "labels": { "app": "shop" } },
                "spec": {
                    "nodeSelector": { "kubernetes.io/hostname": local::REAL_NODE },
                    "securityContext": { "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } },
                    "containers": [{
                        "name": "app",
                        "image": format!("{}/cutover-demo-app:v1", image::REGISTRY),
                        "args": ["--listen", "0.0.0.0:8080"],
                        "ports": [{ "containerPort": 8080 }],
                        "readinessProbe": { "httpGet": { "path": "/healthz", "port": 8080 }, "periodSeconds": 1 },
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] }
                        }
                    }]
                }
            },
            "service": { "port": 80, "targetPort": 8080 },
            "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
            "strategy": {
                "steps": [{ "setWeight": 50 }, { "pause": {} }],
                "autoPromotion": { "enabled": true }
            }
        }
    }))
    .expect("a valid BlueGreenDeployment")
}

fn gvk(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ))
}

/// Percent on shop-green in the route's managed rule.
fn green_weight(route: &DynamicObject) -> i64 {
    let mut green = 0;
    let mut total = 0;
    for r in route.data["spec"]["rules"].as_array().into_iter().flatten() {
        for b in r["backendRefs"].as_array().into_iter().flatten() {
            let w = b["weight"].as_i64().unwrap_or(1);
            total += w;
            if b["name"] == "shop-green" {
                green += w;
            }
        }
    }
    if total == 0 { 0 } else { green * 100 / total }
}

async fn phase_of(api: &Api<BlueGreenDeployment>) -> Option<(String, String, Option<i32>)> {
    let b = api.get("shop").await.ok()?;
    let st = b.status?;
    Some((
        format!("{:?}", st.phase?),
        format!("{:?}", st.active_color?),
        st.current_step_index,
    ))
}

async fn allowed(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    group: &str,
    ns: Option<&str>,
) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("system:serviceaccount:{SYSTEM}:cutover-controller"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{SYSTEM}"), "system:authenticated"],
            "resourceAttributes": { "verb": verb, "resource": resource, "group": group, "namespace": ns }
        }
    }))
    .expect("a review");
    let done = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    done.status.is_some_and(|s| s.allowed)
}

/// `kubectl cutover set image` to the demo app `version`; wait for the pause at 50 %.
async fn release_to_the_pause(
    plugin: &Path,
    kubeconfig: &Path,
    bgds: &Api<BlueGreenDeployment>,
    version: &str,
) {
    let image = format!("app={}/cutover-demo-app:{version}", image::REGISTRY);
    cutover(plugin, kubeconfig, &["set", "image", "shop", &image]);
    eventually(&format!("{version} paused at 50 %"), || async {
        phase_of(bgds)
            .await
            .filter(|(p, _, step)| p == "Paused" && *step == Some(1))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_on_the_real_node_runs_the_tour_with_no_failed_request() {
    common::stop_real_nodes();
    let (kubeconfig, socket) = common::start_real_node(CLUSTER);
    demo_versions(&socket);
    let helm = PathBuf::from(xtask(&["tool-path", "helm"]).trim());
    let kubectl = PathBuf::from(xtask(&["tool-path", "kubectl"]).trim());
    let plugin = cutover_test_support::e2e::build(&["kubectl-cutover"]).join("kubectl-cutover");

    let client = local::client_for(&kubeconfig).await.expect("client");
    install_crds(&client, GATEWAY_API).await;
    let namespace: Namespace = serde_json::from_value(
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
    )
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace shop");

    // Install as the README says, the controller watching only namespace shop.
    let chart = local::workspace_root().join("deploy/helm/cutover");
    let chart = chart.display().to_string();
    let (code, out, err) = run(&helm, &["lint", &chart, "--strict"], &kubeconfig);
    assert_eq!(code, 0, "helm lint: {out}{err}");
    let started = std::time::Instant::now();
    let (code, out, err) = run(
        &helm,
        &[
            "install",
            "cutover",
            &chart,
            "-n",
            SYSTEM,
            "--create-namespace",
            "--set",
            &format!("controller.watchNamespace={NS}"),
            "--wait",
            "--timeout",
            "180s",
        ],
        &kubeconfig,
    );
    assert_eq!(code, 0, "helm install: {out}{err}");
    eprintln!(
        "helm install --wait took {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // A Gateway served by the in-cluster router, and the user's route to blue.
    let pp = PatchParams::apply("cutover-tests").force();
    let gw = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": { "name": "gw", "namespace": NS },
        "spec": { "gatewayClassName": "cutover-router", "listeners": [{ "name": "http", "port": 8080, "protocol": "HTTP" }] }
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &gvk("Gateway"))
        .patch("gw", &pp, &Patch::Apply(&gw))
        .await
        .expect("Gateway");
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": { "name": "shop", "namespace": NS },
        "spec": { "parentRefs": [{ "name": "gw" }], "rules": [{ "backendRefs": [{ "name": "shop-blue", "port": 80 }] }] }
    });
    let routes = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &gvk("HTTPRoute"));
    routes
        .patch("shop", &pp, &Patch::Apply(&route))
        .await
        .expect("HTTPRoute");

    // Every state of the route, as a watch sees it.
    let weights = Arc::new(Mutex::new(Vec::<i64>::new()));
    let record = weights.clone();
    let watched = routes.clone();
    let recorder = tokio::spawn(async move {
        let stream = watcher(
            watched,
            watcher::Config::default().fields("metadata.name=shop"),
        )
        .applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(r)) = stream.next().await {
            let w = green_weight(&r);
            let mut v = record.lock().expect("lock");
            if v.last() != Some(&w) {
                v.push(w);
            }
        }
    });

    let bgds: Api<BlueGreenDeployment> = Api::namespaced(client.clone(), NS);
    bgds.create(&PostParams::default(), &shop())
        .await
        .expect("create shop");
    cutover(
        &plugin,
        &kubeconfig,
        &["status", "shop", "--wait", "--timeout", "3m"],
    );

    // Real HTTP through the in-cluster router's Service.
    let router: Service = Api::namespaced(client.clone(), SYSTEM)
        .get("cutover-router")
        .await
        .expect("router Service");
    let router_ip = router.spec.and_then(|s| s.cluster_ip).expect("ClusterIP");
    let front = format!("{router_ip}:80");
    eventually("v1 through the router", || async {
        get(&front, "/")
            .await
            .filter(|b| b.contains("\"version\":\"v1\""))
    })
    .await;
    let load = Load::start(
        &format!("http://{front}/"),
        4,
        Duration::from_secs(5),
        Duration::from_secs(600),
    );

    // Release v2: to 50 %, where the pause waits.
    release_to_the_pause(&plugin, &kubeconfig, &bgds, "v2").await;

    // Kill the leader pod; the other replica takes the Lease and finishes the release.
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let leader_now = || async {
        leases
            .get("cutover-controller")
            .await
            .expect("the Lease")
            .spec
            .and_then(|s| s.holder_identity)
            .expect("a leader")
    };
    let leader = leader_now().await;
    Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .delete(
            &leader,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete the leader pod");
    cutover(&plugin, &kubeconfig, &["promote", "shop"]);
    cutover(
        &plugin,
        &kubeconfig,
        &["status", "shop", "--wait", "--timeout", "3m"],
    );
    let (_, live, _) = phase_of(&bgds).await.expect("status");
    assert_eq!(live, "Green");
    let new_leader = leader_now().await;
    assert_ne!(new_leader, leader, "another replica finished the release");

    // Undo to the warm standby: back to blue, no new pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let uids = |list: Vec<Pod>| -> Vec<String> {
        let mut u: Vec<String> = list.into_iter().filter_map(|p| p.metadata.uid).collect();
        u.sort();
        u
    };
    let before = uids(pods.list(&ListParams::default()).await.expect("pods").items);
    cutover(&plugin, &kubeconfig, &["undo", "shop"]);
    eventually("blue live again", || async {
        phase_of(&bgds)
            .await
            .filter(|(p, c, _)| p == "Healthy" && c == "Blue")
    })
    .await;
    let after = uids(pods.list(&ListParams::default()).await.expect("pods").items);
    assert_eq!(after, before, "undo to the warm standby creates no pod");

    // Release v3 and abort it at 50 %: all traffic back on blue in one write.
    release_to_the_pause(&plugin, &kubeconfig, &bgds, "v3").await;
    cutover(&plugin, &kubeconfig, &["abort", "shop"]);
    eventually("aborted", || async {
        phase_of(&bgds)
            .await
            .filter(|(p, c, _)| p == "Degraded" && c == "Blue")
    })
    .await;
    eventually("v1 only, through the router", || async {
        get(&front, "/")
            .await
            .filter(|b| b.contains("\"version\":\"v1\""))
    })
    .await;
    let report = load.stop().await;
    recorder.abort();

    assert_eq!(
        report.failed(),
        0,
        "no failed request across the switches: {report:?}"
    );
    for v in ["v1", "v2", "v3"] {
        assert!(
            report.ok_by_version.get(v).copied().unwrap_or(0) > 0,
            "{v} answered: {report:?}"
        );
    }
    let weights = weights.lock().expect("lock").clone();
    assert_eq!(
        weights,
        [0, 50, 100, 0, 50, 0],
        "release to 50 % and one switch to green (no repeat after the leader died), undo, v3 to 50 %, abort"
    );

    // Least privilege: the controller's ServiceAccount serves namespace shop only.
    assert!(allowed(&client, "get", "secrets", "", Some(NS)).await);
    assert!(!allowed(&client, "get", "secrets", "", Some("kube-system")).await);
    assert!(!allowed(&client, "list", "secrets", "", None).await);
    assert!(!allowed(&client, "patch", "deployments", "apps", Some("default")).await);
    assert!(!allowed(&client, "delete", "namespaces", "", None).await);
    assert!(
        !allowed(
            &client,
            "create",
            "clusterroles",
            "rbac.authorization.k8s.io",
            None
        )
        .await
    );
    assert!(!allowed(&client, "patch", "nodes", "", None).await);

    // Upgrade, then uninstall: only the CRDs stay.
    let (code, out, err) = run(
        &helm,
        &[
            "upgrade",
            "cutover",
            &chart,
            "-n",
            SYSTEM,
            "--reuse-values",
            "--set",
            "controller.replicas=3",
            "--wait",
            "--timeout",
            "180s",
        ],
        &kubeconfig,
    );
    assert_eq!(code, 0, "helm upgrade: {out}{err}");
    let (code, out, err) = run(
        &helm,
        &["uninstall", "cutover", "-n", SYSTEM, "--wait"],
        &kubeconfig,
    );
    assert_eq!(code, 0, "helm uninstall: {out}{err}");
    let (_, left, _) = run(
        &kubectl,
        &[
            "get",
            "all,sa,role,rolebinding,pdb,lease,cm",
            "-n",
            SYSTEM,
            "-l",
            "app.kubernetes.io/part-of=cutover",
            "-o",
            "name",
        ],
        &kubeconfig,
    );
    assert_eq!(left.trim(), "", "namespaced objects left by uninstall");
    let (_, cluster_left, _) = run(
        &kubectl,
        &[
            "get",
            "clusterrole,clusterrolebinding,gatewayclass",
            "-l",
            "app.kubernetes.io/part-of=cutover",
            "-o",
            "name",
        ],
        &kubeconfig,
    );
    assert_eq!(cluster_left.trim(), "", "cluster objects left by uninstall");
    let (_, crds, _) = run(&kubectl, &["get", "crd", "-o", "name"], &kubeconfig);
    assert!(
        crds.contains("bluegreendeployments.cutover.dev"),
        "the CRDs stay: {crds}"
    );

    xtask(&["cluster", "down", "--name", CLUSTER]);
}
