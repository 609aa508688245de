//! The blue-green release state machine: what was observed (and the time) in, a plan out.
//!
//! The controller calls [`decide`] on every reconcile with a fresh [`Input`]: the desired
//! revision from the spec, what it remembered in `status` ([`Memory`]), what each color's
//! Deployment and the live Service look like now, and the user's new requests. [`decide`]
//! returns the actions to apply, in order, and the memory to write back. Every action is
//! idempotent, and every decision is re-derived from observation, so a controller that died
//! at any instant — before, between or after the actions, before the status write — takes
//! up the release where the cluster is, without repeating or skipping a traffic switch.

use std::time::Duration;

use crate::color::{Color, PerColor};

/// Milliseconds since the Unix epoch: the only clock the core knows, passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This time plus `d`.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// What happens to the previous live color after a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyPolicy {
    /// Keep it at full size.
    Warm,
    /// Scale it to zero after the delay.
    ScaleDownAfter(Duration),
    /// Scale it to zero at once.
    Zero,
}

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Hash of the pod template (and the config it references): the revision's identity.
    pub template_hash: String,
    /// Pods per color at full size.
    pub replicas: i32,
    /// `Some(delay)`: promote automatically `delay` after the new color is ready.
    /// `None`: wait for a promote request.
    pub auto_promotion: Option<Duration>,
    /// The standby policy.
    pub standby: StandbyPolicy,
    /// How long the new color may take to become available.
    pub progress_deadline: Duration,
    /// Abort (rather than only report) when the deadline passes.
    pub abort_on_deadline: bool,
    /// `spec.paused`: hold the release where it is.
    pub paused: bool,
    /// Analyses configured, by gate.
    pub analysis: Gates<bool>,
    /// Traffic steps between the new color becoming ready and promotion.
    pub steps: Vec<Step>,
}

/// One step of a release, as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send this percent of live traffic to the new color.
    SetWeight(u8),
    /// Wait this long, or for a promote when `None`.
    Pause(Option<Duration>),
    /// Run this step's analysis; failure aborts.
    Analysis,
    /// Route matching requests to the new color (`true`) or stop doing so (`false`).
    SetHeaderRoute(bool),
    /// Mirror this percent of live traffic to the new color (0 removes the mirror).
    SetMirror(u8),
}

/// What the traffic provider reports, relative to the live color.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficObs {
    /// Percent of live traffic on the other color (up to 100: a `setWeight: 100` step, or
    /// a route switched before the live Service followed).
    pub weight: u8,
    /// The step whose header route is in place, if any.
    pub header_route: Option<u32>,
    /// Percent of live traffic mirrored to the other color.
    pub mirror: u8,
}

impl TrafficObs {
    /// Whether anything but the live color gets traffic (or might).
    pub fn splits(&self) -> bool {
        self.weight > 0 || self.header_route.is_some() || self.mirror > 0
    }
}

/// What a weighted provider's route object holds, as read: each color's weight, the header
/// route and the mirror. Its weights alone cannot say which color is live — at a 60 %
/// step the new color has the larger share — so it is read against the color the live
/// Service names ([`RouteObs::relative_to`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteObs {
    /// The weight of each color's backend (0 when absent).
    pub weights: PerColor<i64>,
    /// The step whose header route is in place, if any.
    pub header_route: Option<u32>,
    /// Percent mirrored to a color's backend.
    pub mirror: u8,
}

impl RouteObs {
    /// The split relative to `live`: percent of traffic on the other color, rounded;
    /// `None` when neither color has any weight.
    pub fn relative_to(&self, live: Color) -> Option<TrafficObs> {
        let total = self.weights.blue.max(0) + self.weights.green.max(0);
        if total <= 0 {
            return None;
        }
        let other = (*self.weights.get(live.other())).max(0);
        Some(TrafficObs {
            weight: u8::try_from((other * 100 + total / 2) / total).unwrap_or(100),
            header_route: self.header_route,
            mirror: self.mirror,
        })
    }
}

/// Where analysis gates a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Against the ready new color, before any traffic moves. Failure aborts.
    PrePromotion,
    /// From the start of the release until promotion. Failure aborts.
    Background,
    /// After promotion, with the old color warm. Failure switches straight back.
    PostPromotion,
    /// An `analysis` step (its index). Failure aborts.
    Step(u32),
}

impl Gate {
    /// Name used in AnalysisRun names and messages.
    pub fn name(self) -> String {
        match self {
            Gate::PrePromotion => "pre".into(),
            Gate::Background => "background".into(),
            Gate::PostPromotion => "post".into(),
            Gate::Step(i) => format!("step-{i}"),
        }
    }
}

/// A value per analysis gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates<T> {
    /// Pre-promotion.
    pub pre: T,
    /// Background.
    pub background: T,
    /// Post-promotion.
    pub post: T,
    /// The current step's analysis.
    pub step: T,
}

impl<T> Gates<T> {
    /// The value of `gate`.
    pub fn get(&self, gate: Gate) -> &T {
        match gate {
            Gate::PrePromotion => &self.pre,
            Gate::Background => &self.background,
            Gate::PostPromotion => &self.post,
            Gate::Step(_) => &self.step,
        }
    }
}

