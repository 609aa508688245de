//! Leader election against the real local control plane: one leader at a time, prompt
//! hand-over on release, takeover only after expiry when a leader dies.

use std::sync::Arc;
use std::time::Duration;

use cutover_controller::leader::{LeaderElector, LeaderGuard, LeaseConfig};
use cutover_test_support::{TestNamespace, watch_while};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio::task::{JoinHandle, JoinSet};

const LEASE: &str = "cutover-controller";

fn elector(ns: &TestNamespace, identity: &str, lease_duration: Duration) -> LeaderElector {
    let config = LeaseConfig {
        lease_duration,
        renew_interval: Duration::from_millis(200),
        ..LeaseConfig::new(&ns.name, LEASE, identity)
    };
    LeaderElector::new(ns.client.clone(), config).expect("valid leader-election settings")
}

fn contend(elector: LeaderElector) -> JoinHandle<LeaderGuard> {
    tokio::spawn(async move { elector.acquire().await.expect("acquire does not fail") })
}

async fn lease(api: &Api<Lease>) -> (Option<String>, i32) {
    let lease = api.get(LEASE).await.expect("the Lease exists");
    let spec = lease.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

/// Assert that `candidate` is still waiting after `window`: the only way to show that
/// something does not happen.
async fn assert_still_waiting(candidate: &mut JoinHandle<LeaderGuard>, window: Duration) {
    if let Ok(joined) = tokio::time::timeout(window, candidate).await {
        let guard = joined.expect("the candidate does not panic");
        panic!(
            "{} acquired the Lease while another replica held it",
            guard.identity()
        );
    }
}

#[tokio::test]
async fn only_one_candidate_leads_and_release_hands_over_at_once() {
    let ns = TestNamespace::new("leader-release").await;
    let leases: Api<Lease> = ns.api();
    // A long lease: a hand-over well within it can only come from the release.
    let lease_duration = Duration::from_secs(60);
    let mut a = contend(elector(&ns, "a", lease_duration));
    let mut b = contend(elector(&ns, "b", lease_duration));

    // Both race for the absent Lease; exactly one wins.
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            guard = &mut a => guard,
            guard = &mut b => guard,
        }
    })
    .await
    .expect("a candidate acquires within 30s")
    .expect("the candidate does not panic");
    let (leader, mut standby) = match first.identity() {
        "a" => (first, b),
        _ => (first, a),
    };
    assert!(leader.is_leading());
    assert_eq!(
        lease(&leases).await,
        (Some(leader.identity().to_string()), 0)
    );
    // Ten retries of the standby, and the Lease stays the leader's.
    assert_still_waiting(&mut standby, Duration::from_secs(2)).await;
    assert_eq!(
        lease(&leases).await,
        (Some(leader.identity().to_string()), 0)
    );

    let mut leading = leader.leading();
    let old = leader.identity().to_string();
    leader.release().await.expect("the release succeeds");
    assert!(
        !*leading.borrow_and_update(),
        "the old leader still reads as leading"
    );

    let new = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("the standby takes over within 10s of the release, not at expiry")
        .expect("the standby does not panic");
    assert_ne!(new.identity(), old);
    assert!(new.is_leading());
    assert_eq!(lease(&leases).await, (Some(new.identity().to_string()), 1));
    new.release().await.expect("the release succeeds");
}

#[tokio::test]
async fn candidates_racing_for_an_expired_lease_elect_exactly_one() {
    let ns = TestNamespace::new("leader-race").await;
    let leases: Api<Lease> = ns.api();
    // A leader that died an hour ago, after four hand-overs.
    let ghost = Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("ghost".to_string()),
            renew_time: Some(MicroTime(Timestamp::now() - SignedDuration::from_hours(1))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }),
    };
    leases
        .create(&PostParams::default(), &ghost)
        .await
        .expect("the expired Lease is created");

    // They all read the same expired Lease and write at once: only the conditional write
    // of one of them may succeed.
    let mut candidates = JoinSet::new();
    for identity in ["a", "b", "c", "d"] {
        let elector = elector(&ns, identity, Duration::from_secs(60));
        candidates.spawn(async move { elector.acquire().await.expect("acquire does not fail") });
    }
    let leader = tokio::time::timeout(Duration::from_secs(30), candidates.join_next())
        .await
        .expect("a candidate acquires within 30s")
        .expect("there are candidates")
        .expect("the candidate does not panic");
    if let Ok(Some(second)) =
        tokio::time::timeout(Duration::from_secs(2), candidates.join_next()).await
    {
        let second = second.expect("the candidate does not panic");
        panic!(
            "both {} and {} acquired the Lease",
            leader.identity(),
            second.identity()
        );
    }
    assert!(leader.is_leading());
    assert_eq!(
        lease(&leases).await,
        (Some(leader.identity().to_string()), 5)
    );
    candidates.shutdown().await;
    leader.release().await.expect("the release succeeds");
}

