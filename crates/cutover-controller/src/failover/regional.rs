//! The regional mode of a FailoverPolicy (`spec.coordination`): the same policy is applied
//! in every region's cluster; each region's controller (started with `--region`) observes
//! and acts on its own member only, never on another cluster's API. Which region is
//! active is decided by the etcd lease of [`crate::coordination`]: its holder promotes its
//! own database, publishes its own entry addresses as the DNS records every region's DNS
//! server answers with (an etcd transaction carrying its fencing token), and writes a
//! `DNSEndpoint` in its own cluster. The pure decision is [`cutover_core::regional`].
//!
//! What each region writes in etcd, next to the lease key `<key>`:
//! - `<key>/active`: the member the holder made active (fenced, with the records): a
//!   vacant lease goes first to that member's region when it comes back;
//! - `<key>/primary`: the holder's database position, `{"member", "lsn"}` (fenced, every
//!   pass): a standby measures its replication lag against it for the data gate;
//! - `<key>/members/<member>`: each region's own health report (unfenced: every region
//!   writes only its own), shown in every region's status.
//!
//! **Self-fencing.** The moment the holder's standing runs out (its renewals were not
//! acknowledged, a fence margin before the lease can expire), a task of its own fences the
//! own database, whatever the policy's pass is doing; the entry's records cannot be
//! rewritten by a stale holder (etcd refuses its token), and its region's DNS server,
//! cut off from the etcd quorum, stops answering (CoreDNS' etcd reads are linearizable).

mod drill;

use std::time::Duration;

use cutover_api::failover::{
    CoordinationStatus, FailoverPolicy, FailoverPolicyStatus, MemberStatus, requests,
};
use cutover_api::kube::ResourceExt as _;
use cutover_core::failover::{Counters, DataObs};
use cutover_core::regional::{self, Action, Lease, Scale, Size, State};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{
    Context, Error, Local, Pass, Refusal, View, observe_member, refuse, user_of, write_status,
};
use crate::clock::{now, time};
use crate::conditions::{Wanted, merge};
use crate::coordination::{self, Coordinator, Tenure};
use crate::traffic::dns;

/// What a policy's task keeps for the regional mode (lost on restart, which is safe: a
/// restarted controller holds no lease, so it fences a writable database of its own and
/// campaigns afresh).
#[derive(Default)]
pub(crate) struct Regional {
    coordinator: Option<Coordinator>,
    tenure: Option<Tenure>,
    /// Fences the own database the moment the tenure's standing runs out.
    fencer: Option<JoinHandle<()>>,
    /// When this run first saw the lease vacant (since the last time it was held).
    vacant_since: Option<Instant>,
    /// The token the entry was last published with.
    published: Option<i64>,
    /// This region lost the lease (and fenced) and nobody has held it since.
    fenced: bool,
    /// The own member's health counters.
    counters: Counters,
    /// The policy's `DNSEndpoint` in this cluster was deleted (or found absent) since
    /// this region last stood by.
    endpoint_cleared: bool,
    /// The last active member's report as last read (member, its time), and since when
    /// this region has read it unchanged.
    preferred_report: Option<((String, i64), Instant)>,
    /// This tenure claimed the entry from another region's member.
    took_over: bool,
    /// The member the records point at, as this tenure last wrote them (a drill points
    /// them at a standby for a while).
    routed: Option<usize>,
    /// The drill record as this region last wrote it.
    drill_written: Option<drill::Record>,
    /// The member the last holder made active, as etcd last answered.
    known_active: Option<usize>,
    /// A failover request accepted this pass: (the member to hand the lease to, the
    /// request's token).
    hand_over: Option<(usize, String)>,
}

/// A region's report of its own member, at `<key>/members/<member>`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Report {
    healthy: bool,
    down: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Milliseconds since the epoch, by the reporting region's clock.
    at: i64,
    /// A standby database's replication lag behind the holder's last reported position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lag_bytes: Option<u64>,
}

impl Report {
    /// Recent enough to go by: written within five health-check intervals and 5 s (by the
    /// reporting region's clock against this one's).
    fn fresh(&self, interval: Duration) -> bool {
        let stale_after = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX) * 5 + 5_000;
        timestamp_now() - self.at <= stale_after
    }
}

/// The holder's database position, at `<key>/primary`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct PrimaryReport {
    member: String,
    lsn: i64,
}

/// What etcd held next to the lease key, as read this pass.
#[derive(Default)]
struct Seen {
    /// The member the last holder made active.
    last_active: Option<usize>,
    /// The holder's database position.
    primary: Option<PrimaryReport>,
    /// Every region's report of its member.
    reports: Vec<(String, Report)>,
    /// The holder's fencing token.
    holder_token: Option<i64>,
    /// etcd answered (without an answer the rest is empty).
    answered: bool,
    /// The last drill request forwarded by any region (its token).
    drill_request: Option<String>,
    /// The holder's drill record.
    drill: Option<drill::Record>,
    /// The last failover request forwarded by any region (the annotation's value).
    failover_request: Option<String>,
    /// The last holder's answer to a failover request.
    handover: Option<Handover>,
}

/// A holder's answer to a failover request, at `<key>/handover` (fenced): the lease
/// handed to `to`, or the request refused.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Handover {
    /// The request's token.
    request: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    /// Milliseconds since the epoch, by the holder's clock.
    at: i64,
}

