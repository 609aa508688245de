//! Every `kubectl cutover` command against the local control plane and a real controller,
//! run as a user runs it: the binary, its flags, its output and exit code.

mod common;

use std::path::PathBuf;

use common::cli;
use cutover_api::{BlueGreenDeployment, Color, Phase};
use cutover_test_support::controller::{ControllerProcess, install_crds};
use cutover_test_support::release::{healthy_on, phase, wait_bgd};
use cutover_test_support::upstream::{self, GATEWAY_API};
use cutover_test_support::{TestNamespace, e2e, kubeconfig};
use kube::api::{Api, PostParams};
use serde_json::json;

fn shop(steps: serde_json::Value) -> BlueGreenDeployment {
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } },
                "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } },
            "service": { "port": 80, "targetPort": 8080 },
            "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
            "strategy": { "steps": steps, "standby": { "mode": "Warm" } }
        }
    }))
    .expect("valid BlueGreenDeployment")
}

async fn setup(
    prefix: &str,
    steps: serde_json::Value,
) -> (TestNamespace, ControllerProcess, PathBuf) {
    let bins = e2e::build(&["cutover-controller"]);
    let ns = TestNamespace::new(prefix).await;
    install_crds(&ns.client).await;
    // Weighted steps go through an HTTPRoute (the router is not needed to check the CLI).
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    e2e::blue_route(&ns.client, &ns.name, "shop").await;
    let ctrl = ControllerProcess::start(&bins.join("cutover-controller"), &ns.name, "c1", 15).await;
    let api: Api<BlueGreenDeployment> = ns.api();
    api.create(&PostParams::default(), &shop(steps))
        .await
        .expect("create");
    healthy_on(&ns, "shop", Color::Blue).await;
    (ns, ctrl, kubeconfig().await)
}