/// What an analysis run of the current release attempt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateResult {
    /// Still measuring.
    Running,
    /// Passed.
    Successful,
    /// Failed, with the failing metric, its values and the condition.
    Failed(String),
    /// Inconclusive, with the reason.
    Inconclusive(String),
    /// The provider kept failing, with the error.
    Error(String),
}

/// A color's Deployment as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColorObservation {
    /// The Deployment exists (and is ours).
    pub exists: bool,
    /// Template hash it was deployed with (our annotation).
    pub template_hash: Option<String>,
    /// Revision it was deployed with (our annotation).
    pub revision: Option<i64>,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `status.replicas` (pods of any template).
    pub replicas: i32,
    /// `status.updatedReplicas`.
    pub updated_replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// `status.availableReplicas`.
    pub available_replicas: i32,
}

/// Why a color is not ready to take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// Its Deployment does not exist yet.
    Missing,
    /// It runs another revision.
    OtherRevision,
    /// Its Deployment controller has not seen the latest spec yet.
    GenerationNotObserved,
    /// It is not scaled to full size.
    NotScaled {
        /// `spec.replicas`.
        spec: i32,
        /// Full size.
        want: i32,
    },
    /// Not every pod is updated, ready and available, or old pods remain.
    PodsNotReady {
        /// Ready pods of the current template.
        ready: i32,
        /// Full size.
        want: i32,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Missing => f.write_str("its Deployment does not exist yet"),
            NotReady::OtherRevision => f.write_str("it runs another revision"),
            NotReady::GenerationNotObserved => {
                f.write_str("its Deployment has not observed the latest spec")
            }
            NotReady::NotScaled { spec, want } => write!(f, "scaled to {spec} of {want}"),
            NotReady::PodsNotReady { ready, want } => write!(f, "{ready}/{want} pods ready"),
        }
    }
}

/// Whether `obs` runs `hash` with all `want` pods ready and available, as its Deployment
/// controller reports for the current generation. Trusts nothing else.
pub fn readiness(obs: &ColorObservation, hash: &str, want: i32) -> Result<(), NotReady> {
    if !obs.exists {
        return Err(NotReady::Missing);
    }
    if obs.template_hash.as_deref() != Some(hash) {
        return Err(NotReady::OtherRevision);
    }
    if obs.observed_generation < obs.generation {
        return Err(NotReady::GenerationNotObserved);
    }
    if obs.spec_replicas != want {
        return Err(NotReady::NotScaled {
            spec: obs.spec_replicas,
            want,
        });
    }
    let all = [
        obs.replicas,
        obs.updated_replicas,
        obs.ready_replicas,
        obs.available_replicas,
    ];
    if all.iter().any(|n| *n != want) {
        return Err(NotReady::PodsNotReady {
            ready: obs.ready_replicas.min(obs.updated_replicas),
            want,
        });
    }
    Ok(())
}

/// A release under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The color receiving the new revision.
    pub color: Color,
    /// Its template hash.
    pub template_hash: String,
    /// Its revision number.
    pub revision: i64,
    /// When it started.
    pub started_at: Timestamp,
    /// When the new color first became fully available.
    pub available_at: Option<Timestamp>,
    /// Set once the release is aborted, with the reason.
    pub aborted: Option<String>,
    /// Attempt number: a retry starts a new attempt, with new analysis runs.
    pub attempt: u32,
    /// When the new color took the live traffic; from then on post-promotion analysis
    /// runs, with the previous color kept warm for an instant rollback.
    pub promoted_at: Option<Timestamp>,
    /// The step the release is at (`steps.len()` once all are done).
    pub step_index: u32,
    /// When the current step started.
    pub step_started_at: Option<Timestamp>,
}

/// The previous live color, kept as standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyState {
    /// The standby color.
    pub color: Color,
    /// When it became standby.
    pub since: Timestamp,
}

/// What the controller remembers between reconciles (kept in `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The color that takes live traffic; `None` before the first rollout.
    pub active: Option<Color>,
    /// The release under way.
    pub release: Option<Release>,
    /// The standby color.
    pub standby: Option<StandbyState>,
    /// The newest revision number handed out.
    pub latest_revision: i64,
}

/// New user requests (annotations whose token was not handled yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Promote now.
    pub promote: bool,
    /// Skip every remaining step and promote now.
    pub promote_full: bool,
    /// Abort the release.
    pub abort: bool,
    /// Retry an aborted release.
    pub retry: bool,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone)]
pub struct Input {
    /// The time now.
    pub now: Timestamp,
    /// The spec.
    pub desired: Desired,
    /// What was remembered.
    pub memory: Memory,
    /// Each color's Deployment.
    pub colors: PerColor<ColorObservation>,
    /// The color the live Service selects now (`None`: no live Service yet).
    pub live: Option<Color>,
    /// The color the preview Service selects now.
    pub preview: Option<Color>,
    /// New requests.
    pub requests: Requests,
    /// The analysis runs of the current release attempt (`None`: not started); `step` is
    /// the run of the current step.
    pub analysis: Gates<Option<GateResult>>,
    /// Where the traffic provider sends traffic now.
    pub traffic: TrafficObs,
}