/// The key, after the lease key, of the last failover request any region forwarded.
const FAILOVER_REQUEST: &str = "/failover-request";
/// The key, after the lease key, of the last holder's answer to one.
const HANDOVER: &str = "/handover";

/// A failover request's value: its token, `to=<member>` and `force`.
struct FailoverRequest<'a> {
    token: &'a str,
    to: Option<&'a str>,
    force: bool,
}

impl<'a> FailoverRequest<'a> {
    fn parse(v: &'a str) -> Self {
        let mut words = v.split_whitespace();
        let token = words.next().unwrap_or_default();
        let (mut to, mut force) = (None, false);
        for w in words {
            if let Some(m) = w.strip_prefix("to=") {
                to = Some(m);
            } else if w == "force" {
                force = true;
            }
        }
        FailoverRequest { token, to, force }
    }
}

/// The lease key: `spec.coordination.key`, or one per policy.
fn lease_key(p: &FailoverPolicy) -> String {
    p.spec
        .coordination
        .as_ref()
        .and_then(|c| c.key.clone())
        .unwrap_or_else(|| {
            format!(
                "/cutover/failover/{}/{}",
                p.namespace().unwrap_or_default(),
                p.name_any()
            )
        })
}

/// The own member's database as the core sees it: a standby's lag is measured against the
/// position the holder last reported.
fn own_data(view: &View, primary: Option<&PrimaryReport>, own: &str) -> Option<DataObs> {
    let db = view.db.as_ref()?;
    let (lag_seconds, lag_bytes) = if !db.in_recovery {
        (Some(0.0), Some(0))
    } else {
        match (primary.filter(|r| r.member != own), db.replay_lsn) {
            (Some(r), Some(replay)) => {
                let bytes = u64::try_from(r.lsn.saturating_sub(replay)).unwrap_or(0);
                let seconds = if bytes == 0 {
                    Some(0.0)
                } else {
                    db.replay_age_seconds
                };
                (seconds, Some(bytes))
            }
            _ => (None, None),
        }
    };
    Some(DataObs {
        writable: db.writable(),
        fenced: db.reachable && !db.in_recovery && db.read_only,
        lag_seconds,
        lag_bytes,
        reachable: db.reachable,
        standby: db.in_recovery,
        gate_only: false,
    })
}