#[tokio::test]
async fn get_list_set_image_status_promote_undo_and_errors() {
    let steps = json!([{ "setWeight": 20 }, { "pause": {} }]);
    let (ns, _ctrl, kc) = setup("cli-main", steps).await;

    // `version`: the plugin's, and the leading controller's from its Lease.
    let version = cli(&kc, &ns.name, &["version"]);
    assert_eq!(version.code, 0, "{}", version.stderr);
    let plugin = format!("kubectl-cutover     {}", env!("CARGO_PKG_VERSION"));
    assert!(version.stdout.contains(&plugin), "{}", version.stdout);
    let ours = format!("lease {}/cutover-controller, leader c1", ns.name);
    assert!(
        version.stdout.lines().any(|l| l.starts_with(&format!(
            "cutover-controller  {} ",
            env!("CARGO_PKG_VERSION")
        )) && l.contains(&ours)),
        "{}",
        version.stdout
    );
    let json = cli(&kc, &ns.name, &["version", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json["plugin"], env!("CARGO_PKG_VERSION"));

    let list = cli(&kc, &ns.name, &["list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("NAME")
            && list.stdout.contains("shop")
            && list.stdout.contains("Healthy"),
        "{}",
        list.stdout
    );

    let all = cli(&kc, &ns.name, &["list", "-A"]);
    assert!(
        all.stdout.contains("NAMESPACE") && all.stdout.contains(&ns.name),
        "{}",
        all.stdout
    );

    // --context picks the context, as kubectl does: the current one here is unreachable.
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&kc).expect("kubeconfig")).expect("YAML");
    let good = config["contexts"][0]["name"].clone();
    let mut dead = config["contexts"][0].clone();
    dead["name"] = "dead".into();
    dead["context"]["cluster"] = "dead".into();
    let mut dead_cluster = config["clusters"][0].clone();
    dead_cluster["name"] = "dead".into();
    dead_cluster["cluster"]["server"] = "https://127.0.0.1:1".into();
    if let (Some(contexts), Some(clusters)) = (
        config["contexts"].as_sequence().cloned(),
        config["clusters"].as_sequence().cloned(),
    ) {
        config["contexts"] = serde_yaml::Value::Sequence([contexts, vec![dead]].concat());
        config["clusters"] = serde_yaml::Value::Sequence([clusters, vec![dead_cluster]].concat());
    }
    config["current-context"] = "dead".into();
    let two = std::env::temp_dir().join(format!("cutover-cli-ctx-{}.kubeconfig", ns.name));
    std::fs::write(&two, serde_yaml::to_string(&config).expect("YAML")).expect("write");
    let via_dead = cli(&two, &ns.name, &["get", "shop"]);
    assert_eq!(via_dead.code, 1, "{}", via_dead.stdout);
    let good = good.as_str().expect("context name");
    let via_good = cli(&two, &ns.name, &["--context", good, "get", "shop"]);
    assert_eq!(via_good.code, 0, "{}", via_good.stderr);

    let get = cli(&kc, &ns.name, &["get", "shop"]);
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert!(
        get.stdout.contains("blue") && get.stdout.contains("live") && get.stdout.contains("shop:1"),
        "{}",
        get.stdout
    );
    assert!(
        get.stdout.lines().all(|l| l.chars().count() <= 80),
        "80 columns:\n{}",
        get.stdout
    );
    assert!(!get.stdout.contains('\x1b'), "no colour without a terminal");

    let json_out = cli(&kc, &ns.name, &["get", "shop", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json_out.stdout).expect("-o json is JSON");
    assert_eq!(v["metadata"]["name"], "shop");
    let yaml_out = cli(&kc, &ns.name, &["status", "shop", "-o", "yaml"]);
    let y: serde_yaml::Value = serde_yaml::from_str(&yaml_out.stdout).expect("-o yaml is YAML");
    assert_eq!(y["phase"], serde_yaml::Value::from("Healthy"));

    // A release: set image, paused at 20 %.
    let bad = cli(&kc, &ns.name, &["set", "image", "shop", "nope=shop:2"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("no container \"nope\"") && bad.stderr.contains("app"),
        "{}",
        bad.stderr
    );
    let set = cli(&kc, &ns.name, &["set", "image", "shop", "app=shop:2"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    wait_bgd(&ns, "shop", "paused at the pause step", |b| {
        phase(b) == Some(Phase::Paused)
            && b.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
    })
    .await;
    let get = cli(&kc, &ns.name, &["get", "shop"]);
    assert!(
        get.stdout.contains("20%") && get.stdout.contains("step") && get.stdout.contains("pause"),
        "{}",
        get.stdout
    );

    // status --wait times out (exit 2) while the release waits for a promote.
    let waiting = cli(
        &kc,
        &ns.name,
        &["status", "shop", "--wait", "--timeout", "2s"],
    );
    assert_eq!(waiting.code, 2, "{} {}", waiting.stdout, waiting.stderr);

    // pause / resume flip spec.paused.
    assert_eq!(cli(&kc, &ns.name, &["pause", "shop"]).code, 0);
    wait_bgd(&ns, "shop", "spec.paused", |b| b.spec.paused).await;
    assert_eq!(cli(&kc, &ns.name, &["resume", "shop"]).code, 0);
    wait_bgd(&ns, "shop", "spec.paused cleared", |b| !b.spec.paused).await;

    // promote ends the pause; status --wait then returns 0 on Healthy.
    let promote = cli(&kc, &ns.name, &["promote", "shop"]);
    assert_eq!(promote.code, 0, "{}", promote.stderr);
    assert!(
        promote.stdout.contains("acknowledged"),
        "{}",
        promote.stdout
    );
    let done = cli(
        &kc,
        &ns.name,
        &["status", "shop", "--wait", "--timeout", "90s"],
    );
    assert_eq!(done.code, 0, "{} {}", done.stdout, done.stderr);
    healthy_on(&ns, "shop", Color::Green).await;

    // undo goes back to revision 1, which the warm standby runs.
    let undo = cli(&kc, &ns.name, &["undo", "shop"]);
    assert_eq!(undo.code, 0, "{}", undo.stderr);
    assert!(
        undo.stdout.contains("revision 1") && undo.stdout.contains("without new pods"),
        "{}",
        undo.stdout
    );
    healthy_on(&ns, "shop", Color::Blue).await;
    let to = cli(&kc, &ns.name, &["undo", "shop", "--to-revision", "2"]);
    assert_eq!(to.code, 0, "{}", to.stderr);
    healthy_on(&ns, "shop", Color::Green).await;
    let missing_rev = cli(&kc, &ns.name, &["undo", "shop", "--to-revision", "9"]);
    assert_eq!(missing_rev.code, 1);
    assert!(
        missing_rev.stderr.contains("no revision 9"),
        "{}",
        missing_rev.stderr
    );

    // Unknown object.
    let unknown = cli(&kc, &ns.name, &["get", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("\"nope\" not found"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn promote_full_abort_retry_and_status_of_a_degraded_release() {
    let steps = json!([{ "setWeight": 10 }, { "pause": {} }, { "setWeight": 50 }, { "pause": {} }]);
    let (ns, _ctrl, kc) = setup("cli-req", steps).await;
    assert_eq!(
        cli(&kc, &ns.name, &["set", "image", "shop", "app=shop:2"]).code,
        0
    );
    wait_bgd(&ns, "shop", "paused at 10%", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    // abort: Degraded, status --wait exits 1.
    let abort = cli(&kc, &ns.name, &["abort", "shop"]);
    assert_eq!(abort.code, 0, "{}", abort.stderr);
    let degraded = cli(
        &kc,
        &ns.name,
        &["status", "shop", "--wait", "--timeout", "60s"],
    );
    assert_eq!(degraded.code, 1, "{} {}", degraded.stdout, degraded.stderr);
    // retry, then promote --full skips both remaining steps.
    assert_eq!(cli(&kc, &ns.name, &["retry", "shop"]).code, 0);
    wait_bgd(&ns, "shop", "paused at 10% again", |b| {
        phase(b) == Some(Phase::Paused)
            && b.status.as_ref().and_then(|s| s.current_step_index) == Some(1)
    })
    .await;
    let full = cli(&kc, &ns.name, &["promote", "shop", "--full"]);
    assert_eq!(full.code, 0, "{}", full.stderr);
    let b = healthy_on(&ns, "shop", Color::Green).await;
    assert_eq!(b.status.map(|s| s.weight), Some(100));
}

#[tokio::test]
async fn clear_errors_without_a_cluster_or_without_the_crds() {
    let dead = common::dead_kubeconfig("cutover-cli");
    let out = cli(&dead, "default", &["get", "shop"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot reach the cluster at https://127.0.0.1:1"),
        "{}",
        out.stderr
    );

    // A cluster of its own without the Cutover CRDs.
    let state =
        cutover_test_support::local_cluster::up(&cutover_test_support::local_cluster::UpOptions {
            name: "cli-bare".into(),
            nodes: 1,
            process_node: None,
            real_node: None,
        })
        .await
        .expect("a bare cluster");
    let out = cli(&state.kubeconfig, "default", &["list"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("CRDs are not installed"),
        "{}",
        out.stderr
    );
    let out = cli(&state.kubeconfig, "default", &["get", "shop"]);
    assert!(
        out.stderr.contains("CRDs are not installed"),
        "{}",
        out.stderr
    );
    let _ = cutover_test_support::local_cluster::down("cli-bare");

    // Failover says so the same way as the other commands.
    let out = cli(&dead, "default", &["failover", "p"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("cannot reach the cluster at https://127.0.0.1:1"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn set_image_and_undo_of_a_blue_green_deployment_that_adopts_a_deployment() {
    use k8s_openapi::api::apps::v1::Deployment;
    let bins = e2e::build(&["cutover-controller"]);
    let ns = TestNamespace::new("cli-adopt").await;
    install_crds(&ns.client).await;
    let _ctrl =
        ControllerProcess::start(&bins.join("cutover-controller"), &ns.name, "c1", 15).await;
    let deployments: Api<Deployment> = ns.api();
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "shop" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } },
                "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } } }
    }))
    .expect("valid Deployment");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
    let web: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "workloadRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "shop" },
            "service": { "port": 80, "targetPort": 8080 }
        }
    }))
    .expect("valid BlueGreenDeployment");
    let api: Api<BlueGreenDeployment> = ns.api();
    api.create(&PostParams::default(), &web)
        .await
        .expect("create");
    healthy_on(&ns, "web", Color::Blue).await;
    let kc = kubeconfig().await;

    // The image is set on the Deployment, whose template is the release's.
    let bad = cli(&kc, &ns.name, &["set", "image", "web", "nope=shop:2"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("Deployment shop") && bad.stderr.contains("no container \"nope\""),
        "{}",
        bad.stderr
    );
    let set = cli(&kc, &ns.name, &["set", "image", "web", "app=shop:2"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.contains("on Deployment shop"), "{}", set.stdout);
    let image = deployments
        .get("shop")
        .await
        .expect("get")
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(image.as_deref(), Some("shop:2"));
    healthy_on(&ns, "web", Color::Green).await;

    // undo has no template of its own to set back: it says where to roll back.
    let undo = cli(&kc, &ns.name, &["undo", "web"]);
    assert_eq!(undo.code, 1);
    assert!(
        undo.stderr.contains("Deployment shop") && undo.stderr.contains("rollout undo"),
        "{}",
        undo.stderr
    );
}
