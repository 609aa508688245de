//! Failover decisions in a simulated world: members whose health and replication the test
//! sets, and a controller that carries out each action at once (or crashes before saving
//! what it decided).

use std::time::Duration;

use cutover_core::failover::{
    Action, Counters, DataObs, Failback, Input, MemberObs, Memory, Phase, Plan, Policy, Requests,
    decide,
};
use cutover_core::release::Timestamp;
use proptest::prelude::*;

fn policy() -> Policy {
    Policy {
        failure_threshold: 3,
        success_threshold: 2,
        automatic: true,
        min_hold: Duration::from_secs(60),
        failback: Failback::Manual,
        max_data_loss_seconds: Some(5.0),
        max_data_loss_bytes: None,
    }
}

fn primary() -> DataObs {
    DataObs {
        writable: true,
        fenced: false,
        lag_seconds: None,
        lag_bytes: None,
        reachable: true,
        standby: false,
        gate_only: false,
    }
}

fn standby(lag: f64) -> DataObs {
    DataObs {
        writable: false,
        fenced: false,
        lag_seconds: Some(lag),
        lag_bytes: Some(0),
        reachable: true,
        standby: true,
        gate_only: false,
    }
}

struct World {
    now: Timestamp,
    policy: Policy,
    members: Vec<MemberObs>,
    routed_to: Option<usize>,
    memory: Memory,
    requests: Requests,
    actions: Vec<Action>,
    plans: Vec<Plan>,
    moves: Vec<(Timestamp, usize)>,
}

impl World {
    fn new(policy: Policy) -> World {
        World {
            now: Timestamp(1_000_000),
            policy,
            members: vec![
                MemberObs {
                    name: String::new(),
                    healthy: true,
                    reason: String::new(),
                    data: Some(primary()),
                },
                MemberObs {
                    name: String::new(),
                    healthy: true,
                    reason: String::new(),
                    data: Some(standby(0.1)),
                },
            ],
            routed_to: Some(0),
            // A policy that has been running: both members were seen up.
            memory: Memory {
                counters: vec![
                    Counters {
                        seen_up: true,
                        ..Counters::default()
                    };
                    2
                ],
                ..Memory::default()
            },
            requests: Requests::default(),
            actions: Vec::new(),
            plans: Vec::new(),
            moves: Vec::new(),
        }
    }

    fn set_health(&mut self, i: usize, healthy: bool) {
        self.members[i].healthy = healthy;
        self.members[i].reason = if healthy {
            String::new()
        } else {
            "probe failed".into()
        };
    }

    /// One pass, one second; `crash`: the controller dies before saving its memory (the
    /// actions it took still happened).
    fn pass(&mut self, crash: bool) -> Phase {
        let plan = decide(&Input {
            now: self.now,
            policy: self.policy.clone(),
            members: self.members.clone(),
            routed_to: self.routed_to,
            memory: self.memory.clone(),
            requests: self.requests,
            fresh_health: true,
        });
        self.requests = Requests::default();
        for a in &plan.actions {
            self.actions.push(*a);
            match *a {
                Action::Fence(i) => {
                    if let Some(d) = self.members[i].data.as_mut() {
                        d.fenced = true;
                        d.writable = false;
                    }
                }
                Action::Promote(i) => {
                    if let Some(d) = self.members[i].data.as_mut() {
                        d.writable = true;
                        d.fenced = false;
                        d.standby = false;
                    }
                }
                Action::Route(i) => {
                    if self.routed_to != Some(i) {
                        self.moves.push((self.now, i));
                    }
                    self.routed_to = Some(i);
                }
            }
        }
        // Never two writers that could both accept writes.
        let writers = self
            .members
            .iter()
            .filter(|m| m.data.as_ref().is_some_and(|d| d.writable && !d.fenced))
            .count();
        assert!(writers <= 1, "two writers: {:?}", self.members);
        let phase = plan.phase;
        if !crash {
            self.memory = plan.memory.clone();
        }
        self.plans.push(plan);
        self.now = self.now.plus(Duration::from_secs(1));
        phase
    }

    fn events(&self, reason: &str) -> Vec<String> {
        self.plans
            .iter()
            .flat_map(|p| p.events.iter())
            .filter(|e| e.reason == reason)
            .map(|e| e.message.clone())
            .collect()
    }
}

#[test]
fn a_down_primary_fails_over_after_the_threshold_fencing_before_promoting() {
    let mut w = World::new(policy());
    assert_eq!(w.pass(false), Phase::Healthy);
    w.set_health(0, false);
    w.pass(false);
    w.pass(false);
    assert!(
        w.actions.is_empty(),
        "two failed checks are below the threshold of 3"
    );
    for _ in 0..5 {
        w.pass(false);
    }
    assert_eq!(
        w.actions,
        [Action::Fence(0), Action::Promote(1), Action::Route(1)]
    );
    assert_eq!(w.plans.last().map(|p| p.phase), Some(Phase::FailedOver));
    assert_eq!(w.memory.active, 1);
    assert_eq!(w.events("FailoverDone").len(), 1);
}