/// One regional pass; returns when the next one is due.
pub(super) async fn pass(
    ctx: &Context,
    p: &FailoverPolicy,
    local: &mut Local,
) -> Result<Duration, Error> {
    let pass = match Pass::of(p) {
        Ok(pass) => pass,
        Err((refusal, next)) => {
            refuse(ctx, p, refusal, local).await?;
            return Ok(next);
        }
    };
    let interval = pass.settings.interval;
    let invalid = |message: String| Refusal {
        reason: "InvalidSpec",
        message,
    };
    let Some(region) = ctx.region.clone() else {
        let m = "spec.coordination: this controller was started without --region, so it cannot tell which member is its own; nothing was touched".to_string();
        refuse(ctx, p, invalid(m), local).await?;
        return Ok(interval);
    };
    let Some(own) = p
        .spec
        .members
        .iter()
        .position(|m| m.region.as_deref() == Some(region.as_str()))
    else {
        let m = format!(
            "spec.members[].region: no member runs in this controller's region {region}; nothing was touched"
        );
        refuse(ctx, p, invalid(m), local).await?;
        return Ok(interval);
    };
    let (Some(coord), Some(dns_entry)) = (&p.spec.coordination, &p.spec.entry.dns) else {
        let m = "spec.coordination needs spec.entry.dns".to_string();
        refuse(ctx, p, invalid(m), local).await?;
        return Ok(interval);
    };
    let pilot = match p.spec.pilot_light.as_ref().map(pilot_sizes).transpose() {
        Ok(sizes) => sizes,
        Err(m) => {
            refuse(ctx, p, invalid(m), local).await?;
            return Ok(interval);
        }
    };
    let key = lease_key(p);
    let ttl = Duration::from_secs(u64::try_from(coord.lease_seconds).unwrap_or(3));
    let endpoints = if ctx.etcd_endpoints.is_empty() {
        coord.etcd.endpoints.clone()
    } else {
        ctx.etcd_endpoints.clone()
    };
    let wanted = coordination::Settings::new(endpoints, &key, &region, ttl);
    let r = local.regional.get_or_insert_with(Regional::default);
    if r.coordinator
        .as_ref()
        .is_some_and(|c| c.settings() != &wanted)
    {
        // New endpoints, key or TTL: a tenure under the old ones is given up (its fencer
        // fences the database once its standing runs out).
        *r = Regional::default();
    }
    if r.coordinator.is_none() {
        match Coordinator::connect(wanted).await {
            Ok(c) => r.coordinator = Some(c),
            Err(coordination::Error::InvalidConfig(m)) => {
                let m = format!("spec.coordination: {m}");
                refuse(ctx, p, invalid(m), local).await?;
                return Ok(interval);
            }
            Err(e) => tracing::debug!(error = %e, "connecting to etcd"),
        }
    }

    let m = &p.spec.members[own];
    let member = m.name.clone();
    let user = user_of(Some(&pass.ns), &pass.name);
    let view = observe_member(ctx, &pass, m, &user).await;
    let places: Vec<String> = view.place.iter().cloned().collect();
    ctx.places.retain(&user, &places);

    let r = local.regional.as_mut().expect("set above");
    let mut events = Vec::new();
    let (mut lease, seen) = read_lease(r, &key, &region, p).await;
    let preferred_gone = preferred_gone(r, p, own, &seen, ttl);
    // Without an answer from etcd this pass, the last active member is as last read (not
    // "none": the holder would claim again what is already its own).
    if seen.answered {
        r.known_active = seen.last_active;
    }
    let last_active = r.known_active;
    let data = own_data(&view, seen.primary.as_ref(), &member);
    let ready_pods = view.endpoints.as_ref().map_or(0, |e| e.addresses.len());
    // With a pilot light: enough of the full size (without its size known, not ready).
    let needed = match (&pilot, view.size) {
        (Some((_, to_serve)), Some(size)) => usize::try_from(to_serve.of(size.full)).unwrap_or(0),
        (Some(_), None) => usize::MAX,
        (None, _) => 1,
    };
    let ready = ready_pods >= needed.max(1);
    // A failover request reaches the holder through etcd: carried out (the lease handed
    // over) or refused, once.
    r.hand_over = None;
    if lease == Lease::Held && seen.answered {
        let pending = Pending {
            pass: &pass,
            own,
            view: &view,
            data: data.as_ref(),
            seen: &seen,
            key: &key,
        };
        pending.take_up(r, &mut events).await;
    }
    let hand_over_to = r.hand_over.as_ref().map(|(to, _)| *to);
    let handed_to = seen
        .handover
        .as_ref()
        .filter(|h| h.refused.is_none() && timestamp_now() - h.at <= handover_window(ttl))
        .and_then(|h| h.to.as_deref())
        .and_then(|to| p.spec.members.iter().position(|m| m.name == to));
    let mut plan;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let published = published_now(r);
        plan = regional::decide(&regional::Input {
            policy: pass.settings.policy.clone(),
            now: now(),
            own,
            counters: r.counters,
            healthy: view.health.is_ok(),
            data: data.clone(),
            lease: lease.clone(),
            last_active,
            members: p.spec.members.len(),
            campaign_step: interval.max(Duration::from_millis(500)),
            ready,
            published,
            pilot_light: pilot.is_some(),
            preferred_gone,
            hand_over_to: hand_over_to.filter(|_| rounds == 1),
            handed_to,
        });
        let mut again = false;
        for a in plan.actions.clone() {
            let t = Instant::now();
            let done = act(ctx, p, r, a, &view, &member, dns_entry, &key).await;
            tracing::info!(policy = %pass.name, action = ?a, ok = done.is_ok(), took_ms = t.elapsed().as_millis() as u64, "regional action");
            match done {
                Ok(Some(new_lease)) => {
                    lease = new_lease;
                    again = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    events.push(("FailoverStepFailed", e, true));
                    break;
                }
            }
            if a == Action::Claim {
                r.took_over = last_active.is_some_and(|i| i != own);
            }
            if a == Action::HandOver {
                lease = vacant(r);
                let to = hand_over_to
                    .and_then(|t| p.spec.members.get(t))
                    .map_or("?", |m| m.name.as_str());
                events.push((
                    "FailoverStarted",
                    format!(
                        "a failover request: region {region} fenced its database and handed the lease to {to}'s region"
                    ),
                    false,
                ));
            }
            if a == Action::Publish {
                // A move from another region's member (claimed by this tenure, maybe some
                // passes ago while its member got ready), or this region's first start.
                let moved =
                    r.took_over || last_active.is_some_and(|i| i != own) || handed_to == Some(own);
                events.push((
                    if moved {
                        "FailedOver"
                    } else {
                        "EntryPublished"
                    },
                    format!(
                        "region {region} is active: {} → {} (fencing token {}; {ready_pods} of {} replicas ready)",
                        dns_entry.hostname,
                        m.entry_addresses.join(", "),
                        r.published.unwrap_or_default(),
                        view.size.map_or_else(|| "?".to_string(), |s| s.full.to_string()),
                    ),
                    false,
                ));
            }
        }
        // Counters count one check per pass, however many rounds.
        if !again || rounds >= 3 {
            r.counters = plan.counters;
            break;
        }
        // The next round decides on the same check (the counters are not yet updated).
    }
    if lease == Lease::Lost {
        events.push((
            "Fenced",
            "this region could not renew the coordination lease in time: its database is fenced"
                .to_string(),
            true,
        ));
    }
    if let Some(size) = view.size {
        let scaled = resize(ctx, &pass, m, size, pilot, plan.scale).await;
        match scaled {
            Ok(Some(message)) => events.push(("PilotLightResized", message, false)),
            Ok(None) => {}
            Err(e) => events.push(("FailoverStepFailed", e, true)),
        }
    }
    if plan.state == State::Active && !ready && !published_now(r) {
        plan.message = format!(
            "{} ({ready_pods} of the {} needed ready)",
            plan.message,
            if needed == usize::MAX {
                "?".to_string()
            } else {
                needed.to_string()
            }
        );
    }
    after_actions(r, &lease);
    report(r, &key, &member, &view, data.as_ref(), &plan).await;
    if plan.state != State::Active && !r.endpoint_cleared {
        match dns::delete_endpoint(&ctx.client, p).await {
            Ok(()) => r.endpoint_cleared = true,
            Err(e) => events.push(("FailoverStepFailed", e, true)),
        }
    }
    for (reason, message, warning) in &events {
        super::publish(ctx, p, reason, message, *warning).await;
    }

    let mut status = build_status(p, &pass, &region, own, &view, &plan, &lease, r, &seen);
    for (annotation, suffix) in [
        (requests::DRILL, drill::REQUEST),
        (requests::FAILOVER, FAILOVER_REQUEST),
    ] {
        if let Some(token) = forward_request(p, r, &key, annotation, suffix).await {
            status
                .handled_requests
                .insert(annotation.to_string(), token);
        }
    }
    // The holder's refusal of the failover request last taken up here, for the CLI.
    if let Some(why) = seen
        .handover
        .as_ref()
        .filter(|h| status.handled_requests.get(requests::FAILOVER) == Some(&h.request))
        .and_then(|h| h.refused.as_ref())
    {
        let message = status.message.take().unwrap_or_default();
        status.message = Some(format!("failover refused: {why}; {message}"));
    }
    let holder = plan.state == State::Active && published_now(r);
    // A drill goes by the request and the record in etcd: in a pass without its answer
    // nothing is known of either, so the drill neither advances nor is written (a record
    // written from nothing would forget the request it took up, and the drill run again).
    let drilled = if !seen.answered {
        Ok(())
    } else if holder {
        let d = drill::Holder {
            pass: &pass,
            own,
            view: &view,
            data: data.as_ref(),
            seen: &seen,
            entry: dns_entry,
            key: &key,
        };
        d.step(ctx, local, &mut status).await
    } else {
        drill::mirror(ctx, &pass, &seen, &mut status).await
    };
    if let Err(e) = drilled {
        super::publish(ctx, p, "FailoverStepFailed", &e, true).await;
    }
    ctx.metrics.set_failover_phase(
        &pass.ns,
        &pass.name,
        status.phase.as_deref().unwrap_or_default(),
    );
    write_status(ctx, p, &status, local).await?;
    Ok(interval)
}