/// One side effect. Each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply the spec's template to `color`'s Deployment as `revision`, at `replicas` pods.
    Deploy {
        /// The color.
        color: Color,
        /// Revision number recorded on it.
        revision: i64,
        /// Pods.
        replicas: i32,
    },
    /// Set `color`'s pod count, leaving its template as it is.
    Scale {
        /// The color.
        color: Color,
        /// Pods.
        replicas: i32,
    },
    /// Point the preview Service at `color`.
    Preview {
        /// The color.
        color: Color,
    },
    /// Send all live traffic to `color`.
    SwitchLive {
        /// The color.
        color: Color,
    },
    /// Send `weight` percent of live traffic to `canary` (the rest stays on the live color).
    SetWeight {
        /// The new color.
        canary: Color,
        /// Percent.
        weight: u8,
    },
    /// Put the header route of `step` in place (to `canary`), or remove it (`None`).
    SetHeaderRoute {
        /// The new color.
        canary: Color,
        /// The step whose matches apply.
        step: Option<u32>,
    },
    /// Mirror `percent` of live traffic to `canary` (0 removes the mirror).
    SetMirror {
        /// The new color.
        canary: Color,
        /// Percent.
        percent: u8,
    },
    /// Start the analysis run of `gate` for this release attempt (idempotent: one run per
    /// revision, attempt and gate).
    StartAnalysis {
        /// The gate.
        gate: Gate,
        /// The revision checked.
        revision: i64,
        /// The release attempt.
        attempt: u32,
    },
    /// Tell the run of `gate` to conclude (metrics without `count` stop measuring).
    StopAnalysis {
        /// The gate.
        gate: Gate,
        /// The revision checked.
        revision: i64,
        /// The release attempt.
        attempt: u32,
    },
}

/// The phase reported in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// All traffic on a fully available live color.
    Healthy,
    /// A release is under way.
    Progressing,
    /// A release waits for a promote or for `spec.paused` to clear.
    Paused,
    /// Aborted, stuck, or the live color is not fully available.
    Degraded,
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// CamelCase reason.
    pub reason: &'static str,
    /// A sentence.
    pub message: String,
    /// A warning rather than a normal event.
    pub warning: bool,
}

/// Why the phase is what it is, for conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Nothing to do.
    Steady,
    /// Rolling out the first revision.
    InitialRollout,
    /// Waiting for the new color to become available.
    WaitingForColor,
    /// Waiting out the auto-promotion delay.
    AutoPromotionDelay,
    /// Waiting for a promote request.
    WaitingForPromotion,
    /// `spec.paused` is set.
    PausedBySpec,
    /// The release was aborted.
    Aborted,
    /// The progress deadline passed.
    ProgressDeadlineExceeded,
    /// The live color lost pods.
    LiveNotReady,
    /// An analysis is running.
    Analysing,
    /// An analysis was inconclusive or its provider kept failing: waiting for a person.
    AnalysisHeld,
    /// Post-promotion analysis failed and traffic went back to the previous color.
    RolledBack,
    /// A traffic step is being applied.
    Stepping,
    /// A pause step.
    PausedByStep,
}

/// The result of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Side effects, in order.
    pub actions: Vec<Action>,
    /// Memory to write back once the actions are applied.
    pub memory: Memory,
    /// Phase to report.
    pub phase: Phase,
    /// Why.
    pub cause: Cause,
    /// A sentence for `status.message`.
    pub message: String,
    /// Percent of live traffic on the new color (100 when no release is under way).
    pub weight: i32,
    /// Events to publish.
    pub transitions: Vec<Transition>,
    /// Reconcile again after this long even if nothing changes (a timer is running).
    pub requeue_after: Option<Duration>,
}

struct Planner<'a> {
    input: &'a Input,
    memory: Memory,
    actions: Vec<Action>,
    transitions: Vec<Transition>,
    requeue_after: Option<Duration>,
}

impl Planner<'_> {
    fn push(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn event(&mut self, reason: &'static str, message: String, warning: bool) {
        self.transitions.push(Transition {
            reason,
            message,
            warning,
        });
    }

    fn requeue_in(&mut self, d: Duration) {
        let d = d.max(Duration::from_millis(100));
        self.requeue_after = Some(self.requeue_after.map_or(d, |r| r.min(d)));
    }

    fn ready(&self, color: Color, hash: &str) -> Result<(), NotReady> {
        readiness(
            self.input.colors.get(color),
            hash,
            self.input.desired.replicas,
        )
    }

    /// Scale `color` to `replicas` unless it already is.
    fn scale(&mut self, color: Color, replicas: i32) {
        let obs = self.input.colors.get(color);
        if obs.exists && obs.spec_replicas != replicas {
            self.push(Action::Scale { color, replicas });
        }
    }

    /// Route live traffic to `color` unless it already goes there. Only a fully ready
    /// color may receive traffic it does not have yet.
    fn switch_live(&mut self, color: Color, hash: &str) -> bool {
        if self.input.live == Some(color) && !self.input.traffic.splits() {
            return true;
        }
        if self.input.live == Some(color) {
            // Already live: only the split goes, in the same single write.
            self.push(Action::SwitchLive { color });
            return true;
        }
        if self.ready(color, hash).is_err() {
            return false;
        }
        self.push(Action::SwitchLive { color });
        true
    }

    fn preview(&mut self, color: Color, hash: &str) {
        if self.input.preview != Some(color) && self.ready(color, hash).is_ok() {
            self.push(Action::Preview { color });
        }
    }

    fn finish(self, phase: Phase, cause: Cause, message: String, weight: i32) -> Plan {
        Plan {
            actions: self.actions,
            memory: self.memory,
            phase,
            cause,
            message,
            weight,
            transitions: self.transitions,
            requeue_after: self.requeue_after,
        }
    }
}

