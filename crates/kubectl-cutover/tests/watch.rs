//! `kubectl cutover get NAME -w` as a person sees it: in a terminal of 80 columns (tmux,
//! Debian's package), redrawn in place while a release moves.

use std::process::Command;
use std::time::{Duration, Instant};

use cutover_api::{BlueGreenDeployment, Color, Phase};
use cutover_test_support::controller::{ControllerProcess, install_crds};
use cutover_test_support::release::{healthy_on, phase, wait_bgd};
use cutover_test_support::upstream::{self, GATEWAY_API};
use cutover_test_support::{TestNamespace, e2e, kubeconfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn capture(session: &str) -> String {
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux capture-pane");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll the pane (a terminal is not an API object to watch) until `pred` holds.
async fn pane_until(session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pane = capture(session);
        if pred(&pane) {
            return pane;
        }
        assert!(
            Instant::now() < deadline,
            "the pane never showed {what}:\n{pane}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn get_watch_redraws_the_tree_at_80_columns() {
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is needed (apt-get install tmux; .ci/run installs it)"
    );
    let bins = e2e::build(&["cutover-controller"]);
    let ns = TestNamespace::new("cli-watch").await;
    install_crds(&ns.client).await;
    // Weighted steps go through an HTTPRoute (the router is not needed to check the CLI).
    upstream::install_crds(&ns.client, GATEWAY_API).await;
    e2e::blue_route(&ns.client, &ns.name, "shop").await;
    let _ctrl =
        ControllerProcess::start(&bins.join("cutover-controller"), &ns.name, "c1", 15).await;
    let api: Api<BlueGreenDeployment> = ns.api();
    let bgd: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } },
                "spec": { "containers": [{ "name": "app", "image": "shop:1" }] } },
            "service": { "port": 80, "targetPort": 8080 },
            "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
            "strategy": { "steps": [{ "setWeight": 30 }, { "pause": {} }] }
        }
    }))
    .expect("valid");
    api.create(&PostParams::default(), &bgd)
        .await
        .expect("create");
    healthy_on(&ns, "shop", Color::Blue).await;

    let session = format!("cutover-{}", ns.name);
    let kc = kubeconfig().await;
    let cmd = format!(
        "{} get shop -w --kubeconfig {} -n {}",
        env!("CARGO_BIN_EXE_kubectl-cutover"),
        kc.display(),
        ns.name
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "80",
            "-y",
            "30",
            &cmd,
        ])
        .env("TERM", "xterm-256color")
        .env_remove("TMUX")
        .status()
        .expect("tmux new-session");
    assert!(started.success());
    let _tmux = Tmux(session.clone());
    let pane = pane_until(&session, "blue live and Healthy", |p| {
        p.contains("Healthy") && p.contains("live")
    })
    .await;
    assert!(pane.contains("blue"), "{pane}");

    // A release: the same screen must show green at 30 % and the pause step.
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "template": { "spec": { "containers": [{ "name": "app", "image": "shop:2" }] } } } })),
    )
    .await
    .expect("release");
    wait_bgd(&ns, "shop", "paused at 30%", |b| {
        phase(b) == Some(Phase::Paused)
    })
    .await;
    let pane = pane_until(&session, "green new at 30% and the pause step", |p| {
        p.contains("Paused") && p.contains(" 30%") && p.contains("step") && p.contains("pause")
    })
    .await;
    let lines: Vec<&str> = pane.lines().collect();
    let blue = lines
        .iter()
        .find(|l| l.contains("blue"))
        .expect("a blue line");
    let green = lines
        .iter()
        .find(|l| l.contains("green"))
        .expect("a green line");
    assert!(blue.contains("live") && blue.contains(" 70%"), "{pane}");
    assert!(
        green.contains("new") && green.contains(" 30%") && green.contains("shop:2"),
        "{pane}"
    );
    // Redrawn in place: one tree on the screen, not one per change.
    assert_eq!(pane.matches("namespace").count(), 1, "{pane}");
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
}