#[test]
fn a_lagging_standby_is_refused_until_forced_and_the_report_states_the_data_at_risk() {
    let mut w = World::new(policy());
    w.members[1].data = Some(standby(30.0));
    w.set_health(0, false);
    for _ in 0..10 {
        assert_ne!(w.pass(false), Phase::FailedOver);
    }
    assert!(
        w.actions.is_empty(),
        "no move past the data gate: {:?}",
        w.actions
    );
    let refused = w.events("FailoverRefused");
    assert_eq!(refused.len(), 1, "one Event, not one per pass: {refused:?}");
    assert!(refused[0].contains("maxDataLossSeconds 5"), "{refused:?}");
    let last = w.plans.last().expect("plan");
    assert_eq!(last.phase, Phase::Degraded);
    assert!(last.message.contains("--force"), "{}", last.message);

    w.requests = Requests {
        failover: Some(Some(1)),
        force: true,
        traffic_only: false,
    };
    for _ in 0..5 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1);
    let started = w.events("FailoverStarted");
    assert!(
        started
            .iter()
            .any(|m| m.contains("forced") && m.contains("30.0s")),
        "{started:?}"
    );
}

#[test]
fn a_request_with_no_healthy_member_to_go_to_is_refused_in_the_status_message() {
    let mut w = World::new(Policy {
        automatic: false,
        ..policy()
    });
    w.set_health(1, false);
    for _ in 0..5 {
        w.pass(false);
    }
    w.requests = Requests {
        failover: Some(None),
        force: false,
        traffic_only: false,
    };
    w.pass(false);
    assert!(w.actions.is_empty());
    let plan = w.plans.last().expect("plan");
    assert!(
        plan.message.contains("refused") && plan.message.contains("no other healthy member"),
        "{}",
        plan.message
    );
    assert_eq!(w.events("FailoverRefused").len(), 1);
    // Asking for the member already active is no refusal.
    w.requests = Requests {
        failover: Some(Some(0)),
        force: false,
        traffic_only: false,
    };
    w.pass(false);
    assert_eq!(w.events("FailoverRefused").len(), 1);
    assert_eq!(w.routed_to, Some(0));
}

#[test]
fn a_database_known_only_by_its_lag_is_gated_on_but_never_fenced_or_promoted() {
    let mut w = World::new(policy());
    let gated = |lag: f64| DataObs {
        lag_seconds: Some(lag),
        reachable: true,
        gate_only: true,
        ..DataObs::default()
    };
    w.members[0].data = Some(gated(0.0));
    w.members[1].data = Some(gated(30.0));
    w.set_health(0, false);
    for _ in 0..10 {
        w.pass(false);
    }
    assert!(
        w.moves.is_empty(),
        "moved past the data gate: {:?}",
        w.moves
    );
    assert!(w.events("FailoverRefused")[0].contains("maxDataLossSeconds"));
    w.members[1].data = Some(gated(1.0));
    for _ in 0..10 {
        w.pass(false);
    }
    assert_eq!(w.routed_to, Some(1));
    assert!(
        w.actions
            .iter()
            .all(|a| !matches!(a, Action::Fence(_) | Action::Promote(_))),
        "{:?}",
        w.actions
    );
}

#[test]
fn a_manual_request_without_force_respects_the_data_gate() {
    let mut w = World::new(Policy {
        automatic: false,
        ..policy()
    });
    w.members[1].data = Some(standby(30.0));
    w.requests = Requests {
        failover: Some(None),
        force: false,
        traffic_only: false,
    };
    w.pass(false);
    assert!(w.actions.is_empty());
    assert!(w.events("FailoverRefused")[0].contains("--force"));
}

#[test]
fn an_unreachable_old_primary_holds_the_move_unless_forced() {
    let mut w = World::new(policy());
    w.set_health(0, false);
    if let Some(d) = w.members[0].data.as_mut() {
        d.reachable = false;
    }
    for _ in 0..10 {
        w.pass(false);
    }
    assert!(
        !w.actions.iter().any(|a| matches!(a, Action::Promote(_))),
        "never promote while the old primary may still write: {:?}",
        w.actions
    );
    assert!(
        w.plans
            .last()
            .is_some_and(|p| p.message.contains("cannot be confirmed fenced"))
    );
}