/// Whether the region ahead of this one for a vacant lease (the last active member's) is
/// gone: its report says its member is down, or this region has read etcd pass after pass
/// for a lease TTL and that report has not changed once (no clock is compared: after the
/// quorum is lost every report is old, and the watch starts afresh when etcd answers
/// again). No report at all is not taken for gone.
fn preferred_gone(
    r: &mut Regional,
    p: &FailoverPolicy,
    own: usize,
    seen: &Seen,
    ttl: Duration,
) -> bool {
    let preferred = seen
        .last_active
        .filter(|&i| i != own && seen.answered)
        .map(|i| p.spec.members[i].name.clone());
    let Some(name) = preferred else {
        r.preferred_report = None;
        return false;
    };
    let Some((_, rep)) = seen.reports.iter().find(|(n, _)| *n == name) else {
        r.preferred_report = None;
        return false;
    };
    let key = (name, rep.at);
    let since = match &r.preferred_report {
        Some((k, since)) if *k == key => *since,
        _ => {
            r.preferred_report = Some((key, Instant::now()));
            Instant::now()
        }
    };
    rep.down || since.elapsed() > ttl
}

fn published_now(r: &Regional) -> bool {
    r.published.is_some() && r.tenure.as_ref().map(Tenure::token) == r.published
}

/// `spec.pilotLight` as sizes: the standby's, and the ready pods a member needs to serve.
fn pilot_sizes(pl: &cutover_api::failover::PilotLight) -> Result<(Size, Size), String> {
    use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let parse = |v: &IntOrString, field: &str| {
        match v {
            IntOrString::Int(n) => Size::parse(Some(*n), None),
            IntOrString::String(s) => Size::parse(None, Some(s)),
        }
        .map_err(|e| format!("spec.pilotLight.{field}: {e}"))
    };
    let standby = parse(&pl.replicas, "replicas")?;
    let to_serve = match &pl.ready_to_serve {
        Some(v) => parse(v, "readyToServe")?,
        None => Size::Percent(100),
    };
    Ok((standby, to_serve))
}

