//! Drills: on a cron schedule or on request, move the traffic to a healthy standby under
//! live traffic, check that it answers for `verifySeconds`, move it back, and write a
//! report (status `lastDrill`, an Event, and a ConfigMap `<policy>-drill-<time>`).
//!
//! A drill moves the traffic only: the databases keep their roles. Moving the primary role
//! and back would need the old primary rebuilt as a standby of the new one in between,
//! which is the database operator's job, not something SQL can do; so a drill proves the
//! traffic path and the standby's readiness, and measures the data a failover at that
//! instant would lose (RPO: the standby's replication lag when the drill switched).
//!
//! Measures: **RTO** is the time from the drill's start to the first good answer through
//! `spec.entry.url` after the route points at the standby (without a URL: to the route
//! pointing there). A prober sends a request through the entry every 50 ms for the whole
//! drill; its failures are the report's failed requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cutover_api::failover::{
    DrillReport, DrillStatus, DrillStep, FailoverPolicy, FailoverPolicyStatus,
};
use cutover_api::k8s_openapi::api::core::v1::ConfigMap;
use cutover_api::kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use cutover_api::kube::{Api, Resource as _, ResourceExt as _};
use cutover_core::failover::{Event, MemberObs, Memory, is_up};
use cutover_core::release::Timestamp;
use serde_json::json;

use super::{Context, Error, Local};
use crate::FIELD_MANAGER;
use crate::clock::{now, time, timestamp};

/// Parse a drill schedule (standard 5-field cron, UTC).
pub fn schedule(s: &str) -> Result<croner::Cron, String> {
    s.parse::<croner::Cron>()
        .map_err(|e| format!("spec.drills.schedule: {s:?} is not a cron schedule: {e}"))
}

/// Whether a scheduled drill is due: an occurrence of `s` after `since` and not after `now`.
pub fn due(s: &croner::Cron, since: Timestamp, now: Timestamp) -> bool {
    let Ok(since) = cutover_api::k8s_openapi::jiff::Timestamp::from_millisecond(since.0) else {
        return false;
    };
    let since = since.to_zoned(cutover_api::k8s_openapi::jiff::tz::TimeZone::UTC);
    s.find_next_occurrence(&since, false)
        .is_ok_and(|next| next.timestamp().as_millisecond() <= now.0)
}

/// Counts of the requests sent through the entry during a drill.
#[derive(Debug, Default)]
pub struct ProbeState {
    requests: AtomicI64,
    failed: AtomicI64,
    /// When the route pointed at the standby (ms; 0: not yet).
    mark: AtomicI64,
    /// The first good answer at or after the mark (ms; 0: none yet).
    first_ok: AtomicI64,
}

/// The prober of a drill: stops when dropped.
#[derive(Debug)]
pub struct Prober {
    state: Arc<ProbeState>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Prober {
    fn start(http: reqwest::Client, url: String) -> Prober {
        let state = Arc::new(ProbeState::default());
        let s = state.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let ok = super::members::probe(&http, &url, Duration::from_secs(2))
                    .await
                    .is_ok();
                let at = now().0;
                s.requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mark = s.mark.load(Ordering::Acquire);
                if mark > 0 && at >= mark {
                    let _ = s
                        .first_ok
                        .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire);
                }
            }
        });
        Prober { state, handle }
    }
}

/// What [`step`] looks at.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The policy.
    pub policy: &'a FailoverPolicy,
    /// Member names.
    pub names: &'a [String],
    /// Members as observed.
    pub members: &'a [MemberObs],
    /// The core's memory before this pass.
    pub memory: &'a Memory,
    /// Where the entry sends.
    pub routed_to: Option<usize>,
    /// Now.
    pub now: Timestamp,
    /// A person asked for a drill.
    pub requested: bool,
    /// Per member, the URL a prober asks to see that member answer once traffic is on it
    /// (the front mode: `spec.entry.url` for every member; the regional mode: that URL at
    /// the member's own entry address). `None`: no prober; the RTO ends at the switch.
    pub probe_urls: &'a [Option<String>],
}

/// What a drill wants this pass.
#[derive(Debug, Default)]
pub struct Wants {
    /// A traffic-only move to this member.
    pub move_to: Option<usize>,
    /// Events.
    pub events: Vec<Event>,
}

const SWITCHING: &str = "Switching";
const VERIFYING: &str = "Verifying";
const RETURNING: &str = "Returning";
const DONE: &str = "Done";

fn push(steps: &mut Vec<DrillStep>, at: Timestamp, step: String) {
    steps.push(DrillStep {
        time: time(at),
        step,
    });
}

fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Advance the drill (in `status.drill`), starting one when due.
pub(crate) fn step(i: &Inputs<'_>, status: &mut FailoverPolicyStatus, local: &mut Local) -> Wants {
    let mut wants = Wants::default();
    let drills = i.policy.spec.drills.clone().unwrap_or_default();
    let idx = |n: &str| i.names.iter().position(|m| m == n);
    let Some(mut d) = status.drill.take() else {
        let scheduled = drills
            .schedule
            .as_deref()
            .and_then(|s| schedule(s).ok())
            .is_some_and(|s| {
                let since = status
                    .last_drill
                    .as_ref()
                    .map(|r| timestamp(&r.started))
                    .or_else(|| i.policy.metadata.creation_timestamp.as_ref().map(timestamp))
                    .unwrap_or(i.now);
                due(&s, since, i.now)
            });
        if !i.requested && !scheduled {
            return wants;
        }
        let active = i.memory.active;
        let mut report = DrillReport {
            started: time(i.now),
            finished: None,
            trigger: if i.requested { "request" } else { "schedule" }.into(),
            from: i.names.get(active).cloned().unwrap_or_default(),
            to: String::new(),
            steps: Vec::new(),
            rto_seconds: None,
            rpo_seconds: None,
            rpo_bytes: None,
            rto_target_seconds: drills.rto_target_seconds,
            rpo_target_seconds: drills.rpo_target_seconds,
            requests: 0,
            requests_failed: 0,
            verdict: None,
            message: None,
            config_map: None,
        };
        let active_down = i.memory.counters.get(active).is_some_and(|c| c.down);
        let target =
            (0..i.members.len()).find(|&m| m != active && is_up(i.members, &i.memory.counters, m));
        let refusal = if i.memory.moving.is_some() {
            Some("a move is under way".to_string())
        } else if active_down || !i.members.get(active).is_some_and(|m| m.healthy) {
            Some(format!("the active member {} is not healthy", report.from))
        } else if target.is_none() {
            Some("no healthy standby to drill on".to_string())
        } else {
            None
        };
        push(
            &mut report.steps,
            i.now,
            format!("drill started ({})", report.trigger),
        );
        if let Some(why) = refusal {
            report.verdict = Some("Failed".into());
            report.message = Some(format!("drill not run: {why}"));
            report.finished = Some(time(i.now));
            status.drill = Some(DrillStatus {
                stage: DONE.into(),
                report,
            });
            return wants;
        }
        let to = target.unwrap_or_default();
        report.to = i.names[to].clone();
        if let Some(data) = &i.members[to].data {
            report.rpo_seconds = data.lag_seconds;
            report.rpo_bytes = data.lag_bytes.and_then(|b| i64::try_from(b).ok());
        } else {
            report.rpo_seconds = Some(0.0);
        }
        push(
            &mut report.steps,
            i.now,
            format!(
                "moving traffic from {} to {} (traffic only; the databases keep their roles)",
                report.from, report.to
            ),
        );
        local.prober = i
            .probe_urls
            .get(to)
            .cloned()
            .flatten()
            .and_then(|url| super::http_client().ok().map(|h| Prober::start(h, url)));
        wants.events.push(Event {
            reason: "DrillStarted",
            message: format!(
                "drill: moving traffic from {} to {}",
                report.from, report.to
            ),
            warning: false,
        });
        wants.move_to = Some(to);
        status.drill = Some(DrillStatus {
            stage: SWITCHING.into(),
            report,
        });
        return wants;
    };

    let from = idx(&d.report.from);
    let to = idx(&d.report.to);
    if local.prober.is_none()
        && d.stage != DONE
        && let Some(url) = to.and_then(|t| i.probe_urls.get(t).cloned().flatten())
    {
        // Restarted mid-drill: count from here on.
        local.prober = super::http_client().ok().map(|h| Prober::start(h, url));
    }
    if let Some(p) = &local.prober {
        d.report.requests = p.state.requests.load(Ordering::Relaxed);
        d.report.requests_failed = p.state.failed.load(Ordering::Relaxed);
    }
    let started = timestamp(&d.report.started);
    let settled = i.memory.moving.is_none();
    let timeout = Duration::from_secs(u64::try_from(drills.timeout_seconds).unwrap_or(300));
    if d.stage != DONE && d.stage != RETURNING && i.now.since(started) > timeout {
        d.report.verdict = Some("Failed".into());
        d.report.message = Some(format!(
            "the drill did not finish within {}s (stage {})",
            timeout.as_secs(),
            d.stage
        ));
        push(
            &mut d.report.steps,
            i.now,
            "timed out; moving traffic back".into(),
        );
        d.stage = RETURNING.into();
    }
    match d.stage.as_str() {
        SWITCHING if settled && i.routed_to.is_some() && i.routed_to == to => {
            let answered = match &local.prober {
                None => Some(i.now),
                Some(p) => {
                    let _ = p.state.mark.compare_exchange(
                        0,
                        i.now.0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    Some(p.state.first_ok.load(Ordering::Acquire))
                        .filter(|t| *t > 0)
                        .map(Timestamp)
                }
            };
            if let Some(at) = answered {
                d.report.rto_seconds = Some(seconds(at.since(started)));
                push(
                    &mut d.report.steps,
                    at,
                    format!(
                        "{} answered through the entry (RTO {:.3}s)",
                        d.report.to,
                        at.since(started).as_secs_f64()
                    ),
                );
                d.stage = VERIFYING.into();
            }
        }
        VERIFYING => {
            let since = d
                .report
                .steps
                .last()
                .map(|s| timestamp(&s.time))
                .unwrap_or(i.now);
            let verify = Duration::from_secs(u64::try_from(drills.verify_seconds).unwrap_or(0));
            if i.now.since(since) >= verify {
                push(
                    &mut d.report.steps,
                    i.now,
                    format!(
                        "{} served for {}s; moving traffic back to {}",
                        d.report.to,
                        verify.as_secs(),
                        d.report.from
                    ),
                );
                d.stage = RETURNING.into();
            }
        }
        _ => {}
    }
    if d.stage == RETURNING {
        if settled && i.routed_to.is_some() && i.routed_to == from {
            push(
                &mut d.report.steps,
                i.now,
                format!("traffic back on {}", d.report.from),
            );
            judge(&mut d.report);
            d.report.finished = Some(time(i.now));
            d.stage = DONE.into();
            local.prober = None;
        } else if settled && i.memory.active != from.unwrap_or(usize::MAX) {
            wants.move_to = from;
        }
    }
    status.drill = Some(d);
    wants
}

/// Set the verdict (unless a failure already set it).
fn judge(r: &mut DrillReport) {
    if r.verdict.is_some() {
        return;
    }
    let mut failures = Vec::new();
    match (r.rto_seconds, r.rto_target_seconds) {
        (None, _) => failures.push("the standby never answered through the entry".to_string()),
        (Some(rto), Some(target)) if rto > target => {
            failures.push(format!("RTO {rto:.3}s exceeds the target {target}s"))
        }
        _ => {}
    }
    match (r.rpo_seconds, r.rpo_target_seconds) {
        (None, Some(_)) => failures.push("RPO unknown (the standby's lag was not measured)".into()),
        (Some(rpo), Some(target)) if rpo > target => {
            failures.push(format!("RPO {rpo:.3}s exceeds the target {target}s"))
        }
        _ => {}
    }
    if failures.is_empty() {
        r.verdict = Some("Passed".into());
        r.message = Some(format!(
            "RTO {} and RPO {} within targets; {} of {} requests through the entry failed",
            r.rto_seconds
                .map(|s| format!("{s:.3}s"))
                .unwrap_or_default(),
            r.rpo_seconds
                .map(|s| format!("{s:.3}s"))
                .unwrap_or_else(|| "n/a".into()),
            r.requests_failed,
            r.requests
        ));
    } else {
        r.verdict = Some("Failed".into());
        r.message = Some(failures.join("; "));
    }
}

/// A finished drill's report, taken out of `status.drill` into `status.lastDrill`.
pub fn finished(status: &mut FailoverPolicyStatus) -> Option<DrillReport> {
    if status.drill.as_ref().is_some_and(|d| d.stage == DONE) {
        let d = status.drill.take()?;
        status.last_drill = Some(d.report.clone());
        return Some(d.report);
    }
    None
}

/// One line for the Event.
pub fn summary(r: &DrillReport) -> String {
    let fmt = |v: Option<f64>| {
        v.map(|s| format!("{s:.3}s"))
            .unwrap_or_else(|| "n/a".into())
    };
    let target = |v: Option<f64>| v.map(|s| format!(" (target {s}s)")).unwrap_or_default();
    format!(
        "drill {}: {} → {} → {}; RTO {}{}, RPO {}{}; {} of {} requests failed; {}",
        r.verdict.as_deref().unwrap_or("?"),
        r.from,
        r.to,
        r.from,
        fmt(r.rto_seconds),
        target(r.rto_target_seconds),
        fmt(r.rpo_seconds),
        target(r.rpo_target_seconds),
        r.requests_failed,
        r.requests,
        r.message.as_deref().unwrap_or_default()
    )
}

/// Write the report's ConfigMap and name it in the report and `status.lastDrill`.
pub async fn write_report(
    ctx: &Context,
    p: &FailoverPolicy,
    report: &DrillReport,
    status: &mut FailoverPolicyStatus,
) -> Result<(), Error> {
    let ns = p.namespace().unwrap_or_default();
    let stamp = report.started.0.strftime("%Y%m%d-%H%M%S").to_string();
    let name = format!("{}-drill-{stamp}", p.name_any());
    let mut report = report.clone();
    report.config_map = Some(name.clone());
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| format!("{}  {}", s.time.0, s.step))
        .collect();
    let text = format!("{}\n\n{}\n", summary(&report), steps.join("\n"));
    let owner = p
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let json = serde_json::to_string_pretty(&report).map_err(|source| Error::Serialize {
        what: "the drill report",
        source,
    })?;
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "ownerReferences": [owner], "labels": {
            cutover_api::MANAGED_BY_LABEL: cutover_api::MANAGED_BY,
            "cutover.dev/failoverpolicy": p.name_any(),
            "cutover.dev/drill-verdict": report.verdict.clone().unwrap_or_default(),
        }},
        "data": {
            "report.json": json,
            "report.txt": text,
        },
    });
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(|source| Error::Report { name, source })?;
    status.last_drill = Some(report);
    prune_reports(&api, p).await
}

