//! `kubectl cutover failover` and `drill` against the local control plane: without a
//! controller, what the CLI checks itself before it writes a request, its errors, and a
//! request nobody acknowledges; with one, a request the controller refuses.

mod common;

use common::cli;
use cutover_api::FailoverPolicy;
use cutover_api::failover::requests;
use cutover_test_support::controller::{ControllerProcess, install_crds};
use cutover_test_support::{TestNamespace, e2e, kubeconfig};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn policy() -> FailoverPolicy {
    serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
        "metadata": { "name": "shop" },
        "spec": {
            "members": [
                { "name": "east", "blueGreenDeployment": "shop" },
                { "name": "west", "blueGreenDeployment": "shop" }
            ],
            "entry": { "httpRoute": { "name": "shop" } }
        }
    }))
    .expect("a valid FailoverPolicy")
}

fn annotation(p: &FailoverPolicy, key: &str) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

#[tokio::test]
async fn failover_and_drill_check_their_arguments_and_say_what_is_missing() {
    let ns = TestNamespace::new("cli-fp").await;
    install_crds(&ns.client).await;
    let kc = kubeconfig().await;
    let api: Api<FailoverPolicy> = ns.api();
    api.create(&PostParams::default(), &policy())
        .await
        .expect("create the FailoverPolicy");

    // --to must name a member; nothing is written when it does not.
    let nope = cli(&kc, &ns.name, &["failover", "shop", "--to", "nope"]);
    assert_eq!(nope.code, 1, "{} {}", nope.stdout, nope.stderr);
    assert!(
        nope.stderr.contains("no member \"nope\"") && nope.stderr.contains("east, west"),
        "{}",
        nope.stderr
    );
    let p = api.get("shop").await.expect("get");
    assert_eq!(annotation(&p, requests::FAILOVER), None);

    // Not the member traffic is on already (the status as a controller would write it).
    api.patch_status(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "activeMember": "east" } })),
    )
    .await
    .expect("status");
    let active = cli(&kc, &ns.name, &["failover", "shop", "--to", "east"]);
    assert_eq!(active.code, 1, "{} {}", active.stdout, active.stderr);
    assert!(
        active.stderr.contains("already active"),
        "{}",
        active.stderr
    );
    let p = api.get("shop").await.expect("get");
    assert_eq!(annotation(&p, requests::FAILOVER), None);

    // No such policy.
    for args in [&["failover", "missing"][..], &["drill", "missing"]] {
        let out = cli(&kc, &ns.name, args);
        assert_eq!(out.code, 1, "{args:?}: {} {}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("FailoverPolicy \"missing\" not found in namespace"),
            "{args:?}: {}",
            out.stderr
        );
    }

    // With no controller to act on it, the request is written and the wait runs out: exit 2.
    let waited = cli(
        &kc,
        &ns.name,
        &[
            "failover",
            "shop",
            "--to",
            "west",
            "--force",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(waited.code, 2, "{} {}", waited.stdout, waited.stderr);
    assert!(
        waited.stderr.contains("has not acknowledged"),
        "{}",
        waited.stderr
    );
    let p = api.get("shop").await.expect("get");
    let value = annotation(&p, requests::FAILOVER).expect("the request annotation");
    let words: Vec<&str> = value.split(' ').collect();
    assert_eq!(words.len(), 3, "{value}");
    assert_eq!(&words[1..], ["to=west", "force"], "{value}");
    let drill = cli(&kc, &ns.name, &["drill", "shop", "--timeout", "2s"]);
    assert_eq!(drill.code, 2, "{} {}", drill.stdout, drill.stderr);
    let p = api.get("shop").await.expect("get");
    assert!(annotation(&p, requests::DRILL).is_some_and(|v| !v.contains(' ')));
}

/// A policy the controller cannot act on (its entry HTTPRoute does not exist): both
/// requests are answered with the reason, exit 1, well before the timeout.
#[tokio::test]
async fn requests_the_controller_refuses_end_with_its_reason() {
    let bins = e2e::build(&["cutover-controller"]);
    let ns = TestNamespace::new("cli-fp-refused").await;
    install_crds(&ns.client).await;
    let _ctrl =
        ControllerProcess::start(&bins.join("cutover-controller"), &ns.name, "c1", 15).await;
    let kc = kubeconfig().await;
    let api: Api<FailoverPolicy> = ns.api();
    api.create(&PostParams::default(), &policy())
        .await
        .expect("create the FailoverPolicy");
    let failover = cli(
        &kc,
        &ns.name,
        &["failover", "shop", "--to", "west", "--timeout", "60s"],
    );
    assert_eq!(failover.code, 1, "{} {}", failover.stdout, failover.stderr);
    assert!(
        failover.stderr.contains("failover refused")
            && failover.stderr.contains("HTTPRoute shop does not exist"),
        "{}",
        failover.stderr
    );
    let drill = cli(&kc, &ns.name, &["drill", "shop", "--timeout", "60s"]);
    assert_eq!(drill.code, 1, "{} {}", drill.stdout, drill.stderr);
    assert!(
        drill.stderr.contains("drill refused")
            && drill.stderr.contains("HTTPRoute shop does not exist"),
        "{}",
        drill.stderr
    );
}

#[test]
fn failover_and_drill_without_a_cluster() {
    let dead = common::dead_kubeconfig("cutover-fp-cli");
    for args in [&["failover", "p"][..], &["drill", "p"]] {
        let out = cli(&dead, "default", args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("cannot reach the cluster at https://127.0.0.1:1"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let _ = std::fs::remove_dir_all(dead.parent().expect("its folder"));
}