/// Size the own member as the plan says: its pilot-light size while another region
/// serves, its full size once this one holds the lease (and its full size when the policy
/// no longer asks for a pilot light). Only the annotation this controller owns is written
/// (server-side apply under a field manager of its own), so `spec.replicas` stays the
/// user's. Returns what changed, for an Event.
async fn resize(
    ctx: &Context,
    pass: &Pass<'_>,
    m: &cutover_api::failover::Member,
    size: super::MemberSize,
    pilot: Option<(Size, Size)>,
    scale: Option<Scale>,
) -> Result<Option<String>, String> {
    let want = match (pilot, scale) {
        (Some((standby, _)), Some(Scale::PilotLight)) => Some(standby.of(size.full)),
        (Some(_), Some(Scale::Full)) | (None, _) => None,
        (Some(_), None) => return Ok(None),
    };
    if size.pilot == want {
        return Ok(None);
    }
    let client = super::members::client(&ctx.clusters, &ctx.client, &pass.ns, m).await?;
    let ns = m.namespace.clone().unwrap_or_else(|| pass.ns.clone());
    let api: cutover_api::kube::Api<cutover_api::BlueGreenDeployment> =
        cutover_api::kube::Api::namespaced(client, &ns);
    let annotations = match want {
        Some(n) => serde_json::json!({ cutover_api::PILOT_LIGHT_ANNOTATION: n.to_string() }),
        None => serde_json::json!({}),
    };
    let patch = serde_json::json!({
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "BlueGreenDeployment",
        "metadata": { "name": m.blue_green_deployment, "annotations": annotations },
    });
    let pp = cutover_api::kube::api::PatchParams::apply(PILOT_LIGHT_MANAGER).force();
    api.patch(
        &m.blue_green_deployment,
        &pp,
        &cutover_api::kube::api::Patch::Apply(&patch),
    )
    .await
    .map_err(|e| {
        format!(
            "sizing BlueGreenDeployment {ns}/{}: {e}",
            m.blue_green_deployment
        )
    })?;
    Ok(Some(match want {
        Some(n) => format!(
            "member {} kept at its pilot-light size: {n} of {} replicas while another region serves",
            m.name, size.full
        ),
        None => format!(
            "member {} scaled to its full size of {} replicas",
            m.name, size.full
        ),
    }))
}

/// The field manager of the pilot-light annotation.
const PILOT_LIGHT_MANAGER: &str = "cutover-pilot-light";

/// The lease and the holder's records, as etcd has them now; without an answer the lease
/// is [`Lease::Unreachable`] (or [`Lease::Lost`]/[`Lease::Held`] by this region's own
/// standing, which needs no answer).
async fn read_lease(
    r: &mut Regional,
    key: &str,
    region: &str,
    p: &FailoverPolicy,
) -> (Lease, Seen) {
    let member_index = |name: &str| p.spec.members.iter().position(|m| m.name == name);
    let Some(c) = r.coordinator.as_ref() else {
        let lease = match &r.tenure {
            Some(t) if t.may_act() => Lease::Held,
            Some(_) => Lease::Lost,
            None => Lease::Unreachable("not connected to etcd".into()),
        };
        return (lease, Seen::default());
    };
    let read = async {
        let holding = c.holding().await?;
        let under = c.get_prefix(&format!("{key}/")).await?;
        Ok::<_, coordination::Error>((holding, under))
    };
    let (holding, under) = match read.await {
        Ok(v) => v,
        Err(e) => {
            let lease = match &r.tenure {
                Some(t) if t.may_act() => Lease::Held,
                Some(_) => Lease::Lost,
                None => Lease::Unreachable(e.to_string()),
            };
            return (lease, Seen::default());
        }
    };
    let mut seen = Seen {
        holder_token: holding.as_ref().map(|h| h.token),
        answered: true,
        ..Seen::default()
    };
    for (k, v) in under {
        let rest = k.strip_prefix(key).unwrap_or_default();
        if rest == "/active" {
            seen.last_active = member_index(&v);
        } else if rest == "/primary" {
            seen.primary = serde_json::from_str(&v).ok();
        } else if rest == drill::REQUEST {
            // The token (the annotation's first word).
            seen.drill_request = v.split_whitespace().next().map(str::to_string);
        } else if rest == FAILOVER_REQUEST {
            seen.failover_request = Some(v);
        } else if rest == HANDOVER {
            seen.handover = serde_json::from_str(&v).ok();
        } else if rest == drill::RECORD {
            seen.drill = serde_json::from_str(&v).ok();
        } else if let Some(name) = rest.strip_prefix("/members/")
            && let Ok(rep) = serde_json::from_str::<Report>(&v)
        {
            seen.reports.push((name.to_string(), rep));
        }
    }
    let lease = match (&r.tenure, holding) {
        (Some(t), _) if !t.may_act() => Lease::Lost,
        (Some(t), Some(h)) if h.token == t.token() => Lease::Held,
        // The key is gone or someone else's: this tenure is over (its fencer fences).
        (Some(_), other) => {
            r.tenure = None;
            match other {
                Some(h) => Lease::HeldBy(h.holder),
                None => vacant(r),
            }
        }
        (None, Some(h)) if h.holder == region => Lease::Expiring,
        (None, Some(h)) => Lease::HeldBy(h.holder),
        (None, None) => vacant(r),
    };
    if !matches!(lease, Lease::Vacant(_)) {
        r.vacant_since = None;
    }
    (lease, seen)
}

fn vacant(r: &mut Regional) -> Lease {
    let since = *r.vacant_since.get_or_insert_with(Instant::now);
    Lease::Vacant(since.elapsed())
}