/// How many drill report ConfigMaps of one policy are kept.
pub const REPORTS_KEPT: usize = 10;

/// Delete this policy's report ConfigMaps beyond the newest [`REPORTS_KEPT`]; only those
/// it owns.
async fn prune_reports(api: &Api<ConfigMap>, p: &FailoverPolicy) -> Result<(), Error> {
    let selector = format!(
        "cutover.dev/failoverpolicy={},cutover.dev/drill-verdict",
        p.name_any()
    );
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListReports {
            policy: p.name_any(),
            source,
        })?;
    let uid = p.metadata.uid.as_deref().unwrap_or_default();
    let owned: Vec<String> = list
        .items
        .iter()
        .filter(|cm| {
            cm.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .map(|cm| cm.name_any())
        .collect();
    for name in reports_to_prune(owned, REPORTS_KEPT) {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(cutover_api::kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::PruneReport { name, source }),
        }
    }
    Ok(())
}

/// The report names beyond the newest `keep` (names end in a sortable UTC time stamp).
fn reports_to_prune(mut names: Vec<String>, keep: usize) -> Vec<String> {
    names.sort();
    let excess = names.len().saturating_sub(keep);
    names.truncate(excess);
    names
}

/// After this pass's moves: the route points at the drill's standby now.
pub(crate) fn routed(status: &FailoverPolicyStatus, local: &Local, routed_to: Option<&str>) {
    if let (Some(d), Some(p)) = (&status.drill, &local.prober)
        && d.stage == SWITCHING
        && routed_to == Some(d.report.to.as_str())
    {
        let _ = p
            .state
            .mark
            .compare_exchange(0, now().0, Ordering::AcqRel, Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_oldest_reports_beyond_the_limit_are_pruned() {
        let names: Vec<String> = [
            "dr-drill-20261126-120000",
            "dr-drill-20261124-090000",
            "dr-drill-20261125-235959",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            reports_to_prune(names.clone(), 1),
            ["dr-drill-20261124-090000", "dr-drill-20261125-235959"]
        );
        assert!(reports_to_prune(names, 3).is_empty());
    }

    #[test]
    fn a_schedule_is_due_once_its_next_occurrence_has_passed() {
        let s = schedule("0 3 * * *").expect("cron");
        let day = 86_400_000;
        let t0 = Timestamp(20_000 * day); // midnight UTC
        assert!(!due(&s, t0, Timestamp(t0.0 + 2 * 3_600_000)));
        assert!(due(&s, t0, Timestamp(t0.0 + 3 * 3_600_000)));
        assert!(schedule("not a cron").is_err());
    }

    fn report() -> DrillReport {
        DrillReport {
            started: time(Timestamp(0)),
            finished: None,
            trigger: "request".into(),
            from: "east".into(),
            to: "west".into(),
            steps: Vec::new(),
            rto_seconds: Some(1.5),
            rpo_seconds: Some(0.0),
            rpo_bytes: Some(0),
            rto_target_seconds: Some(2.0),
            rpo_target_seconds: Some(0.0),
            requests: 100,
            requests_failed: 0,
            verdict: None,
            message: None,
            config_map: None,
        }
    }

    #[test]
    fn the_verdict_compares_rto_and_rpo_with_their_targets() {
        let mut r = report();
        judge(&mut r);
        assert_eq!(r.verdict.as_deref(), Some("Passed"));
        let mut slow = DrillReport {
            rto_target_seconds: Some(1.0),
            ..report()
        };
        judge(&mut slow);
        assert_eq!(slow.verdict.as_deref(), Some("Failed"));
        assert!(
            slow.message
                .as_deref()
                .is_some_and(|m| m.contains("RTO 1.500s exceeds the target 1s")),
            "{:?}",
            slow.message
        );
        let mut lossy = DrillReport {
            rpo_seconds: Some(3.0),
            ..report()
        };
        judge(&mut lossy);
        assert!(lossy.message.as_deref().is_some_and(|m| m.contains("RPO")));
    }
}
