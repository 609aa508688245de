//! The regional mode of a FailoverPolicy: every region's controller runs the same policy,
//! acts on its own member only, and an etcd lease decides which region is active. This is
//! one region's decision for one pass, free of I/O.
//!
//! The rules, in order:
//! - **Holding the lease and may act:** the own database is made primary (promoted if it
//!   is a standby), and the entry is published once the member has ready endpoints and
//!   its database (if any) was seen taking writes or is promoted in the same pass. An
//!   automatic policy whose own member is down fences the own database and gives the
//!   lease up, so that a healthy standby takes over.
//! - **Held the lease and can no longer renew it** (a partition, or the coordination
//!   quorum lost): the own database is fenced at once. This happens a fence margin before
//!   the lease can expire, hence before any other region can take over.
//! - **Another region holds the lease:** the own database must not be a writable primary
//!   (it is fenced if it is).
//! - **Nobody holds it:** this region campaigns when its member is up, its data gate
//!   passes and its turn has come: the region last active (or, before any region was,
//!   the first member's) at once, every other region once the lease has been vacant for
//!   its rank times the campaign step — so that a restarted active region gets its lease
//!   back, and two standbys do not race. Before any region was active, only the first
//!   member's region may start.
//! - **etcd cannot be reached** (no lease held): nothing moves.

use std::time::Duration;

use crate::failover::{Counters, DataObs, MemberObs, Policy, count, data_gate, is_up};
use crate::release::Timestamp;

/// The lease as this region sees it this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This region holds it and may act.
    Held,
    /// This region held it and its renewals stopped being acknowledged: it may not act.
    Lost,
    /// Another region holds it.
    HeldBy(String),
    /// This region's own lease from an earlier run, which this controller no longer has:
    /// it expires within one lease TTL (nobody acts on it meanwhile).
    Expiring,
    /// Nobody holds it, for this long as far as this region has seen.
    Vacant(Duration),
    /// etcd did not answer (no quorum this region can reach).
    Unreachable(String),
}

/// One region's view this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The policy's knobs.
    pub policy: Policy,
    /// Now.
    pub now: Timestamp,
    /// The own member's index in `spec.members`.
    pub own: usize,
    /// The own member's health counters before this check.
    pub counters: Counters,
    /// This pass's health check of the own member passed.
    pub healthy: bool,
    /// The own member's database (`None`: it has none).
    pub data: Option<DataObs>,
    /// The lease.
    pub lease: Lease,
    /// The member the last holder made active, as etcd records it (`None`: no region was
    /// ever active).
    pub last_active: Option<usize>,
    /// How many members there are.
    pub members: usize,
    /// The time each rank waits before campaigning for a vacant lease.
    pub campaign_step: Duration,
    /// The own member has ready endpoints to take traffic.
    pub ready: bool,
    /// The entry already points at the own member (as this region last published it).
    pub published: bool,
    /// The policy keeps standbys at a pilot-light size.
    pub pilot_light: bool,
    /// The region ahead of this one for a vacant lease (the last active one) is gone: its
    /// report through etcd is older than a lease TTL, or says its member is down. Nobody
    /// is then waited for.
    pub preferred_gone: bool,
    /// (The holder) a failover request accepted this pass: hand the lease to this
    /// member's region.
    pub hand_over_to: Option<usize>,
    /// The last holder handed the lease to this member's region a short while ago: only
    /// that region campaigns meanwhile.
    pub handed_to: Option<usize>,
}

/// A size given as a count or as a percentage of the full size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// This many.
    Count(i32),
    /// This percentage of the full size, rounded up.
    Percent(i32),
}