/// Carry one action out. `Ok(Some(lease))`: the lease changed (a campaign), decide again.
#[allow(clippy::too_many_arguments)]
async fn act(
    ctx: &Context,
    p: &FailoverPolicy,
    r: &mut Regional,
    a: Action,
    view: &View,
    member: &str,
    entry: &cutover_api::failover::DnsEntry,
    key: &str,
) -> Result<Option<Lease>, String> {
    let conn = || {
        view.conn
            .clone()
            .ok_or("no database connection".to_string())
    };
    match a {
        Action::Fence => {
            super::postgres::fence(&conn()?)
                .await
                .map_err(|e| format!("fencing this region's database: {e}"))?;
            Ok(None)
        }
        Action::Campaign => {
            let c = r.coordinator.as_ref().ok_or("not connected to etcd")?;
            match c.campaign().await {
                Ok(Ok(tenure)) => {
                    r.fencer = Some(spawn_fencer(&tenure, view.conn.clone(), key.to_string()));
                    r.tenure = Some(tenure);
                    r.published = None;
                    r.fenced = false;
                    r.vacant_since = None;
                    r.took_over = false;
                    r.routed = None;
                    Ok(Some(Lease::Held))
                }
                Ok(Err(h)) => Ok(Some(Lease::HeldBy(h.holder))),
                Err(e) => Ok(Some(Lease::Unreachable(e.to_string()))),
            }
        }
        Action::Claim => {
            let t = r.tenure.as_ref().ok_or("the lease ran out")?;
            t.put_fenced(&format!("{key}/active"), member)
                .await
                .map_err(|e| format!("recording this region as the active one: {e}"))?;
            Ok(None)
        }
        Action::Promote => {
            // Promotion is local to the region: checked against the standing just before.
            r.tenure
                .as_ref()
                .filter(|t| t.may_act())
                .ok_or("the lease ran out")?;
            super::postgres::promote(&conn()?)
                .await
                .map_err(|e| format!("promoting this region's database: {e}"))?;
            Ok(None)
        }
        Action::Publish => {
            let t = r.tenure.as_ref().ok_or("the lease ran out")?;
            let addresses = &p
                .spec
                .members
                .iter()
                .find(|m| m.name == member)
                .map(|m| m.entry_addresses.clone())
                .unwrap_or_default();
            let (prefix, mut puts) = dns::records(entry, member, addresses)?;
            puts.push((format!("{key}/active"), member.to_string()));
            t.replace_fenced(&prefix, &puts)
                .await
                .map_err(|e| format!("publishing the DNS records: {e}"))?;
            r.published = Some(t.token());
            r.routed = p.spec.members.iter().position(|m| m.name == member);
            r.endpoint_cleared = false;
            // The records every region serves are written; the DNSEndpoint is for an
            // ExternalDNS, whose CRD may not be installed: that is reported, not fatal.
            if let Err(e) = dns::apply_endpoint(&ctx.client, p, entry, addresses).await {
                tracing::info!(error = %e, "DNSEndpoint not written");
            }
            Ok(None)
        }
        Action::Resign => {
            resign(r).await;
            Ok(Some(vacant(r)))
        }
        Action::HandOver => {
            let (to, request) = r
                .hand_over
                .clone()
                .ok_or("no failover request to carry out")?;
            let to = p.spec.members[to].name.clone();
            let t = r.tenure.as_ref().ok_or("the lease ran out")?;
            let record = Handover {
                request,
                to: Some(to.clone()),
                refused: None,
                at: timestamp_now(),
            };
            let mut puts = vec![
                (format!("{key}/active"), to.clone()),
                (
                    format!("{key}{HANDOVER}"),
                    serde_json::to_string(&record).unwrap_or_default(),
                ),
            ];
            // The fenced database's last position: the named region's data gate waits
            // for its standby to have replayed all of it.
            if let Some(conn) = view.conn.as_deref() {
                let db = super::postgres::observe(conn, Duration::from_secs(1)).await;
                if let Some(lsn) = db.current_lsn {
                    let pr = PrimaryReport {
                        member: member.to_string(),
                        lsn,
                    };
                    puts.push((
                        format!("{key}/primary"),
                        serde_json::to_string(&pr).unwrap_or_default(),
                    ));
                }
            }
            t.put_all_fenced(&puts)
                .await
                .map_err(|e| format!("handing the lease over to {to}: {e}"))?;
            resign(r).await;
            r.hand_over = None;
            Ok(None)
        }
    }
}

/// Give the lease up (its fencer stopped first: the caller fenced, or had nothing to).
async fn resign(r: &mut Regional) {
    if let Some(f) = r.fencer.take() {
        f.abort();
    }
    if let Some(t) = r.tenure.take() {
        t.resign().await;
    }
    r.published = None;
}

/// A task that fences the own database (if any) once `tenure` may no longer act.
fn spawn_fencer(tenure: &Tenure, conn: Option<String>, key: String) -> JoinHandle<()> {
    let lost = tenure.lost_signal();
    tokio::spawn(async move {
        lost.wait().await;
        tracing::warn!(key = %key, "coordination lease lost: fencing this region's database");
        if let Some(conn) = conn
            && let Err(e) = super::postgres::fence(&conn).await
        {
            tracing::error!(key = %key, error = %e, "fencing this region's database failed");
        }
    })
}

/// What the pass's outcome leaves in memory.
fn after_actions(r: &mut Regional, lease: &Lease) {
    match lease {
        Lease::Lost => {
            r.tenure = None;
            r.published = None;
            r.fenced = true;
        }
        Lease::HeldBy(_) | Lease::Held => r.fenced = false,
        _ => {}
    }
}