/// Decide what to do next. Pure: the same input always gives the same plan.
pub fn decide(input: &Input) -> Plan {
    let mut p = Planner {
        input,
        memory: input.memory.clone(),
        actions: Vec::new(),
        transitions: Vec::new(),
        requeue_after: None,
    };
    // Status lost (or never written after the first switch): the live Service says which
    // color is live. Every other difference between memory and the cluster resolves by
    // itself, because each step re-derives what to do from what it observes.
    if p.memory.active.is_none() {
        p.memory.active = input.live;
    }
    match p.memory.active {
        None => initial_rollout(p),
        Some(active) => match p.memory.release.clone() {
            None => steady_or_start(p, active),
            Some(release) => release_step(p, active, release),
        },
    }
}

fn initial_rollout(mut p: Planner<'_>) -> Plan {
    let d = &p.input.desired;
    let color = Color::Blue;
    let revision = p
        .input
        .colors
        .blue
        .revision
        .unwrap_or(p.memory.latest_revision + 1);
    p.memory.latest_revision = p.memory.latest_revision.max(revision);
    p.push(Action::Deploy {
        color,
        revision,
        replicas: d.replicas,
    });
    match p.ready(color, &d.template_hash) {
        Ok(()) => {
            p.switch_live(color, &d.template_hash);
            p.preview(color, &d.template_hash);
            p.memory.active = Some(color);
            p.event(
                "Available",
                format!("{color} runs revision {revision} with all {} pods ready and takes live traffic", d.replicas),
                false,
            );
            p.finish(
                Phase::Healthy,
                Cause::Steady,
                format!("{color} is live"),
                100,
            )
        }
        Err(why) => {
            let msg = format!("rolling out revision {revision} to {color}: {why}");
            p.finish(Phase::Progressing, Cause::InitialRollout, msg, 0)
        }
    }
}

fn steady_or_start(mut p: Planner<'_>, active: Color) -> Plan {
    let d = p.input.desired.clone();
    let live_hash = p.input.colors.get(active).template_hash.clone();
    if live_hash.as_deref() == Some(d.template_hash.as_str()) {
        return steady(p, active);
    }
    let idle = active.other();
    let idle_obs = p.input.colors.get(idle).clone();
    // Never hand out a number a color already carries, even if memory lost count.
    let latest = Color::ALL
        .iter()
        .filter_map(|c| p.input.colors.get(*c).revision)
        .fold(p.memory.latest_revision, i64::max);
    let revision = if idle_obs.template_hash.as_deref() == Some(d.template_hash.as_str()) {
        idle_obs.revision.unwrap_or(latest + 1)
    } else {
        latest + 1
    };
    p.memory.latest_revision = p.memory.latest_revision.max(revision);

    // Undo to a warm standby: it already runs this revision at full size, so switching
    // back is instant and creates no pod.
    if p.ready(idle, &d.template_hash).is_ok() {
        p.switch_live(idle, &d.template_hash);
        p.preview(idle, &d.template_hash);
        p.memory.active = Some(idle);
        p.memory.standby = Some(StandbyState {
            color: active,
            since: p.input.now,
        });
        p.event(
            "RolledBack",
            format!("switched live traffic back to warm standby {idle} (revision {revision}); no new pods"),
            false,
        );
        return steady(p, idle);
    }

    p.memory.standby = None;
    let release = Release {
        color: idle,
        template_hash: d.template_hash.clone(),
        revision,
        started_at: p.input.now,
        available_at: None,
        aborted: None,
        attempt: 0,
        promoted_at: None,
        step_index: 0,
        step_started_at: None,
    };
    p.event(
        "ReleaseStarted",
        format!("releasing revision {revision} to {idle}; {active} stays live"),
        false,
    );
    p.memory.release = Some(release.clone());
    release_step(p, active, release)
}

fn steady(mut p: Planner<'_>, active: Color) -> Plan {
    let d = p.input.desired.clone();
    p.scale(active, d.replicas);
    let live_ok = p.switch_live(active, &d.template_hash);
    p.preview(active, &d.template_hash);
    let idle = active.other();
    match p.memory.standby {
        Some(sb) if sb.color == idle => match d.standby {
            StandbyPolicy::Warm => p.scale(idle, d.replicas),
            StandbyPolicy::Zero => p.scale(idle, 0),
            StandbyPolicy::ScaleDownAfter(delay) => {
                let due = sb.since.plus(delay);
                if p.input.now >= due {
                    if p.input.colors.get(idle).spec_replicas != 0 {
                        p.event(
                            "StandbyScaledDown",
                            format!("scaled standby {idle} to zero after {}s", delay.as_secs()),
                            false,
                        );
                    }
                    p.scale(idle, 0);
                } else {
                    p.requeue_in(due.since(p.input.now));
                }
            }
        },
        // An idle color that is not a standby holds a cancelled or aborted release.
        _ => p.scale(idle, 0),
    }
    match p.ready(active, &d.template_hash) {
        Ok(()) if live_ok => p.finish(
            Phase::Healthy,
            Cause::Steady,
            format!("{active} is live"),
            100,
        ),
        Ok(()) => p.finish(
            Phase::Progressing,
            Cause::Steady,
            format!("switching live traffic to {active}"),
            100,
        ),
        Err(why) => {
            let msg = format!("live color {active} is not fully available: {why}");
            p.finish(Phase::Degraded, Cause::LiveNotReady, msg, 100)
        }
    }
}