#[tokio::test]
async fn a_dead_leader_is_replaced_only_after_its_lease_expires() {
    let ns = TestNamespace::new("leader-expiry").await;
    let leases: Api<Lease> = ns.api();
    let lease_duration = Duration::from_secs(3);
    let a = tokio::time::timeout(
        Duration::from_secs(30),
        elector(&ns, "a", lease_duration).acquire(),
    )
    .await
    .expect("a acquires within 30s")
    .expect("a acquires");

    // Every state of the Lease while it changes hands: (holder, acquireTime, renewTime).
    let mut seen: Vec<(Option<String>, Option<Timestamp>, Option<Timestamp>)> = Vec::new();
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE}"));
    let record = |leases: &[Arc<Lease>]| {
        for lease in leases {
            let spec = lease.spec.clone().unwrap_or_default();
            seen.push((
                spec.holder_identity,
                spec.acquire_time.map(|t| t.0),
                spec.renew_time.map(|t| t.0),
            ));
        }
    };
    let b = watch_while(&leases, config, record, async {
        let mut b = contend(elector(&ns, "b", lease_duration));
        // Two lease durations: b would have taken over by now had a not renewed.
        assert_still_waiting(&mut b, 2 * lease_duration).await;
        assert!(a.is_leading());
        assert_eq!(lease(&leases).await, (Some("a".to_string()), 0));

        // a dies without releasing: its renewals stop, the Lease still names it.
        drop(a);
        tokio::time::timeout(Duration::from_secs(30), b)
            .await
            .expect("b takes over within 30s of a's death")
            .expect("b does not panic")
    })
    .await;
    assert!(b.is_leading());

    let final_lease = leases.get(LEASE).await.expect("the Lease exists");
    let spec = final_lease.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    let b_acquired = spec.acquire_time.expect("b set acquireTime").0;
    let a_renewals: Vec<Timestamp> = seen
        .iter()
        .filter(|(holder, ..)| holder.as_deref() == Some("a"))
        .filter_map(|(_, _, renewed)| *renewed)
        .collect();
    let a_first = a_renewals.iter().min().expect("a's claim was seen");
    let a_last = a_renewals.iter().max().expect("a's claim was seen");
    assert!(
        a_last.duration_since(*a_first) >= SignedDuration::from_secs(3),
        "a did not keep renewing while alive: {seen:?}"
    );
    let expiry = *a_last + SignedDuration::try_from(lease_duration).expect("a small duration");
    assert!(
        b_acquired > expiry,
        "b took over at {b_acquired}, before a's claim expired at {expiry}: {seen:?}"
    );
    b.release().await.expect("the release succeeds");
}

#[tokio::test]
async fn a_leader_that_sees_another_holder_reports_the_loss() {
    let ns = TestNamespace::new("leader-loss").await;
    let leases: Api<Lease> = ns.api();
    let a = tokio::time::timeout(
        Duration::from_secs(30),
        elector(&ns, "a", Duration::from_secs(60)).acquire(),
    )
    .await
    .expect("a acquires within 30s")
    .expect("a acquires");
    assert!(a.is_leading());

    // Someone else writes itself in, as a candidate would after a's claim had expired.
    let mut lease = leases.get(LEASE).await.expect("the Lease exists");
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some("intruder".to_string());
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await
        .expect("the takeover is written");

    tokio::time::timeout(Duration::from_secs(10), a.lost())
        .await
        .expect("a notices the loss within 10s");
    assert!(!a.is_leading());
    // Releasing a lost Lease must not clear the new holder's claim.
    a.release().await.expect("the release succeeds");
    assert_eq!(lease_holder(&leases).await.as_deref(), Some("intruder"));
}

#[tokio::test]
async fn a_restarted_replica_with_the_same_identity_resumes_at_once() {
    let ns = TestNamespace::new("leader-restart").await;
    let leases: Api<Lease> = ns.api();
    let lease_duration = Duration::from_secs(60);
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        elector(&ns, "a", lease_duration).acquire(),
    )
    .await
    .expect("a acquires within 30s")
    .expect("a acquires");
    // The process crashes and its container restarts in the same pod, with the same name.
    drop(first);
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        elector(&ns, "a", lease_duration).acquire(),
    )
    .await
    .expect("a resumes within 10s, long before its 60s lease expires")
    .expect("a acquires");
    assert!(again.is_leading());
    assert_eq!(lease(&leases).await, (Some("a".to_string()), 0));
    again.release().await.expect("the release succeeds");
}

async fn lease_holder(api: &Api<Lease>) -> Option<String> {
    lease(api).await.0
}