/// Write this region's report of its member, and (holding) its database position.
async fn report(
    r: &Regional,
    key: &str,
    member: &str,
    view: &View,
    data: Option<&DataObs>,
    plan: &regional::Plan,
) {
    let Some(c) = r.coordinator.as_ref() else {
        return;
    };
    let rep = Report {
        healthy: view.health.is_ok(),
        down: plan.counters.down,
        role: view.db.as_ref().map(|d| d.role().to_string()),
        reason: view.health.clone().err(),
        at: timestamp_now(),
        lag_seconds: data.and_then(|d| d.lag_seconds),
        lag_bytes: data.and_then(|d| d.lag_bytes),
    };
    let value = serde_json::to_string(&rep).unwrap_or_default();
    if let Err(e) = c.put(&format!("{key}/members/{member}"), &value).await {
        tracing::debug!(error = %e, "writing this region's report");
    }
    if let (Some(t), Some(lsn)) = (
        r.tenure.as_ref(),
        view.db
            .as_ref()
            .filter(|d| d.writable())
            .and_then(|d| d.current_lsn),
    ) {
        let pr = PrimaryReport {
            member: member.to_string(),
            lsn,
        };
        let value = serde_json::to_string(&pr).unwrap_or_default();
        if let Err(e) = t.put_fenced(&format!("{key}/primary"), &value).await {
            tracing::debug!(error = %e, "writing the primary's position");
        }
    }
}

fn timestamp_now() -> i64 {
    now().0
}

/// A request (`kubectl cutover drill` or `failover`) made in this region's cluster, its
/// annotation's value forwarded into etcd at `<key><suffix>` for the holder; its token
/// once etcd has it (then it is marked handled here).
async fn forward_request(
    p: &FailoverPolicy,
    r: &Regional,
    key: &str,
    annotation: &str,
    suffix: &str,
) -> Option<String> {
    let v = super::new_request(p, annotation)?;
    let token = v.split_whitespace().next().unwrap_or_default().to_string();
    let c = r.coordinator.as_ref()?;
    match c.put(&format!("{key}{suffix}"), &v).await {
        Ok(_) => Some(token),
        Err(e) => {
            tracing::debug!(error = %e, request = annotation, "forwarding a request");
            None
        }
    }
}

/// How long a handover keeps the other regions from campaigning: three lease TTLs and
/// 5 s (the holder's clock against this one's). A region it named that has not taken the
/// lease by then is waited for no longer.
fn handover_window(ttl: Duration) -> i64 {
    i64::try_from((ttl * 3).as_millis()).unwrap_or(i64::MAX) + 5_000
}

/// Every member as the holder sees it this pass: its own as observed, the others as
/// their regions last reported them through etcd (a stale report is not healthy, and its
/// member counts as down).
fn member_views(
    pass: &Pass<'_>,
    own: usize,
    view: &View,
    data: Option<&DataObs>,
    seen: &Seen,
) -> (Vec<cutover_core::failover::MemberObs>, Vec<Counters>) {
    let members = &pass.policy.spec.members;
    let interval = pass.settings.interval;
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == own {
                let obs = cutover_core::failover::MemberObs {
                    name: m.name.clone(),
                    healthy: view.health.is_ok(),
                    reason: view.health.clone().err().unwrap_or_default(),
                    data: data.cloned(),
                };
                return (obs, Counters::default());
            }
            let rep = seen
                .reports
                .iter()
                .find(|(n, _)| n == &m.name)
                .map(|(_, r)| r);
            let fresh = rep.filter(|r| r.fresh(interval));
            let obs = cutover_core::failover::MemberObs {
                name: m.name.clone(),
                healthy: fresh.is_some_and(|r| r.healthy && !r.down),
                reason: match fresh {
                    Some(r) => r.reason.clone().unwrap_or_default(),
                    None => "its region's report is stale or missing".into(),
                },
                data: fresh.map(|r| DataObs {
                    reachable: r.role.is_some(),
                    standby: r.role.as_deref() == Some("standby"),
                    lag_seconds: r.lag_seconds,
                    lag_bytes: r.lag_bytes,
                    ..DataObs::default()
                }),
            };
            let counters = Counters {
                down: fresh.is_none_or(|r| r.down),
                ..Counters::default()
            };
            (obs, counters)
        })
        .unzip()
}

/// The holder's view for a failover request.
struct Pending<'a> {
    pass: &'a Pass<'a>,
    own: usize,
    view: &'a View,
    data: Option<&'a DataObs>,
    seen: &'a Seen,
    key: &'a str,
}