fn release_step(mut p: Planner<'_>, active: Color, mut release: Release) -> Plan {
    if release.promoted_at.is_some() {
        return post_promotion_step(p, release);
    }
    let d = p.input.desired.clone();
    let mut req = p.input.requests;
    // A full promote is a promote that also skips the remaining steps (below).
    req.promote |= req.promote_full;
    let color = release.color;

    // The spec changed under the release.
    if release.template_hash != d.template_hash {
        p.memory.release = None;
        p.event(
            "ReleaseCancelled",
            format!(
                "revision {} superseded by a spec change; {active} stays live",
                release.revision
            ),
            false,
        );
        return steady_or_start(p, active);
    }

    if req.retry && release.aborted.is_some() {
        release.aborted = None;
        release.started_at = p.input.now;
        release.available_at = None;
        release.attempt += 1;
        release.step_index = 0;
        release.step_started_at = None;
        p.event(
            "Retried",
            format!("retrying revision {} on {color}", release.revision),
            false,
        );
        // The previous attempt's analysis results no longer apply.
        p.memory.release = Some(release.clone());
        let mut input = p.input.clone();
        input.analysis = Gates::default();
        input.requests.retry = false;
        let plan = decide(&Input {
            memory: p.memory.clone(),
            ..input
        });
        return merge_plans(p, plan);
    }
    if req.abort && release.aborted.is_none() {
        release.aborted = Some("aborted on request".to_string());
    }
    if release.aborted.is_none()
        && release.available_at.is_none()
        && d.abort_on_deadline
        && p.input.now.since(release.started_at) > d.progress_deadline
    {
        release.aborted = Some(format!(
            "progress deadline of {}s exceeded",
            d.progress_deadline.as_secs()
        ));
    }
    if release.aborted.is_none() && d.analysis.background {
        match p.input.analysis.background.clone() {
            None => p.push(Action::StartAnalysis {
                gate: Gate::Background,
                revision: release.revision,
                attempt: release.attempt,
            }),
            Some(GateResult::Failed(why)) => {
                release.aborted = Some(format!("background analysis failed: {why}"));
            }
            Some(_) => {}
        }
    }
    if release.aborted.is_some() {
        return aborted(p, active, release);
    }
    if p.input.live == Some(color) && p.ready(color, &release.template_hash).is_ok() {
        // Live traffic is already on the new color: the controller switched and died
        // before recording it. Record the promotion; repeat no step.
        return promote(p, active, release);
    }

    p.push(Action::Deploy {
        color,
        revision: release.revision,
        replicas: d.replicas,
    });
    if let Err(why) = p.ready(color, &release.template_hash) {
        // Not promotable (again). The preview stays where it is; live never moved.
        let elapsed = p.input.now.since(release.started_at);
        p.memory.release = Some(release.clone());
        if release.available_at.is_none() && elapsed > d.progress_deadline {
            let msg = format!(
                "revision {} on {color} not available after {}s: {why}",
                release.revision,
                elapsed.as_secs()
            );
            return p.finish(Phase::Degraded, Cause::ProgressDeadlineExceeded, msg, 0);
        }
        if release.available_at.is_none() {
            p.requeue_in(d.progress_deadline.saturating_sub(elapsed) + Duration::from_secs(1));
        }
        let msg = format!("waiting for {color} (revision {}): {why}", release.revision);
        return p.finish(Phase::Progressing, Cause::WaitingForColor, msg, 0);
    }

    let available_at = *release.available_at.get_or_insert(p.input.now);
    if p.memory
        .release
        .as_ref()
        .and_then(|r| r.available_at)
        .is_none()
    {
        p.event(
            "NewColorAvailable",
            format!(
                "{color} runs revision {} with all {} pods ready; preview points at it",
                release.revision, d.replicas
            ),
            false,
        );
    }
    p.preview(color, &release.template_hash);
    p.memory.release = Some(release.clone());

    // Background analysis holds promotion while it is inconclusive or erroring.
    if d.analysis.background && !req.promote {
        match p.input.analysis.background.clone() {
            Some(GateResult::Inconclusive(why)) => {
                let msg = format!("background analysis inconclusive: {why}; promote or retry");
                return p.finish(Phase::Paused, Cause::AnalysisHeld, msg, 0);
            }
            Some(GateResult::Error(why)) => {
                let msg =
                    format!("background analysis cannot measure: {why}; traffic stays on {active}");
                return p.finish(Phase::Paused, Cause::AnalysisHeld, msg, 0);
            }
            _ => {}
        }
    }
    if d.analysis.pre {
        match p.input.analysis.pre.clone() {
            None => {
                p.push(Action::StartAnalysis {
                    gate: Gate::PrePromotion,
                    revision: release.revision,
                    attempt: release.attempt,
                });
                let msg = format!(
                    "running pre-promotion analysis against {color} (revision {})",
                    release.revision
                );
                return p.finish(Phase::Progressing, Cause::Analysing, msg, 0);
            }
            Some(GateResult::Running) => {
                let msg = format!(
                    "running pre-promotion analysis against {color} (revision {})",
                    release.revision
                );
                return p.finish(Phase::Progressing, Cause::Analysing, msg, 0);
            }
            Some(GateResult::Successful) => {}
            Some(GateResult::Failed(why)) => {
                release.aborted = Some(format!("pre-promotion analysis failed: {why}"));
                return aborted(p, active, release);
            }
            Some(GateResult::Inconclusive(why)) if !req.promote => {
                let msg = format!("pre-promotion analysis inconclusive: {why}; promote or retry");
                return p.finish(Phase::Paused, Cause::AnalysisHeld, msg, 0);
            }
            Some(GateResult::Error(why)) if !req.promote => {
                let msg = format!(
                    "pre-promotion analysis cannot measure: {why}; traffic stays on {active}"
                );
                return p.finish(Phase::Paused, Cause::AnalysisHeld, msg, 0);
            }
            Some(_) => {}
        }
    }

    if req.promote_full && (release.step_index as usize) < d.steps.len() {
        p.event(
            "StepsSkipped",
            format!(
                "full promote: steps {}..{} of revision {} skipped",
                release.step_index,
                d.steps.len(),
                release.revision
            ),
            false,
        );
        release.step_index = u32::try_from(d.steps.len()).unwrap_or(u32::MAX);
        release.step_started_at = None;
    }
    let mut promote_requested = req.promote;
    p = match run_steps(p, active, &mut release, &mut promote_requested) {
        Ok(p) => p,
        Err(plan) => return *plan,
    };
    let req = Requests {
        promote: promote_requested,
        ..req
    };

    if d.paused && !req.promote {
        let msg = format!(
            "paused (spec.paused) with revision {} ready on {color}",
            release.revision
        );
        return p.finish(Phase::Paused, Cause::PausedBySpec, msg, 0);
    }
    if !req.promote {
        match d.auto_promotion {
            None => {
                let msg = format!(
                    "revision {} is ready on {color}; waiting for `kubectl cutover promote`",
                    release.revision
                );
                return p.finish(Phase::Paused, Cause::WaitingForPromotion, msg, 0);
            }
            Some(delay) if p.input.now < available_at.plus(delay) => {
                let left = available_at.plus(delay).since(p.input.now);
                p.requeue_in(left);
                let msg = format!("promoting {color} in {}s", left.as_secs().max(1));
                return p.finish(Phase::Progressing, Cause::AutoPromotionDelay, msg, 0);
            }
            Some(_) => {}
        }
    }

    promote(p, active, release)
}

