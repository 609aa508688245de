//! Drills in the regional mode. The lease holder runs them: a request reaches it through
//! etcd from whichever region's cluster it was made in (`<key>/drill-request`), a schedule
//! is read by the holder alone. A drill moves the entry's DNS records, traffic only (the
//! lease and the databases' roles stay), to a healthy standby region, checks that region
//! answers for `verifySeconds`, and moves them back, with the front mode's stages and
//! verdict ([`crate::failover::drill`]). The holder writes the drill's state and report
//! next to the lease (`<key>/drill`, fenced); every region shows them in its own status
//! and writes the report's ConfigMap and Event in its own cluster.
//!
//! **RTO** runs from the drill's start to the first good answer from `spec.entry.url` at
//! the standby's own entry address after its records were published (clients' DNS caches
//! add up to the TTL); without `spec.entry.url`, to the publication. **RPO** is the
//! standby's replication lag behind the holder's position, as its region last reported it.

use cutover_api::failover::{DnsEntry, DrillReport, DrillStatus, Member};
use cutover_core::failover::{DataObs, Memory};
use serde::{Deserialize, Serialize};

use super::{Regional, Seen, View};
use crate::clock::now;
use crate::failover::{Context, Local, Pass, drill, finish_drill, publish};
use crate::traffic::dns;

/// The key, after the lease key, of the last drill request any region forwarded.
pub(super) const REQUEST: &str = "/drill-request";
/// The key, after the lease key, of the holder's drill record.
pub(super) const RECORD: &str = "/drill";

/// The holder's drill record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub(super) struct Record {
    /// The request token the holder last took up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The drill under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillStatus>,
    /// The last drill's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DrillReport>,
}

/// `url` with its host replaced by `m`'s first entry address.
pub(super) fn probe_url(url: &str, m: &Member) -> Option<String> {
    let mut u = reqwest::Url::parse(url).ok()?;
    let addr = m.entry_addresses.first()?;
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.clone()
    };
    u.set_host(Some(&host)).ok()?;
    Some(u.to_string())
}

/// The holder's view for a drill step.
pub(super) struct Holder<'a> {
    pub pass: &'a Pass<'a>,
    pub own: usize,
    pub view: &'a View,
    pub data: Option<&'a DataObs>,
    pub seen: &'a Seen,
    pub entry: &'a DnsEntry,
    pub key: &'a str,
}