impl Pending<'_> {
    /// A failover request not answered yet: accepted (the member to hand the lease to
    /// and the request's token kept in `r.hand_over` for [`Action::HandOver`]), or
    /// refused (the refusal written next to the lease for every region to show, and an
    /// Event).
    async fn take_up(&self, r: &mut Regional, events: &mut Vec<(&'static str, String, bool)>) {
        let Some(value) = self.seen.failover_request.as_deref() else {
            return;
        };
        let req = FailoverRequest::parse(value);
        if req.token.is_empty()
            || self.seen.handover.as_ref().map(|h| h.request.as_str()) == Some(req.token)
        {
            return;
        }
        let members = &self.pass.policy.spec.members;
        let (obs, counters) = member_views(self.pass, self.own, self.view, self.data, self.seen);
        let to = match req.to {
            Some(n) => match members.iter().position(|m| m.name == n) {
                Some(i) => Ok(Some(i)),
                None => Err(format!("spec.members has no member {n}")),
            },
            None => Ok(None),
        };
        let target = to.and_then(|to| {
            regional::handover_target(
                &self.pass.settings.policy,
                self.own,
                to,
                &obs,
                &counters,
                req.force,
            )
        });
        match target {
            Ok(t) => r.hand_over = Some((t, req.token.to_string())),
            Err(why) => {
                let record = Handover {
                    request: req.token.to_string(),
                    to: None,
                    refused: Some(why.clone()),
                    at: timestamp_now(),
                };
                let value = serde_json::to_string(&record).unwrap_or_default();
                let written = match r.tenure.as_ref() {
                    Some(t) => t
                        .put_fenced(&format!("{}{HANDOVER}", self.key), &value)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("the lease ran out".into()),
                };
                match written {
                    Ok(_) => {
                        events.push(("FailoverRefused", format!("failover refused: {why}"), true))
                    }
                    Err(e) => tracing::debug!(error = %e, "writing a failover refusal"),
                }
            }
        }
    }
}

/// The status this region writes of the policy.
#[allow(clippy::too_many_arguments)]
fn build_status(
    p: &FailoverPolicy,
    pass: &Pass<'_>,
    region: &str,
    own: usize,
    view: &View,
    plan: &regional::Plan,
    lease: &Lease,
    r: &Regional,
    seen: &Seen,
) -> FailoverPolicyStatus {
    let mut status = p.status.clone().unwrap_or_default();
    let state = if r.fenced
        && matches!(
            lease,
            Lease::Unreachable(_) | Lease::Vacant(_) | Lease::Expiring
        ) {
        State::Fenced
    } else {
        plan.state
    };
    let holder = match lease {
        Lease::Held => Some(region.to_string()),
        Lease::HeldBy(h) => Some(h.clone()),
        _ => None,
    };
    let token = match lease {
        Lease::Held => r.tenure.as_ref().map(Tenure::token),
        _ => None,
    };
    let reports = &seen.reports;
    let old = status.coordination.take();
    let since = match &old {
        Some(o) if o.state == state.name() => o.since.clone(),
        _ => Some(time(now())),
    };
    let message = if r.fenced && state == State::Fenced {
        "this region could not renew the lease in time and fenced its database; nothing else moves until etcd answers".to_string()
    } else {
        plan.message.clone()
    };
    status.coordination = Some(CoordinationStatus {
        region: region.to_string(),
        state: state.name().to_string(),
        holder: holder.clone(),
        token: token.or(seen.holder_token),
        message: Some(message.clone()),
        since,
    });
    let members = &p.spec.members;
    status.active_member = holder
        .as_deref()
        .and_then(|h| members.iter().find(|m| m.region.as_deref() == Some(h)))
        .map(|m| m.name.clone());
    status.phase = Some(
        match state {
            State::Active | State::Standby => {
                if status.active_member.as_deref() == members.first().map(|m| m.name.as_str()) {
                    "Healthy"
                } else {
                    "FailedOver"
                }
            }
            State::Vacant => "FailingOver",
            State::Fenced | State::Unreachable => "Degraded",
        }
        .to_string(),
    );
    status.message = Some(message.clone());
    status.members = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == own {
                return MemberStatus {
                    name: m.name.clone(),
                    healthy: view.health.is_ok(),
                    down: plan.counters.down,
                    failures: i32::try_from(plan.counters.failures).unwrap_or(i32::MAX),
                    successes: i32::try_from(plan.counters.successes).unwrap_or(i32::MAX),
                    up_since: plan.counters.up_since.map(time),
                    seen_up: plan.counters.seen_up,
                    reason: view
                        .health
                        .clone()
                        .err()
                        .or_else(|| view.db.as_ref().and_then(|d| d.error.clone())),
                    endpoints: view
                        .endpoints
                        .as_ref()
                        .map_or(0, |e| i32::try_from(e.addresses.len()).unwrap_or(0)),
                    database_role: view.db.as_ref().map(|d| d.role().to_string()),
                    ..MemberStatus::default()
                };
            }
            match reports.iter().find(|(n, _)| n == &m.name) {
                Some((_, rep)) if rep.fresh(pass.settings.interval) => MemberStatus {
                    name: m.name.clone(),
                    healthy: rep.healthy,
                    down: rep.down,
                    reason: rep.reason.clone(),
                    database_role: rep.role.clone(),
                    ..MemberStatus::default()
                },
                other => MemberStatus {
                    name: m.name.clone(),
                    healthy: false,
                    down: false,
                    reason: Some(match other {
                        Some(_) => {
                            "its region's last report is stale (region down or cut off?)".into()
                        }
                        None => "its region has not reported (through etcd)".into(),
                    }),
                    ..MemberStatus::default()
                },
            }
        })
        .collect();
    let ready = matches!(state, State::Active | State::Standby);
    status.conditions = merge(
        &status.conditions,
        &[Wanted {
            type_: "Ready",
            status: ready,
            reason: match state {
                State::Active => "Active",
                State::Standby => "Standby",
                State::Vacant => "LeaseVacant",
                State::Fenced => "Fenced",
                State::Unreachable => "CoordinationUnreachable",
            },
            message,
        }],
        p.metadata.generation,
        &time(now()),
    );
    status.observed_generation = p.metadata.generation;
    status
}