/// Send all traffic to the new color and record it: the previous color becomes standby.
fn promote(mut p: Planner<'_>, active: Color, mut release: Release) -> Plan {
    let d = p.input.desired.clone();
    let color = release.color;
    p.switch_live(color, &release.template_hash);
    if d.analysis.background {
        p.push(Action::StopAnalysis {
            gate: Gate::Background,
            revision: release.revision,
            attempt: release.attempt,
        });
    }
    p.memory.active = Some(color);
    p.memory.standby = Some(StandbyState {
        color: active,
        since: p.input.now,
    });
    p.event(
        "Promoted",
        format!(
            "{color} (revision {}) is live; {active} is standby",
            release.revision
        ),
        false,
    );
    if d.analysis.post {
        release.promoted_at = Some(p.input.now);
        p.memory.release = Some(release.clone());
        return post_promotion_step(p, release);
    }
    p.memory.release = None;
    steady(p, color)
}

/// An aborted release: all traffic on `active` (the color that was live before it), the
/// new color scaled to zero, until the spec changes or a retry.
fn aborted(mut p: Planner<'_>, active: Color, release: Release) -> Plan {
    let color = release.color;
    let reason = release.aborted.clone().unwrap_or_default();
    if p.memory
        .release
        .as_ref()
        .and_then(|r| r.aborted.as_ref())
        .is_none()
    {
        p.event(
            "Aborted",
            format!(
                "release of revision {} to {color}: {reason}; all traffic on {active}",
                release.revision
            ),
            true,
        );
    }
    let live_hash = p
        .input
        .colors
        .get(active)
        .template_hash
        .clone()
        .unwrap_or_default();
    p.switch_live(active, &live_hash);
    p.preview(active, &live_hash);
    p.scale(color, 0);
    let msg = format!(
        "release of revision {} aborted ({reason}); all traffic on {active}; change the spec or retry",
        release.revision
    );
    p.memory.active = Some(active);
    p.memory.release = Some(release);
    p.finish(Phase::Degraded, Cause::Aborted, msg, 0)
}

