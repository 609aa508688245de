//! Crash-only behaviour: SIGKILL the controller at every phase of a release, and run two
//! replicas of which only the Lease holder writes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use cutover_api::{Color, Phase, requests};
use cutover_test_support::{TestNamespace, controller::install_crds, wait_for, watch_while};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::watcher;

#[tokio::test]
async fn killing_the_controller_at_each_phase_neither_repeats_nor_skips_a_switch() {
    let (ns, ctrl) = setup("bg-crash").await;
    create(
        &ns,
        &bgd(
            "shop",
            "shop:1",
            3,
            serde_json::json!({ "strategy": { "autoPromotion": { "enabled": false } } }),
        ),
    )
    .await;
    healthy_on(&ns, "shop", Color::Blue).await;

    // Every color the live Service selected, in order, while the release runs with kills.
    let history = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = history.clone();
    let services: Api<Service> = ns.api();
    let ns_ref = &ns;
    let mut ctrl = watch_while(
        &services,
        watcher::Config::default().fields("metadata.name=shop"),
        move |svcs| {
            let color = svcs
                .first()
                .and_then(|s| {
                    s.spec
                        .as_ref()?
                        .selector
                        .as_ref()?
                        .get(cutover_api::COLOR_LABEL)
                        .cloned()
                })
                .unwrap_or_default();
            let mut h = record.lock().expect("lock");
            if h.last() != Some(&color) {
                h.push(color);
            }
        },
        async move {
            let mut ctrl = ctrl;
            set_image(ns_ref, "shop", "shop:2").await;
            ctrl.kill(); // right after the spec change
            ctrl = start_controller(ns_ref, "c1").await;
            wait_bgd(ns_ref, "shop", "the release to start", |b| {
                b.status.as_ref().and_then(|s| s.release.as_ref()).is_some()
            })
            .await;
            ctrl.kill(); // while green comes up
            ctrl = start_controller(ns_ref, "c1").await;
            wait_bgd(ns_ref, "shop", "Paused", |b| {
                phase(b) == Some(Phase::Paused)
            })
            .await;
            ctrl.kill(); // while waiting for promotion
            ctrl = start_controller(ns_ref, "c1").await;
            request(ns_ref, "shop", requests::PROMOTE).await;
            wait_bgd(ns_ref, "shop", "the promote request to be seen", |b| {
                b.status
                    .as_ref()
                    .is_some_and(|s| s.handled_requests.contains_key(requests::PROMOTE))
                    || b.status.as_ref().and_then(|s| s.active_color) == Some(Color::Green)
            })
            .await;
            ctrl.kill(); // around the switch
            ctrl = start_controller(ns_ref, "c1").await;
            healthy_on(ns_ref, "shop", Color::Green).await;
            ctrl
        },
    )
    .await;
    assert!(ctrl.running(), "{}", ctrl.log_tail());

    assert_eq!(
        *history.lock().expect("lock"),
        ["blue", "green"],
        "one switch, no flapping"
    );
    let b = healthy_on(&ns, "shop", Color::Green).await;
    let st = b.status.expect("status");
    assert_eq!(st.latest_revision, 2, "no revision handed out twice");
    assert_eq!(
        st.green.map(|g| (g.revision, g.ready_replicas)),
        Some((2, 3))
    );
    assert_eq!(
        st.blue.map(|g| (g.revision, g.replicas)),
        Some((1, 3)),
        "blue warm"
    );
    assert_eq!(st.standby.and_then(|s| s.color), Some(Color::Blue));
    assert!(st.release.is_none());
    assert_eq!(
        selected(&ns, "shop-preview").await.as_deref(),
        Some("green")
    );
}

fn holder(l: &Lease) -> Option<String> {
    l.spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_writes_and_a_killed_leader_hands_over() {
    let ns = TestNamespace::new("bg-ha").await;
    install_crds(&ns.client).await;
    let mut a = start_controller(&ns, "a").await;
    let mut b = start_controller(&ns, "b").await;
    let leases: Api<Lease> = ns.api();
    let lease = wait_for(
        &leases,
        "cutover-controller",
        "a leader",
        TIMEOUT,
        |l: Option<&Lease>| l.and_then(holder).is_some(),
    )
    .await;
    let leader_id = holder(&lease).expect("holder");
    let (leader, standby) = if leader_id == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    create(&ns, &bgd("svc", "svc:1", 2, serde_json::json!({}))).await;
    healthy_on(&ns, "svc", Color::Blue).await;
    assert_eq!(leader.metric("cutover_leader").await, Some(1.0));
    assert_ne!(standby.metric("cutover_leader").await, Some(1.0));
    assert!(
        leader
            .metric("cutover_reconciles_total")
            .await
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        standby
            .metric("cutover_reconciles_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "the standby reconciled nothing"
    );
    // Every API request is counted by verb and resource: the leader wrote status, the
    // standby wrote none.
    let status_patches = |text: Option<String>| -> f64 {
        text.unwrap_or_default()
            .lines()
            .filter(|l| {
                l.starts_with("cutover_api_requests_total{")
                    && l.contains("verb=\"patch\"")
                    && l.contains("resource=\"cutover.dev/bluegreendeployments/status\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(status_patches(leader.http_get("/metrics").await) > 0.0);
    assert_eq!(status_patches(standby.http_get("/metrics").await), 0.0);
    assert!(
        standby
            .http_get("/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "a standing-by replica is ready"
    );

    leader.kill();
    let killed_at = Instant::now();
    let standby_id = standby.identity.clone();
    let expected = standby_id.clone();
    // The lease is 4 s; the standby retries every 2 s.
    wait_for(
        &leases,
        "cutover-controller",
        "the standby to take the Lease",
        Duration::from_secs(4 + 10),
        move |l: Option<&Lease>| l.and_then(holder).as_deref() == Some(expected.as_str()),
    )
    .await;
    println!("handover after {:?}", killed_at.elapsed());
    set_image(&ns, "svc", "svc:2").await;
    healthy_on(&ns, "svc", Color::Green).await;
    assert!(
        standby
            .metric("cutover_reconciles_total")
            .await
            .unwrap_or(0.0)
            > 0.0,
        "the new leader writes"
    );

    // Graceful shutdown releases the Lease at once.
    let status = standby.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "exits 0 on SIGTERM: {}",
        standby.log_tail()
    );
    let released = leases.get("cutover-controller").await.expect("lease");
    assert_eq!(holder(&released), None, "released on shutdown");
}
