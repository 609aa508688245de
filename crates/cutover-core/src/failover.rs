//! Failover decisions, free of I/O: given the policy, what each member's health checks
//! and data replication look like now, what the last passes remembered, and requests from
//! people, decide whether traffic moves, and carry a move out in crash-safe steps.
//!
//! A move from member A to member B is three steps, each repeated until its effect is
//! observed, so a controller that dies at any instant resumes where it was:
//! 1. **fence** A's data (A can never accept a write again) — done when A reports fenced,
//!    or A holds no data;
//! 2. **promote** B's data (B's database becomes writable) — done when B reports writable;
//! 3. **route** the traffic entry to B — done when the entry is observed sending to B.
//!
//! Fencing comes before promotion so two writers never coexist. A member whose data cannot
//! be fenced because it is unreachable keeps the move at step 1 unless the move was forced:
//! a forced move accepts that risk and says so.
//!
//! Flapping is bounded twice: a member is down only after `failure_threshold` failed checks
//! in a row and up again only after `success_threshold` good ones, and two automatic moves
//! are at least `min_hold` apart. The data gate refuses an automatic move to a standby
//! whose replication lag exceeds the policy's limits (or is unknown); a person can force it.

use std::time::Duration;

use crate::release::Timestamp;

/// When traffic goes back to the member it failed over from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// Only when a person asks.
    Manual,
    /// Automatically, once that member has been healthy this long.
    AfterStable(Duration),
}

/// The policy's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Failed checks in a row before a member counts as down.
    pub failure_threshold: u32,
    /// Good checks in a row before a member counts as up again.
    pub success_threshold: u32,
    /// Fail over without a person.
    pub automatic: bool,
    /// The least time between two automatic moves.
    pub min_hold: Duration,
    /// When to go back.
    pub failback: Failback,
    /// Most replication lag, in seconds, an automatic move may lose.
    pub max_data_loss_seconds: Option<f64>,
    /// Most replication lag, in bytes, an automatic move may lose.
    pub max_data_loss_bytes: Option<u64>,
}

/// A member's database as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataObs {
    /// It accepts writes (a primary).
    pub writable: bool,
    /// It is fenced: it can never accept a write again.
    pub fenced: bool,
    /// Replication lag behind the primary, in seconds (a standby), if known.
    pub lag_seconds: Option<f64>,
    /// Replication lag behind the primary, in bytes (a standby), if known.
    pub lag_bytes: Option<u64>,
    /// Its database answered.
    pub reachable: bool,
    /// It is a standby following the primary (in recovery).
    pub standby: bool,
    /// Only its lag is known (read from a Prometheus query): its role is managed outside
    /// Cutover, so it is gated on but never fenced or promoted.
    pub gate_only: bool,
}

/// One member as observed this pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberObs {
    /// Its name, for messages (`member <index>` when empty).
    pub name: String,
    /// Every health check passed.
    pub healthy: bool,
    /// Why not, for messages.
    pub reason: String,
    /// Its database, if it has one.
    pub data: Option<DataObs>,
}

/// Health counters of one member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Failed checks in a row.
    pub failures: u32,
    /// Good checks in a row.
    pub successes: u32,
    /// Up (past the success threshold) since, while up.
    pub up_since: Option<Timestamp>,
    /// Down (past the failure threshold).
    pub down: bool,
    /// Has been up at least once: no automatic move leaves a member that was never seen
    /// healthy (a policy created while its primary is still starting).
    pub seen_up: bool,
}

/// A move under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// From this member.
    pub from: usize,
    /// To this one.
    pub to: usize,
    /// A person forced it past the data gate and fencing.
    pub forced: bool,
    /// A failback rather than a failover.
    pub failback: bool,
    /// Traffic only: the databases keep their roles (a drill).
    pub traffic_only: bool,
    /// When it started.
    pub started: Timestamp,
}

/// What the passes remember (kept in the policy's status).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// The member traffic goes to (by intent).
    pub active: usize,
    /// Per member.
    pub counters: Vec<Counters>,
    /// The move under way.
    pub moving: Option<Move>,
    /// When the last move finished.
    pub last_move: Option<Timestamp>,
    /// The member the last failover left (for failback).
    pub failed_from: Option<usize>,
}