/// After promotion, while post-promotion analysis runs: the previous color stays at full
/// size; a failure switches traffic straight back to it.
fn post_promotion_step(mut p: Planner<'_>, mut release: Release) -> Plan {
    let d = p.input.desired.clone();
    let req = p.input.requests;
    let color = release.color;
    let previous = color.other();

    if release.template_hash != d.template_hash {
        // A newer revision supersedes this one; it is live, so it becomes the base.
        p.memory.release = None;
        return steady_or_start(p, color);
    }
    if req.abort && release.aborted.is_none() {
        release.aborted = Some("aborted on request".to_string());
    }
    if release.aborted.is_none() {
        match p.input.analysis.post.clone() {
            None | Some(GateResult::Running) => {
                if p.input.analysis.post.is_none() {
                    p.push(Action::StartAnalysis {
                        gate: Gate::PostPromotion,
                        revision: release.revision,
                        attempt: release.attempt,
                    });
                }
                p.scale(previous, d.replicas);
                p.memory.release = Some(release.clone());
                let msg = format!(
                    "{color} is live; running post-promotion analysis with {previous} warm"
                );
                return p.finish(Phase::Progressing, Cause::Analysing, msg, 100);
            }
            Some(GateResult::Successful) => {
                p.event(
                    "ReleaseVerified",
                    format!(
                        "post-promotion analysis of revision {} passed",
                        release.revision
                    ),
                    false,
                );
                p.memory.release = None;
                return steady(p, color);
            }
            Some(GateResult::Failed(why)) => {
                release.aborted = Some(format!("post-promotion analysis failed: {why}"));
            }
            Some(GateResult::Inconclusive(why) | GateResult::Error(why)) => {
                if req.promote {
                    p.memory.release = None;
                    return steady(p, color);
                }
                p.scale(previous, d.replicas);
                p.memory.release = Some(release.clone());
                let msg = format!(
                    "post-promotion analysis of {color} held: {why}; promote to accept or abort to roll back"
                );
                return p.finish(Phase::Paused, Cause::AnalysisHeld, msg, 100);
            }
        }
    }

    // Roll back: the previous color takes the traffic again, once it is fully ready.
    let reason = release.aborted.clone().unwrap_or_default();
    let previous_hash = p
        .input
        .colors
        .get(previous)
        .template_hash
        .clone()
        .unwrap_or_default();
    if p.ready(previous, &previous_hash).is_err() {
        p.scale(previous, d.replicas);
        p.memory.release = Some(release.clone());
        let msg = format!("rolling back to {previous} ({reason}): waiting for it to be ready");
        return p.finish(Phase::Degraded, Cause::RolledBack, msg, 100);
    }
    p.switch_live(previous, &previous_hash);
    p.event(
        "RolledBack",
        format!("{reason}; switched live traffic back to {previous}"),
        true,
    );
    release.promoted_at = None;
    p.memory.standby = None;
    p.memory.active = Some(previous);
    // The rolled-back release stays recorded as aborted, so it is not released again
    // until the spec changes or a retry.
    p.memory.release = Some(Release {
        aborted: Some(reason),
        ..release.clone()
    });
    let mut plan = aborted(p, previous, release);
    plan.cause = Cause::RolledBack;
    plan
}

/// The plan of a re-decision (after a retry), with this pass's events before its own.
fn merge_plans(p: Planner<'_>, mut plan: Plan) -> Plan {
    let mut transitions = p.transitions;
    transitions.append(&mut plan.transitions);
    plan.transitions = transitions;
    plan
}

/// The traffic the steps up to and including `upto` leave in place (weight, header-route
/// step, mirror percent); `None` for the state before any step.
fn traffic_after(steps: &[Step], upto: Option<usize>) -> (u8, Option<u32>, u8) {
    let mut state = (0, None, 0);
    let Some(upto) = upto else {
        return state;
    };
    for (k, s) in steps.iter().enumerate().take(upto + 1) {
        match *s {
            Step::SetWeight(w) => state.0 = w,
            Step::SetHeaderRoute(on) => {
                state.1 = on.then_some(u32::try_from(k).unwrap_or(u32::MAX))
            }
            Step::SetMirror(m) => state.2 = m,
            _ => {}
        }
    }
    state
}

fn is_traffic_step(s: Option<&Step>) -> bool {
    matches!(
        s,
        Some(Step::SetWeight(_) | Step::SetHeaderRoute(_) | Step::SetMirror(_))
    )
}

/// The traffic step a pass applied after completing step `i` (and any pause, analysis or
/// no-op steps after it), when the observed traffic is what that step sets and neither what step
/// `i` sets nor what was there before it: the controller applied it and died before
/// recording the progress. One pass applies at most one traffic step, so this is the next
/// traffic step after `i`.
fn applied_ahead(steps: &[Step], i: usize, traffic: TrafficObs) -> Option<usize> {
    let observed = (traffic.weight, traffic.header_route, traffic.mirror);
    if !is_traffic_step(steps.get(i))
        || traffic_after(steps, Some(i)) == observed
        || traffic_after(steps, i.checked_sub(1)) == observed
    {
        return None;
    }
    // The next step that changes traffic (one that sets what is already there completes
    // in the same pass without a write).
    let j = (i + 1..steps.len()).find(|&k| {
        is_traffic_step(steps.get(k))
            && traffic_after(steps, Some(k)) != traffic_after(steps, Some(k - 1))
    })?;
    (traffic_after(steps, Some(j)) == observed).then_some(j)
}