#[test]
fn automatic_failback_waits_for_a_stable_period() {
    let mut w = World::new(Policy {
        failback: Failback::AfterStable(Duration::from_secs(30)),
        min_hold: Duration::from_secs(10),
        ..policy()
    });
    w.set_health(0, false);
    for _ in 0..6 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1);
    // The old primary comes back, re-seeded as a standby of the new one.
    w.set_health(0, true);
    w.members[0].data = Some(standby(0.0));
    let back_at = w.now;
    for _ in 0..60 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 0, "failed back");
    let (when, to) = *w.moves.last().expect("moves");
    assert_eq!(to, 0);
    assert!(
        when.since(back_at) >= Duration::from_secs(30),
        "not before the stable period"
    );
}

#[test]
fn a_flapping_health_signal_causes_at_most_one_failover() {
    // Fail and recover every second for ten minutes.
    let mut w = World::new(Policy {
        failure_threshold: 1,
        success_threshold: 1,
        ..policy()
    });
    for i in 0..600 {
        w.set_health(0, i % 2 == 0);
        w.set_health(1, i % 2 == 1);
        w.pass(false);
    }
    assert!(w.moves.len() <= 10, "{:?}", w.moves);
    for pair in w.moves.windows(2) {
        assert!(
            pair[1].0.since(pair[0].0) >= Duration::from_secs(60),
            "moves closer than minHold: {:?}",
            w.moves
        );
    }
    // With the default thresholds it never fails over at all.
    let mut w = World::new(policy());
    for i in 0..600 {
        w.set_health(0, i % 2 == 0);
        w.pass(false);
    }
    assert!(w.moves.is_empty(), "{:?}", w.moves);
}

proptest! {
    /// Whatever the health checks say and wherever the controller crashes: never two
    /// writers (checked in every pass), automatic moves at least minHold apart, and a move
    /// always fences before it promotes.
    #[test]
    fn moves_are_safe_and_spaced(
        health in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..300),
        crashes in proptest::collection::vec(any::<bool>(), 300),
        lag in 0.0f64..20.0,
    ) {
        let mut w = World::new(Policy { failure_threshold: 2, success_threshold: 2, ..policy() });
        w.members[1].data = Some(standby(lag));
        for (i, (a, b)) in health.iter().enumerate() {
            w.set_health(0, *a);
            w.set_health(1, *b);
            w.pass(crashes[i] && i % 3 == 0);
        }
        for pair in w.moves.windows(2) {
            prop_assert!(pair[1].0.since(pair[0].0) >= Duration::from_secs(60), "{:?}", w.moves);
        }
        if lag > 5.0 {
            prop_assert!(w.moves.is_empty(), "past the data gate: {:?}", w.moves);
        }
        let first_promote = w.actions.iter().position(|a| matches!(a, Action::Promote(_)));
        let first_fence = w.actions.iter().position(|a| matches!(a, Action::Fence(_)));
        if let Some(p) = first_promote {
            prop_assert!(first_fence.is_some_and(|f| f < p), "{:?}", w.actions);
        }
    }
}

#[test]
fn a_fenced_old_primary_that_does_not_follow_is_no_failback_target() {
    let mut w = World::new(Policy {
        failback: Failback::AfterStable(Duration::from_secs(5)),
        min_hold: Duration::from_secs(1),
        ..policy()
    });
    w.set_health(0, false);
    for _ in 0..6 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1);
    // Healthy again, but its database is the fenced old primary, not a standby.
    w.set_health(0, true);
    for _ in 0..60 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1, "no failback onto a diverged database");
    let data = w.members[0].data.clone().expect("data");
    assert!(data.fenced && !data.writable && !data.standby);
}

#[test]
fn a_traffic_only_move_keeps_the_databases_roles() {
    let mut w = World::new(policy());
    w.requests = Requests {
        failover: Some(Some(1)),
        force: false,
        traffic_only: true,
    };
    for _ in 0..3 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1);
    assert_eq!(w.routed_to, Some(1));
    assert!(
        w.actions.iter().all(|a| matches!(a, Action::Route(_))),
        "{:?}",
        w.actions
    );
    assert!(w.members[0].data.as_ref().is_some_and(|d| d.writable));
}

#[test]
fn a_member_never_seen_healthy_is_not_failed_over_from_automatically() {
    let mut w = World::new(policy());
    w.memory = Memory::default();
    w.set_health(0, false);
    for _ in 0..10 {
        w.pass(false);
    }
    assert!(w.actions.is_empty(), "{:?}", w.actions);
    assert!(
        w.plans
            .last()
            .is_some_and(|p| p.message.contains("never been seen healthy"))
    );
    // Once it has been up, its failure does move traffic.
    w.set_health(0, true);
    for _ in 0..3 {
        w.pass(false);
    }
    w.set_health(0, false);
    for _ in 0..6 {
        w.pass(false);
    }
    assert_eq!(w.memory.active, 1);
}