impl Size {
    /// Parse a Kubernetes int-or-string: `3` or `"25%"`.
    pub fn parse(int: Option<i32>, string: Option<&str>) -> Result<Size, String> {
        match (int, string) {
            (Some(n), _) if n >= 0 => Ok(Size::Count(n)),
            (Some(n), _) => Err(format!("{n} is negative")),
            (None, Some(s)) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i32>().ok())
                .filter(|p| (0..=100).contains(p))
                .map(Size::Percent)
                .ok_or_else(|| {
                    format!("{s:?} is neither a count nor a percentage from 0% to 100%")
                }),
            (None, None) => Err("empty".into()),
        }
    }

    /// The size out of `full`, at least 1 and at most `full` (0 when `full` is 0).
    pub fn of(self, full: i32) -> i32 {
        let full = full.max(0);
        let n = match self {
            Size::Count(n) => n,
            Size::Percent(p) => {
                i32::try_from((i64::from(full) * i64::from(p) + 99) / 100).unwrap_or(full)
            }
        };
        n.clamp(full.min(1), full)
    }
}

/// The size the own member should run at after the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Its full size (`spec.replicas`): it is active.
    Full,
    /// The pilot-light size: another region is active.
    PilotLight,
}

/// What to do, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make the own database read-only.
    Fence,
    /// Try to take the vacant lease.
    Campaign,
    /// Record in etcd, with the fencing token, that the own member is the active one —
    /// before its database is promoted, so that a region whose old primary was fenced can
    /// tell that nobody was promoted since.
    Claim,
    /// Make the own database a writable primary: promote a standby, or lift this region's
    /// own fence from a primary nobody replaced (its claim is still the last).
    Promote,
    /// Point the entry at the own member, with the fencing token.
    Publish,
    /// Give the lease up.
    Resign,
    /// Record, with the fencing token, the member a failover request names as the active
    /// one (and the fenced database's last position, for its data gate), then give the
    /// lease up: that member's region takes it first.
    HandOver,
}

/// This region's role after the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// It holds the lease and serves (or is getting ready to).
    Active,
    /// Another region does.
    Standby,
    /// Nobody does.
    Vacant,
    /// It lost the lease and fenced itself.
    Fenced,
    /// etcd cannot be reached; nothing moves.
    Unreachable,
}