/// Run the release's steps from where it is: `Err(plan)` while a step is not done (the
/// release waits there), `Ok` once every step is done. A promote request ends one pause
/// (or accepts one held analysis), and is then used up.
fn run_steps<'a>(
    mut p: Planner<'a>,
    active: Color,
    release: &mut Release,
    promote: &mut bool,
) -> Result<Planner<'a>, Box<Plan>> {
    let d = p.input.desired.clone();
    let color = release.color;
    let traffic = p.input.traffic;
    while let Some(step) = d.steps.get(release.step_index as usize).copied() {
        let i = release.step_index;
        let started = *release.step_started_at.get_or_insert(p.input.now);
        p.memory.release = Some(release.clone());
        let weight = i32::from(traffic.weight);
        if let Some(j) = applied_ahead(&d.steps, i as usize, traffic) {
            // A pass completed this step and went on to apply step `j`, then the
            // controller died before recording it: going back to this step's state would
            // move traffic backwards. Resume at `j`.
            release.step_index = u32::try_from(j).unwrap_or(u32::MAX);
            release.step_started_at = Some(p.input.now);
            p.memory.release = Some(release.clone());
            continue;
        }
        // Every arm either returns (the release waits at this step) or completes it.
        match step {
            Step::SetWeight(w) => {
                if traffic.weight != w {
                    if p.ready(color, &release.template_hash).is_ok() {
                        p.push(Action::SetWeight {
                            canary: color,
                            weight: w,
                        });
                    }
                    let msg = format!("step {i}: setting weight {w}% on {color}");
                    return Err(Box::new(p.finish(
                        Phase::Progressing,
                        Cause::Stepping,
                        msg,
                        weight,
                    )));
                }
            }
            Step::SetHeaderRoute(on) => {
                let want = on.then_some(i);
                if traffic.header_route != want {
                    p.push(Action::SetHeaderRoute {
                        canary: color,
                        step: want,
                    });
                    let what = if on { "adding" } else { "removing" };
                    let msg = format!("step {i}: {what} the header route to {color}");
                    return Err(Box::new(p.finish(
                        Phase::Progressing,
                        Cause::Stepping,
                        msg,
                        weight,
                    )));
                }
            }
            Step::SetMirror(pct) => {
                if traffic.mirror != pct {
                    p.push(Action::SetMirror {
                        canary: color,
                        percent: pct,
                    });
                    let msg = format!("step {i}: mirroring {pct}% to {color}");
                    return Err(Box::new(p.finish(
                        Phase::Progressing,
                        Cause::Stepping,
                        msg,
                        weight,
                    )));
                }
            }
            Step::Pause(Some(duration)) => {
                let due = started.plus(duration);
                if p.input.now < due && !*promote {
                    let left = due.since(p.input.now);
                    p.requeue_in(left);
                    let msg = format!("step {i}: pause, {}s left", left.as_secs().max(1));
                    return Err(Box::new(p.finish(
                        Phase::Paused,
                        Cause::PausedByStep,
                        msg,
                        weight,
                    )));
                }
                *promote = false;
            }
            Step::Pause(None) => {
                if !*promote {
                    let msg = format!("step {i}: paused until `kubectl cutover promote`");
                    return Err(Box::new(p.finish(
                        Phase::Paused,
                        Cause::PausedByStep,
                        msg,
                        weight,
                    )));
                }
                *promote = false;
            }
            Step::Analysis => match p.input.analysis.step.clone() {
                None | Some(GateResult::Running) => {
                    if p.input.analysis.step.is_none() {
                        p.push(Action::StartAnalysis {
                            gate: Gate::Step(i),
                            revision: release.revision,
                            attempt: release.attempt,
                        });
                    }
                    let msg = format!("step {i}: running analysis against {color}");
                    return Err(Box::new(p.finish(
                        Phase::Progressing,
                        Cause::Analysing,
                        msg,
                        weight,
                    )));
                }
                Some(GateResult::Successful) => {}
                Some(GateResult::Failed(why)) => {
                    release.aborted = Some(format!("step {i} analysis failed: {why}"));
                    return Err(Box::new(aborted(p, active, release.clone())));
                }
                Some(GateResult::Inconclusive(why) | GateResult::Error(why)) => {
                    if !*promote {
                        let msg =
                            format!("step {i} analysis held: {why}; promote to go on, or abort");
                        return Err(Box::new(p.finish(
                            Phase::Paused,
                            Cause::AnalysisHeld,
                            msg,
                            weight,
                        )));
                    }
                    *promote = false;
                }
            },
        };
        release.step_index += 1;
        release.step_started_at = Some(p.input.now);
        p.memory.release = Some(release.clone());
        if step == Step::Analysis && (release.step_index as usize) < d.steps.len() {
            // The next step's analysis (if any) is a run of its own, observed next pass.
            let msg = format!("step {i} analysis passed");
            p.requeue_in(Duration::from_millis(100));
            return Err(Box::new(p.finish(
                Phase::Progressing,
                Cause::Stepping,
                msg,
                weight,
            )));
        }
    }
    Ok(p)
}