/// Requests from people (each new one acted on once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Fail over to this member (`--to`), or to the best candidate when `None` inside.
    pub failover: Option<Option<usize>>,
    /// Past the data gate and unconfirmed fencing.
    pub force: bool,
    /// Move the traffic only, not the databases' roles (a drill).
    pub traffic_only: bool,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Input {
    /// Now.
    pub now: Timestamp,
    /// The policy.
    pub policy: Policy,
    /// Each member, in the policy's order (the first is the preferred primary).
    pub members: Vec<MemberObs>,
    /// The member the traffic entry is observed to send to.
    pub routed_to: Option<usize>,
    /// What the last pass remembered.
    pub memory: Memory,
    /// New requests.
    pub requests: Requests,
    /// The members' health was checked anew for this pass (false: a pass that re-decides
    /// after acting, on the same health results, which must not count twice).
    pub fresh_health: bool,
}

/// Something for the controller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make this member's database unable to accept writes.
    Fence(usize),
    /// Make this member's database the primary.
    Promote(usize),
    /// Point the traffic entry at this member.
    Route(usize),
}

/// The policy's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Traffic on a healthy member.
    Healthy,
    /// A move is under way.
    FailingOver,
    /// Traffic on a standby after a failover.
    FailedOver,
    /// The active member is down and no move is possible (or allowed).
    Degraded,
}

/// A Kubernetes Event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Reason (CamelCase).
    pub reason: &'static str,
    /// Message.
    pub message: String,
    /// A warning rather than normal.
    pub warning: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// To remember.
    pub memory: Memory,
    /// To do, in order.
    pub actions: Vec<Action>,
    /// To record.
    pub events: Vec<Event>,
    /// The phase.
    pub phase: Phase,
    /// A sentence on what is happening and why.
    pub message: String,
}

impl Input {
    /// How messages name member `i`.
    fn name(&self, i: usize) -> String {
        match self.members.get(i) {
            Some(m) if !m.name.is_empty() => format!("member {}", m.name),
            _ => format!("member {i}"),
        }
    }
}