impl Holder<'_> {
    /// Advance the drill: start one when asked or due, move the records as it says, write
    /// the report when it is done, and the record for the other regions.
    pub async fn step(
        &self,
        ctx: &Context,
        local: &mut Local,
        status: &mut cutover_api::failover::FailoverPolicyStatus,
    ) -> Result<(), String> {
        let mut r = local.regional.take().unwrap_or_default();
        let out = self.step_with(ctx, &mut r, local, status).await;
        local.regional = Some(r);
        out
    }

    async fn step_with(
        &self,
        ctx: &Context,
        r: &mut Regional,
        local: &mut Local,
        status: &mut cutover_api::failover::FailoverPolicyStatus,
    ) -> Result<(), String> {
        let p = self.pass.policy;
        let names: Vec<String> = p.spec.members.iter().map(|m| m.name.clone()).collect();
        let (obs, counters) =
            super::member_views(self.pass, self.own, self.view, self.data, self.seen);
        // The member the records point at stands for the active one: a drill moves them
        // away and back, as the front mode moves its route.
        let memory = Memory {
            active: r.routed.unwrap_or(self.own),
            counters,
            moving: None,
            last_move: None,
            failed_from: None,
        };
        let record = self.seen.drill.clone().unwrap_or_default();
        let requested =
            self.seen.drill_request.is_some() && self.seen.drill_request != record.request;
        let probe_urls: Vec<Option<String>> = p
            .spec
            .members
            .iter()
            .map(|m| p.spec.entry.url.as_deref().and_then(|u| probe_url(u, m)))
            .collect();
        // A drill another region ran (shown here while this region stood by) is not this
        // one's to finish: the lease moved during it.
        if let Some(d) = status.drill.take_if(|d| d.report.from != names[self.own]) {
            let mut report = d.report;
            report.verdict = Some("Failed".into());
            report.message = Some(format!(
                "abandoned: the lease moved to {} during the drill",
                names[self.own]
            ));
            report.finished = Some(crate::clock::time(now()));
            drill::write_report(ctx, p, &report, status)
                .await
                .map_err(|e| format!("writing the drill report: {e}"))?;
            publish(ctx, p, "DrillFailed", &drill::summary(&report), true).await;
        }
        let idle = status.drill.is_none();
        let wants = drill::step(
            &drill::Inputs {
                policy: p,
                names: &names,
                members: &obs,
                memory: &memory,
                routed_to: Some(r.routed.unwrap_or(self.own)),
                now: now(),
                requested,
                probe_urls: &probe_urls,
            },
            status,
            local,
        );
        for e in &wants.events {
            publish(ctx, p, e.reason, &e.message, e.warning).await;
        }
        let mut failed = None;
        if let Some(to) = wants.move_to {
            match self.point_at(ctx, r, to).await {
                Ok(()) => drill::routed(status, local, names.get(to).map(String::as_str)),
                Err(e) => failed = Some(e),
            }
        }
        finish_drill(ctx, self.pass, status)
            .await
            .map_err(|e| format!("writing the drill report: {e}"))?;
        let written = Record {
            // Taken up: a drill started, or was refused at once (a new report).
            request: if idle
                && requested
                && (status.drill.is_some() || status.last_drill != record.last)
            {
                self.seen.drill_request.clone()
            } else {
                record.request.clone()
            },
            drill: status.drill.clone(),
            last: status.last_drill.clone(),
        };
        if self.seen.drill.as_ref() != Some(&written) && r.drill_written.as_ref() != Some(&written)
        {
            let t = r.tenure.as_ref().ok_or("the lease ran out")?;
            let value = serde_json::to_string(&written).unwrap_or_default();
            t.put_fenced(&format!("{}{RECORD}", self.key), &value)
                .await
                .map_err(|e| format!("writing the drill record: {e}"))?;
            r.drill_written = Some(written);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Point the entry's records (and this cluster's DNSEndpoint) at member `to`.
    async fn point_at(&self, ctx: &Context, r: &mut Regional, to: usize) -> Result<(), String> {
        let p = self.pass.policy;
        let m = &p.spec.members[to];
        let t = r.tenure.as_ref().ok_or("the lease ran out")?;
        let (prefix, puts) = dns::records(self.entry, &m.name, &m.entry_addresses)?;
        t.replace_fenced(&prefix, &puts)
            .await
            .map_err(|e| format!("pointing the DNS records at {}: {e}", m.name))?;
        r.routed = Some(to);
        tracing::info!(to = %m.name, "drill: the entry's records point at {}", m.name);
        if let Err(e) = dns::apply_endpoint(&ctx.client, p, self.entry, &m.entry_addresses).await {
            tracing::info!(error = %e, "DNSEndpoint not written");
        }
        Ok(())
    }
}

/// A region that does not hold the lease: the holder's drill, shown in this region's
/// status, and its report written here (ConfigMap, Event) once.
pub(super) async fn mirror(
    ctx: &Context,
    pass: &Pass<'_>,
    seen: &Seen,
    status: &mut cutover_api::failover::FailoverPolicyStatus,
) -> Result<(), String> {
    let Some(rec) = &seen.drill else {
        return Ok(());
    };
    status.drill = rec.drill.clone();
    let Some(last) = &rec.last else {
        return Ok(());
    };
    if status.last_drill.as_ref().map(|l| &l.started) == Some(&last.started) {
        return Ok(());
    }
    let p = pass.policy;
    drill::write_report(ctx, p, last, status)
        .await
        .map_err(|e| format!("writing the drill report: {e}"))?;
    let verdict = last.verdict.clone().unwrap_or_default();
    let passed = verdict == "Passed";
    let reason = if passed { "DrillPassed" } else { "DrillFailed" };
    publish(ctx, p, reason, &drill::summary(last), !passed).await;
    Ok(())
}