impl State {
    /// The name in status.
    pub fn name(self) -> &'static str {
        match self {
            State::Active => "Active",
            State::Standby => "Standby",
            State::Vacant => "Vacant",
            State::Fenced => "Fenced",
            State::Unreachable => "Unreachable",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Actions, in order.
    pub actions: Vec<Action>,
    /// The own member's counters after this check.
    pub counters: Counters,
    /// The role after the actions.
    pub state: State,
    /// Why, in a sentence.
    pub message: String,
    /// The size to run the own member at (`None`: leave it as it is).
    pub scale: Option<Scale>,
}

/// How long a region of rank `rank` waits for a vacant lease: the preferred region (rank
/// 0) not at all.
pub fn campaign_delay(rank: usize, step: Duration) -> Duration {
    step * u32::try_from(rank).unwrap_or(u32::MAX)
}

/// The own member's rank for a vacant lease: 0 for the member last active (or the first
/// member when none was), then the others in spec order.
pub fn rank(own: usize, last_active: Option<usize>, members: usize) -> usize {
    let preferred = last_active.unwrap_or(0).min(members.saturating_sub(1));
    if own == preferred {
        0
    } else {
        let order = (0..members).filter(|&i| i != preferred);
        order.take_while(|&i| i != own).count() + 1
    }
}

/// One region's decision.
pub fn decide(input: &Input) -> Plan {
    let own_obs = crate::failover::MemberObs {
        name: String::new(),
        healthy: input.healthy,
        reason: String::new(),
        data: input.data.clone(),
    };
    let counters = count(&input.policy, input.now, input.counters, &own_obs);
    let writable = input.data.as_ref().is_some_and(|d| d.writable);
    let standby_db = input.data.as_ref().is_some_and(|d| d.standby);
    // A primary this region fenced itself (the lease lost, or not yet taken at the first
    // start) whose claim is still the last — or, before any claim, the first member's: no
    // other region was promoted since, so its data is the newest.
    let fenced_own_primary = input.data.as_ref().is_some_and(|d| d.fenced);
    let claim_is_ours = match input.last_active {
        Some(a) => a == input.own,
        None => input.own == 0,
    };
    let own_data_newest = fenced_own_primary && claim_is_ours;
    // A pilot-light member is scaled up the moment its region holds the lease, and down
    // only while another region serves: with nobody active, or etcd silent, sizes stay.
    let scale = |state: State| match state {
        State::Active if input.pilot_light => Some(Scale::Full),
        State::Standby if input.pilot_light => Some(Scale::PilotLight),
        _ => None,
    };
    let plan = |actions: Vec<Action>, state: State, message: String| Plan {
        actions,
        counters,
        state,
        message,
        scale: scale(state),
    };
    match &input.lease {
        Lease::Held if input.hand_over_to.is_some_and(|t| t != input.own) => plan(
            fence_if(writable, vec![Action::HandOver]),
            State::Vacant,
            "a failover request: this region's database fenced, the lease handed over".into(),
        ),
        Lease::Held if counters.down && input.policy.automatic => plan(
            fence_if(writable, vec![Action::Resign]),
            State::Vacant,
            "this region's member is down: its database fenced, the lease given up for a standby".into(),
        ),
        Lease::Held => {
            let mut actions = Vec::new();
            if input.last_active != Some(input.own) {
                actions.push(Action::Claim);
            }
            let promoting = standby_db || fenced_own_primary;
            if promoting {
                actions.push(Action::Promote);
            }
            // The entry goes to a database known to take writes (or made to this pass):
            // one whose role this pass could not see is not published to.
            let data_seen = input
                .data
                .as_ref()
                .is_none_or(|d| d.gate_only || d.writable || promoting);
            let message = if input.published {
                "this region holds the lease and serves".to_string()
            } else if !data_seen {
                "this region holds the lease; waiting to see its database take writes before it publishes the entry".to_string()
            } else if input.ready {
                actions.push(Action::Publish);
                "this region holds the lease and serves".to_string()
            } else {
                "this region holds the lease; waiting for enough of its member to be ready before it publishes the entry".to_string()
            };
            plan(actions, State::Active, message)
        }
        Lease::Lost => plan(
            fence_if(writable, Vec::new()),
            State::Fenced,
            "this region could not renew the lease in time: its database is fenced, and a region that can reach the etcd quorum may take over".into(),
        ),
        Lease::HeldBy(holder) => plan(
            stand_by(writable),
            State::Standby,
            format!("region {holder} holds the lease"),
        ),
        Lease::Expiring => plan(
            stand_by(writable),
            State::Vacant,
            "this region's lease from an earlier run (this controller no longer has it) expires within one lease TTL; then it is campaigned for again".into(),
        ),
        Lease::Unreachable(why) => plan(
            // A primary here without the lease is fenced already (or never was one): a
            // region that cannot reach etcd changes nothing else.
            Vec::new(),
            State::Unreachable,
            format!("etcd does not answer ({why}): nothing moves until it does"),
        ),
        Lease::Vacant(for_) => {
            let rank = rank(input.own, input.last_active, input.members);
            // The wait lets the last active region, back from a restart, take its lease
            // again; with that region gone there is nobody to wait for. (Two standbys with
            // three members still take turns: the rank is counted past the gone one.)
            let rank = if input.preferred_gone {
                rank.saturating_sub(1)
            } else {
                rank
            };
            let wait = campaign_delay(rank, input.campaign_step);
            let gate = if own_data_newest {
                Ok(())
            } else {
                data_gate(&input.policy, &own_obs)
            };
            let why_not = if input.last_active.is_none() && input.own != 0 {
                // Before any region was active the data is the first member's: only its
                // region starts (a standby taking over now could promote an empty copy).
                Some("no region was active yet: the first member's region starts".to_string())
            } else if input.handed_to.is_some_and(|t| t != input.own) {
                Some("the lease was handed to another region (a failover request); it goes first".into())
            } else if counters.down || !counters.seen_up {
                Some("this region's member is not up".to_string())
            } else if let Err(e) = gate {
                Some(format!("the data gate refuses this region: {e}"))
            } else if !input.policy.automatic && input.last_active.is_some_and(|a| a != input.own)
            {
                Some("the policy is not automatic: `kubectl cutover failover` moves it".into())
            } else if *for_ < wait {
                Some(format!(
                    "waiting {:.1}s more (rank {rank}) for a region ahead of this one",
                    (wait - *for_).as_secs_f64()
                ))
            } else {
                None
            };
            match why_not {
                None => plan(
                    vec![Action::Campaign],
                    State::Vacant,
                    "nobody holds the lease: campaigning".into(),
                ),
                Some(why) => plan(
                    stand_by(writable),
                    State::Vacant,
                    format!("nobody holds the lease; not campaigning: {why}"),
                ),
            }
        }
    }
}

/// The member a failover request hands the lease to, from the holder `own`: `to`, or
/// else the first other member that is up; refused, saying why, when that member is not
/// up, its database is not a standby, or (without `force`) its data gate refuses it.
/// `members` and `counters` as the holder sees them (other regions' from their reports).
pub fn handover_target(
    policy: &Policy,
    own: usize,
    to: Option<usize>,
    members: &[MemberObs],
    counters: &[Counters],
    force: bool,
) -> Result<usize, String> {
    let up = |i: usize| is_up(members, counters, i);
    let name = |i: usize| {
        members
            .get(i)
            .map(|m| m.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("member {i}"))
    };
    let target = match to {
        Some(t) if t == own => return Err(format!("{} is already active", name(t))),
        Some(t) => t,
        None => (0..members.len())
            .find(|&i| i != own && up(i))
            .ok_or("no other member is up")?,
    };
    let m = members
        .get(target)
        .ok_or_else(|| format!("no member {target}"))?;
    if !up(target) {
        let why = if m.reason.is_empty() {
            "not up".to_string()
        } else {
            m.reason.clone()
        };
        return Err(format!("{} is not up: {why}", name(target)));
    }
    if let Some(d) = &m.data
        && !d.gate_only
        && !d.standby
    {
        return Err(format!(
            "{}'s database is not a standby of the active one (rebuild it as one first)",
            name(target)
        ));
    }
    if !force {
        data_gate(policy, m).map_err(|e| format!("{}: {e}", name(target)))?;
    }
    Ok(target)
}

fn fence_if(writable: bool, mut then: Vec<Action>) -> Vec<Action> {
    if writable {
        then.insert(0, Action::Fence);
    }
    then
}

/// A region without the lease: no writable primary.
fn stand_by(writable: bool) -> Vec<Action> {
    fence_if(writable, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::Failback;

    fn input(lease: Lease) -> Input {
        Input {
            policy: Policy {
                failure_threshold: 2,
                success_threshold: 1,
                automatic: true,
                min_hold: Duration::ZERO,
                failback: Failback::Manual,
                max_data_loss_seconds: None,
                max_data_loss_bytes: Some(0),
            },
            now: Timestamp(10_000),
            own: 1,
            counters: Counters {
                successes: 1,
                seen_up: true,
                up_since: Some(Timestamp(1_000)),
                ..Counters::default()
            },
            healthy: true,
            data: Some(DataObs {
                reachable: true,
                standby: true,
                lag_bytes: Some(0),
                ..DataObs::default()
            }),
            lease,
            last_active: Some(0),
            members: 2,
            campaign_step: Duration::from_secs(1),
            ready: true,
            published: false,
            pilot_light: false,
            preferred_gone: false,
            hand_over_to: None,
            handed_to: None,
        }
    }

    fn primary() -> Option<DataObs> {
        Some(DataObs {
            reachable: true,
            writable: true,
            ..DataObs::default()
        })
    }

    #[test]
    fn the_preferred_region_campaigns_at_once_and_the_others_wait_their_rank() {
        assert_eq!(rank(0, None, 3), 0);
        assert_eq!(rank(1, None, 3), 1);
        assert_eq!(rank(2, None, 3), 2);
        assert_eq!(rank(1, Some(1), 3), 0);
        assert_eq!(rank(0, Some(1), 3), 1);
        assert_eq!(rank(2, Some(1), 3), 2);
        let mut first_start = input(Lease::Vacant(Duration::from_secs(60)));
        first_start.last_active = None;
        let p = decide(&first_start);
        assert!(p.actions.is_empty(), "{p:?}");
        first_start.own = 0;
        assert_eq!(decide(&first_start).actions, vec![Action::Campaign]);
        let early = decide(&input(Lease::Vacant(Duration::from_millis(500))));
        assert!(early.actions.is_empty());
        assert!(early.message.contains("waiting"), "{}", early.message);
        let due = decide(&input(Lease::Vacant(Duration::from_secs(1))));
        assert_eq!(due.actions, vec![Action::Campaign]);
        // The last active region gone: the next one does not wait for it.
        let mut gone = input(Lease::Vacant(Duration::ZERO));
        gone.preferred_gone = true;
        assert_eq!(decide(&gone).actions, vec![Action::Campaign]);
        gone.members = 3;
        gone.own = 2;
        let p = decide(&gone);
        assert!(p.message.contains("rank 1"), "{}", p.message);
    }

    #[test]
    fn a_standby_behind_the_data_gate_or_down_does_not_campaign() {
        let mut behind = input(Lease::Vacant(Duration::from_secs(5)));
        behind.data.as_mut().expect("data").lag_bytes = Some(10);
        let p = decide(&behind);
        assert!(!p.actions.contains(&Action::Campaign));
        assert!(p.message.contains("data gate"), "{}", p.message);
        let mut down = input(Lease::Vacant(Duration::from_secs(5)));
        down.healthy = false;
        down.counters.failures = 1;
        let p = decide(&down);
        assert!(!p.actions.contains(&Action::Campaign));
        assert!(p.counters.down);
    }

    #[test]
    fn the_holder_promotes_and_publishes_only_once_ready() {
        let mut i = input(Lease::Held);
        i.ready = false;
        let p = decide(&i);
        assert_eq!(p.actions, vec![Action::Claim, Action::Promote]);
        assert_eq!(p.state, State::Active);
        i.last_active = Some(1);
        i.data = primary();
        i.ready = true;
        assert_eq!(decide(&i).actions, vec![Action::Publish]);
        i.published = true;
        assert!(decide(&i).actions.is_empty());
    }

    #[test]
    fn a_failover_request_fences_and_hands_over_and_only_the_named_region_campaigns() {
        let mut i = input(Lease::Held);
        i.own = 0;
        i.data = primary();
        i.published = true;
        i.hand_over_to = Some(1);
        let p = decide(&i);
        assert_eq!(p.actions, vec![Action::Fence, Action::HandOver]);
        assert_eq!(p.state, State::Vacant);
        // The old holder, the lease vacant: it waits for the named region, however long.
        let mut old = input(Lease::Vacant(Duration::from_secs(60)));
        old.own = 0;
        old.last_active = Some(1);
        old.handed_to = Some(1);
        old.data = Some(DataObs {
            reachable: true,
            fenced: true,
            ..DataObs::default()
        });
        let p = decide(&old);
        assert!(!p.actions.contains(&Action::Campaign), "{p:?}");
        assert!(p.message.contains("handed"), "{}", p.message);
        // The named region goes at once.
        let mut new = input(Lease::Vacant(Duration::ZERO));
        new.last_active = Some(1);
        new.handed_to = Some(1);
        assert_eq!(decide(&new).actions, vec![Action::Campaign]);
    }

    fn member(name: &str, healthy: bool, data: Option<DataObs>) -> MemberObs {
        MemberObs {
            name: name.into(),
            healthy,
            reason: if healthy {
                String::new()
            } else {
                "connection refused".into()
            },
            data,
        }
    }

    #[test]
    fn a_failover_request_goes_only_to_an_up_standby_its_data_gate_lets_through() {
        let policy = input(Lease::Held).policy;
        let standby = |lag: u64| {
            Some(DataObs {
                reachable: true,
                standby: true,
                lag_bytes: Some(lag),
                lag_seconds: Some(0.0),
                ..DataObs::default()
            })
        };
        let counters = vec![Counters::default(); 3];
        let members = vec![
            member("east", true, primary()),
            member("west", false, standby(0)),
            member("north", true, standby(0)),
        ];
        // Without --to: the first other member that is up.
        assert_eq!(
            handover_target(&policy, 0, None, &members, &counters, false),
            Ok(2)
        );
        let refused = handover_target(&policy, 0, Some(1), &members, &counters, false);
        assert_eq!(refused, Err("west is not up: connection refused".into()));
        let own = handover_target(&policy, 0, Some(0), &members, &counters, false);
        assert_eq!(own, Err("east is already active".into()));
        // Behind by more than the gate allows: refused, unless forced.
        let behind = vec![
            member("east", true, primary()),
            member("west", true, standby(4096)),
        ];
        let gated = handover_target(&policy, 0, Some(1), &behind, &counters, false);
        assert!(
            gated.as_ref().is_err_and(|e| e.starts_with("west: ")),
            "{gated:?}"
        );
        assert_eq!(
            handover_target(&policy, 0, Some(1), &behind, &counters, true),
            Ok(1)
        );
        // A database that is not a standby (a fenced old primary) cannot take over.
        let fenced = Some(DataObs {
            reachable: true,
            fenced: true,
            ..DataObs::default()
        });
        let old = vec![
            member("east", true, primary()),
            member("west", true, fenced),
        ];
        let e = handover_target(&policy, 0, Some(1), &old, &counters, true);
        assert!(
            e.as_ref().is_err_and(|e| e.contains("not a standby")),
            "{e:?}"
        );
        // A member counted down is not up, whatever its last check said.
        let mut down = counters.clone();
        down[2].down = true;
        let none = handover_target(&policy, 0, None, &members, &down, false);
        assert_eq!(none, Err("no other member is up".into()));
    }

    #[test]
    fn a_holder_whose_database_was_not_seen_does_not_publish() {
        let mut i = input(Lease::Held);
        i.last_active = Some(1);
        i.data = Some(DataObs::default());
        let p = decide(&i);
        assert!(p.actions.is_empty(), "{p:?}");
        assert!(p.message.contains("database"), "{}", p.message);
        // Seen again as the standby it was: promoted and published in the same pass.
        i.data = Some(DataObs {
            reachable: true,
            standby: true,
            ..DataObs::default()
        });
        assert_eq!(decide(&i).actions, vec![Action::Promote, Action::Publish]);
        // Published already: an unseen database changes nothing (traffic stays).
        i.published = true;
        i.data = Some(DataObs::default());
        assert!(decide(&i).actions.is_empty());
    }

    #[test]
    fn a_holder_whose_member_is_down_fences_then_resigns() {
        let mut i = input(Lease::Held);
        i.data = primary();
        i.healthy = false;
        i.counters.failures = 1;
        assert_eq!(decide(&i).actions, vec![Action::Fence, Action::Resign]);
        i.policy.automatic = false;
        assert!(!decide(&i).actions.contains(&Action::Resign));
    }

    #[test]
    fn a_lost_lease_fences_and_an_unreachable_etcd_moves_nothing() {
        let mut lost = input(Lease::Lost);
        lost.data = primary();
        let p = decide(&lost);
        assert_eq!(p.actions, vec![Action::Fence]);
        assert_eq!(p.state, State::Fenced);
        let mut cut = input(Lease::Unreachable("timeout".into()));
        cut.data = primary();
        assert!(decide(&cut).actions.is_empty());
    }

    #[test]
    fn a_new_holder_claims_before_it_promotes() {
        let i = input(Lease::Held);
        assert_eq!(
            decide(&i).actions,
            vec![Action::Claim, Action::Promote, Action::Publish]
        );
    }

    #[test]
    fn a_region_whose_fenced_primary_is_still_the_last_claim_takes_the_lease_back() {
        let fenced = Some(DataObs {
            reachable: true,
            fenced: true,
            ..DataObs::default()
        });
        let mut back = input(Lease::Vacant(Duration::ZERO));
        back.own = 0;
        back.data = fenced.clone();
        assert_eq!(decide(&back).actions, vec![Action::Campaign]);
        back.lease = Lease::Held;
        back.published = true;
        assert_eq!(decide(&back).actions, vec![Action::Promote]);
        // At the first start (no claim yet) the first member's fenced primary is the data.
        back.lease = Lease::Vacant(Duration::ZERO);
        back.last_active = None;
        assert_eq!(decide(&back).actions, vec![Action::Campaign]);
        // Another region claimed since: the fenced primary is behind, refused.
        let mut behind = input(Lease::Vacant(Duration::from_secs(10)));
        behind.own = 0;
        behind.last_active = Some(1);
        behind.data = fenced;
        let p = decide(&behind);
        assert!(!p.actions.contains(&Action::Campaign), "{p:?}");
    }

    #[test]
    fn a_writable_primary_without_the_lease_is_fenced() {
        let mut i = input(Lease::HeldBy("east".into()));
        i.data = primary();
        assert_eq!(decide(&i).actions, vec![Action::Fence]);
    }

    #[test]
    fn a_manual_policy_does_not_take_a_lease_from_another_region() {
        let mut i = input(Lease::Vacant(Duration::from_secs(10)));
        i.policy.automatic = false;
        assert!(!decide(&i).actions.contains(&Action::Campaign));
        i.last_active = Some(1);
        assert_eq!(decide(&i).actions, vec![Action::Campaign]);
    }

    #[test]
    fn sizes_are_counts_or_percentages_rounded_up_within_one_and_the_full_size() {
        assert_eq!(Size::parse(Some(2), None), Ok(Size::Count(2)));
        assert_eq!(Size::parse(None, Some("25%")), Ok(Size::Percent(25)));
        assert!(Size::parse(None, Some("25")).is_err());
        assert!(Size::parse(None, Some("150%")).is_err());
        assert!(Size::parse(Some(-1), None).is_err());
        assert_eq!(Size::Percent(25).of(10), 3);
        assert_eq!(Size::Percent(0).of(10), 1);
        assert_eq!(Size::Percent(100).of(10), 10);
        assert_eq!(Size::Count(0).of(4), 1);
        assert_eq!(Size::Count(9).of(4), 4);
        assert_eq!(Size::Count(1).of(0), 0);
    }

    #[test]
    fn a_pilot_light_member_runs_full_while_active_small_while_another_serves() {
        let mut i = input(Lease::HeldBy("east".into()));
        assert_eq!(decide(&i).scale, None);
        i.pilot_light = true;
        assert_eq!(decide(&i).scale, Some(Scale::PilotLight));
        i.lease = Lease::Held;
        i.ready = false;
        let p = decide(&i);
        assert_eq!(p.scale, Some(Scale::Full));
        assert!(!p.actions.contains(&Action::Publish), "{p:?}");
        // Nobody active, or etcd silent: the size stays where it is.
        i.lease = Lease::Vacant(Duration::ZERO);
        assert_eq!(decide(&i).scale, None);
        i.lease = Lease::Unreachable("timeout".into());
        assert_eq!(decide(&i).scale, None);
        // Its own lease of an earlier run, expiring: not a standby, the size stays.
        i.lease = Lease::Expiring;
        assert_eq!(decide(&i).scale, None);
        // Once serving, a pod fewer does not unpublish.
        i.lease = Lease::Held;
        i.last_active = Some(1);
        i.published = true;
        let p = decide(&i);
        assert!(p.message.contains("serves"), "{}", p.message);
    }
}