/// Why a member may not receive an automatic move, if it may not.
pub fn data_gate(policy: &Policy, member: &MemberObs) -> Result<(), String> {
    let Some(data) = &member.data else {
        return Ok(());
    };
    if !data.reachable {
        return Err("its database does not answer".into());
    }
    if !data.gate_only && !data.writable && !data.standby {
        return Err("its database is fenced and does not follow the primary".into());
    }
    if let Some(max) = policy.max_data_loss_seconds {
        match data.lag_seconds {
            None => return Err("its replication lag in seconds is unknown".into()),
            Some(lag) if lag > max => {
                return Err(format!(
                    "it lags {lag:.1}s behind, more than maxDataLossSeconds {max}"
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(max) = policy.max_data_loss_bytes {
        match data.lag_bytes {
            None => return Err("its replication lag in bytes is unknown".into()),
            Some(lag) if lag > max => {
                return Err(format!(
                    "it lags {lag} bytes behind, more than maxDataLossBytes {max}"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The counters after one more check of a member.
pub fn count(policy: &Policy, now: Timestamp, old: Counters, obs: &MemberObs) -> Counters {
    let mut c = old;
    if obs.healthy {
        // Counted up to the threshold only: the status changes only on transitions.
        c.successes = c
            .successes
            .saturating_add(1)
            .min(policy.success_threshold.max(1));
        c.failures = 0;
        if c.successes >= policy.success_threshold.max(1) {
            c.down = false;
            c.seen_up = true;
            c.up_since.get_or_insert(now);
        }
    } else {
        c.failures = c
            .failures
            .saturating_add(1)
            .min(policy.failure_threshold.max(1));
        c.successes = 0;
        c.up_since = None;
        if c.failures >= policy.failure_threshold.max(1) {
            c.down = true;
        }
    }
    c
}

struct Planner {
    memory: Memory,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Planner {
    fn event(&mut self, reason: &'static str, message: String, warning: bool) {
        self.events.push(Event {
            reason,
            message,
            warning,
        });
    }

    fn finish(self, phase: Phase, message: String) -> Plan {
        Plan {
            memory: self.memory,
            actions: self.actions,
            events: self.events,
            phase,
            message,
        }
    }
}

/// Decide this pass.
pub fn decide(input: &Input) -> Plan {
    let n = input.members.len();
    let mut memory = input.memory.clone();
    memory.counters.resize(n, Counters::default());
    let active = memory.active.min(n.saturating_sub(1));
    memory.active = active;
    if input.fresh_health {
        for (i, obs) in input.members.iter().enumerate() {
            memory.counters[i] = count(&input.policy, input.now, memory.counters[i], obs);
        }
    }
    let mut p = Planner {
        memory,
        actions: Vec::new(),
        events: Vec::new(),
    };
    if n < 2 {
        return p.finish(
            Phase::Degraded,
            "a failover policy needs two members or more".into(),
        );
    }

    if let Some(m) = p.memory.moving {
        return carry_out(p, input, m);
    }

    // A person asked.
    if let Some(target) = input.requests.failover {
        let to = target.or_else(|| best_candidate(input, &p.memory, active, true));
        match to {
            Some(to) if to != active && to < n => {
                if !input.requests.force
                    && !input.requests.traffic_only
                    && let Err(why) = data_gate(&input.policy, &input.members[to])
                {
                    p.event(
                        "FailoverRefused",
                        format!(
                            "failover to {} refused: {why}; use --force to accept the data loss",
                            input.name(to)
                        ),
                        true,
                    );
                    let msg = format!("failover to {} refused: {why}", input.name(to));
                    let phase = if p.memory.counters[active].down {
                        Phase::Degraded
                    } else {
                        Phase::Healthy
                    };
                    return p.finish(phase, msg);
                }
                let kind = MoveKind {
                    forced: input.requests.force,
                    failback: p.memory.failed_from == Some(to),
                    traffic_only: input.requests.traffic_only,
                };
                return start_move(p, input, active, to, kind);
            }
            // Already there: nothing to do; the requester sees traffic where it asked.
            Some(to) if to == active => {}
            _ => {
                let msg = format!(
                    "failover refused: no other healthy member to fail over to from {}",
                    input.name(active)
                );
                p.event("FailoverRefused", msg.clone(), true);
                let phase = if p.memory.counters[active].down {
                    Phase::Degraded
                } else {
                    Phase::Healthy
                };
                // The refusal is the answer to the request (the CLI reads it in status).
                return p.finish(phase, msg);
            }
        }
    }

    let down = p.memory.counters[active].down;
    let held = p
        .memory
        .last_move
        .is_some_and(|t| input.now.since(t) < input.policy.min_hold);

    // Failback: the member we left is stable again.
    if let (Some(from), Failback::AfterStable(stable)) =
        (p.memory.failed_from, input.policy.failback)
        && !down
        && !held
        && from < n
        && p.memory.counters[from]
            .up_since
            .is_some_and(|t| input.now.since(t) >= stable)
        && data_gate(&input.policy, &input.members[from]).is_ok()
    {
        let kind = MoveKind {
            failback: true,
            ..MoveKind::default()
        };
        return start_move(p, input, active, from, kind);
    }

    if !down {
        let phase = if p.memory.failed_from.is_some() {
            Phase::FailedOver
        } else {
            Phase::Healthy
        };
        return p.finish(
            phase,
            format!("traffic on {}, which is healthy", input.name(active)),
        );
    }
    let why_down = input.members[active].reason.clone();
    if !input.policy.automatic {
        return p.finish(
            Phase::Degraded,
            format!(
                "{} is down ({why_down}); automatic failover is off: `kubectl cutover failover`",
                input.name(active)
            ),
        );
    }
    if !p.memory.counters[active].seen_up {
        return p.finish(
            Phase::Degraded,
            format!(
                "{} is down ({why_down}) and has never been seen healthy; automatic failover waits until it has (`kubectl cutover failover` moves now)",
                input.name(active)
            ),
        );
    }
    if held {
        return p.finish(
            Phase::Degraded,
            format!(
                "{} is down ({why_down}); the last move was less than minHold ago",
                input.name(active)
            ),
        );
    }
    match best_candidate(input, &p.memory, active, false) {
        Some(to) => start_move(p, input, active, to, MoveKind::default()),
        None => {
            // Say why the healthy standbys were refused, if any were.
            let refused: Vec<String> = (0..n)
                .filter(|&i| i != active && !p.memory.counters[i].down && input.members[i].healthy)
                .filter_map(|i| {
                    data_gate(&input.policy, &input.members[i])
                        .err()
                        .map(|w| format!("{}: {w}", input.name(i)))
                })
                .collect();
            let msg = if refused.is_empty() {
                format!(
                    "{} is down ({why_down}) and no other member is healthy",
                    input.name(active)
                )
            } else {
                format!(
                    "{} is down ({why_down}); automatic failover refused: {}; `kubectl cutover failover --force` accepts the loss",
                    input.name(active),
                    refused.join("; ")
                )
            };
            if !refused.is_empty() && !input.memory.counters.get(active).is_some_and(|c| c.down) {
                // First pass that sees it: one Event, not one per pass.
                p.event("FailoverRefused", msg.clone(), true);
            }
            p.finish(Phase::Degraded, msg)
        }
    }
}

/// The first healthy member other than `active` (in the policy's order) that passes the
/// data gate (or any healthy one when `ignore_gate`).
fn best_candidate(
    input: &Input,
    memory: &Memory,
    active: usize,
    ignore_gate: bool,
) -> Option<usize> {
    (0..input.members.len()).find(|&i| {
        i != active
            && is_up(&input.members, &memory.counters, i)
            && (ignore_gate || data_gate(&input.policy, &input.members[i]).is_ok())
    })
}

/// Member `i` passed this pass's checks and is not counted down: one a move may go to.
pub fn is_up(members: &[MemberObs], counters: &[Counters], i: usize) -> bool {
    members.get(i).is_some_and(|m| m.healthy) && !counters.get(i).is_some_and(|c| c.down)
}

/// What kind of move.
#[derive(Debug, Clone, Copy, Default)]
struct MoveKind {
    forced: bool,
    failback: bool,
    traffic_only: bool,
}

fn start_move(mut p: Planner, input: &Input, from: usize, to: usize, kind: MoveKind) -> Plan {
    let MoveKind {
        forced,
        failback,
        traffic_only,
    } = kind;
    let m = Move {
        from,
        to,
        forced,
        failback,
        traffic_only,
        started: input.now,
    };
    let what = if failback { "failback" } else { "failover" };
    let at_risk = input.members[to]
        .data
        .as_ref()
        .map(|d| match (d.lag_seconds, d.lag_bytes) {
            (Some(s), Some(b)) => format!("; data at risk: {s:.1}s / {b} bytes of replication lag"),
            (Some(s), None) => format!("; data at risk: {s:.1}s of replication lag"),
            (None, Some(b)) => format!("; data at risk: {b} bytes of replication lag"),
            (None, None) => "; data at risk: unknown (replication lag not measured)".to_string(),
        })
        .unwrap_or_default();
    let forced_text = if forced { " (forced)" } else { "" };
    p.event(
        if failback {
            "FailbackStarted"
        } else {
            "FailoverStarted"
        },
        format!(
            "{what}{forced_text} from {} ({}) to {}{}",
            input.name(from),
            if input.members[from].reason.is_empty() {
                "healthy"
            } else {
                &input.members[from].reason
            },
            input.name(to),
            if forced { at_risk.as_str() } else { "" }
        ),
        !failback,
    );
    p.memory.moving = Some(m);
    carry_out(p, input, m)
}

fn carry_out(mut p: Planner, input: &Input, m: Move) -> Plan {
    let from = &input.members[m.from];
    let to = &input.members[m.to];
    // 1. Fence the old primary.
    if let Some(d) = &from.data
        && !m.traffic_only
        && !d.gate_only
        && !d.fenced
    {
        if d.reachable {
            p.actions.push(Action::Fence(m.from));
            return p.finish(
                Phase::FailingOver,
                format!("fencing {}'s database", input.name(m.from)),
            );
        }
        if !m.forced {
            return p.finish(
                Phase::FailingOver,
                format!(
                    "{}'s database is unreachable and cannot be confirmed fenced; waiting (a forced failover goes on without it)",
                    input.name(m.from)
                ),
            );
        }
    }
    // 2. Promote the new primary.
    if let Some(d) = &to.data
        && !m.traffic_only
        && !d.gate_only
        && !d.writable
    {
        p.actions.push(Action::Promote(m.to));
        return p.finish(
            Phase::FailingOver,
            format!("promoting {}'s database", input.name(m.to)),
        );
    }
    // 3. Route.
    if input.routed_to != Some(m.to) {
        p.actions.push(Action::Route(m.to));
        return p.finish(
            Phase::FailingOver,
            format!("routing traffic to {}", input.name(m.to)),
        );
    }
    p.memory.active = m.to;
    p.memory.moving = None;
    p.memory.last_move = Some(input.now);
    p.memory.failed_from = if m.failback { None } else { Some(m.from) };
    let took = input.now.since(m.started);
    let what = if m.failback { "failback" } else { "failover" };
    p.event(
        if m.failback {
            "FailbackDone"
        } else {
            "FailoverDone"
        },
        format!(
            "{what} to {} done in {:.1}s",
            input.name(m.to),
            took.as_secs_f64()
        ),
        false,
    );
    let phase = if m.failback {
        Phase::Healthy
    } else {
        Phase::FailedOver
    };
    p.finish(
        phase,
        format!("traffic on {} after a {what}", input.name(m.to)),
    )
}
