//! `failover` and `drill`: requests to the failover controller on a FailoverPolicy (the
//! annotations of `cutover_api::failover::requests`, acted on once per token), then a wait
//! for what came of them: the traffic moved, or the move refused and why; the drill's
//! report.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use cutover_api::FailoverPolicy;
use cutover_api::failover::{DrillReport, requests};
use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;

use crate::commands::{Ctx, Failure, colour, print_as, token, width};
use crate::tree::{cut, paint};

type Result<T> = std::result::Result<T, Failure>;

/// Where to look when a policy is not found.
const NOT_FOUND_HINT: &str = "kubectl get failoverpolicies shows what there is";

/// How long the controller has to acknowledge a request before the user hears about it.
const ACK_WITHIN: Duration = Duration::from_secs(10);

/// The member traffic is on, as the controller last said.
fn active(p: &FailoverPolicy) -> Option<&str> {
    p.status.as_ref()?.active_member.as_deref()
}

fn message(p: &FailoverPolicy) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.message.as_deref())
        .unwrap_or_default()
}

/// `--to` checked before anything is written: a member of the policy, and not the one
/// traffic is on already.
fn check_target(p: &FailoverPolicy, to: Option<&str>) -> Result<()> {
    let Some(to) = to else {
        return Ok(());
    };
    let names: Vec<&str> = p.spec.members.iter().map(|m| m.name.as_str()).collect();
    if !names.contains(&to) {
        return Err(Failure::new(format!(
            "FailoverPolicy {} has no member {to:?} (members: {})",
            p.name_any(),
            names.join(", ")
        )));
    }
    if active(p) == Some(to) {
        return Err(Failure::new(format!(
            "{to} is already active on FailoverPolicy {}: there is nothing to move",
            p.name_any()
        )));
    }
    Ok(())
}

/// The value of the failover annotation: the token first, then the options.
fn failover_value(token: &str, to: Option<&str>, force: bool) -> String {
    let mut value = token.to_string();
    if let Some(to) = to {
        value.push_str(" to=");
        value.push_str(to);
    }
    if force {
        value.push_str(" force");
    }
    value
}

/// The controller has acted on the request `token` under `key`.
fn acknowledged(p: &FailoverPolicy, key: &str, token: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.handled_requests.get(key))
        .is_some_and(|t| t == token)
}

/// What came of a failover request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Traffic is on this member now.
    Moved(String),
    /// The controller did not start the move; its message says why.
    Refused(String),
}

/// What came of an acknowledged failover request, given the member traffic was on before
/// (`before`) and `--to`: `None` while a move is under way (it may wait for fencing) or
/// nothing is decided yet.
fn outcome(p: &FailoverPolicy, before: Option<&str>, to: Option<&str>) -> Option<Outcome> {
    let st = p.status.as_ref()?;
    if st.moving.is_some() {
        return None;
    }
    if let Some(now) = st.active_member.as_deref()
        && (Some(now) != before || to == Some(now))
    {
        return Some(Outcome::Moved(now.to_string()));
    }
    let msg = st.message.as_deref().unwrap_or_default();
    msg.to_lowercase()
        .contains("refused")
        .then(|| Outcome::Refused(msg.to_string()))
}

/// What came of a drill request.
#[derive(Debug, Clone, PartialEq)]
enum DrillOutcome {
    /// The drill ran; its report.
    Report(Box<DrillReport>),
    /// The controller did not run it; its message says why.
    Refused(String),
}

/// What came of an acknowledged drill request: the new report, or the refusal when no
/// drill is under way and the status says the drill was refused.
fn drill_outcome(p: &FailoverPolicy, before: Option<&Time>) -> Option<DrillOutcome> {
    if let Some(r) = new_report(p, before) {
        return Some(DrillOutcome::Report(Box::new(r.clone())));
    }
    let st = p.status.as_ref()?;
    let msg = st.message.as_deref().unwrap_or_default();
    (st.drill.is_none() && msg.contains("drill refused"))
        .then(|| DrillOutcome::Refused(msg.to_string()))
}

/// The last drill's report when it is a finished drill that started after `before`.
fn new_report<'a>(p: &'a FailoverPolicy, before: Option<&Time>) -> Option<&'a DrillReport> {
    let r = p.status.as_ref()?.last_drill.as_ref()?;
    (r.verdict.is_some() && before.is_none_or(|b| r.started.0 > b.0)).then_some(r)
}

/// `90s`, `2m`, `1h30m`.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Where a policy stands, in a line: for a wait that ran out.
fn describe(p: &FailoverPolicy) -> String {
    let Some(st) = &p.status else {
        return "no status yet (is cutover-controller running?)".into();
    };
    let mut parts = vec![format!(
        "phase {}, traffic on {}",
        st.phase.as_deref().unwrap_or("Unknown"),
        st.active_member.as_deref().unwrap_or("-")
    )];
    if let Some(m) = &st.moving {
        parts.push(format!(
            "moving from {} to {}{} since {}",
            m.from,
            m.to,
            if m.forced { " (forced)" } else { "" },
            m.started.0.strftime("%H:%M:%S UTC")
        ));
    }
    if let Some(d) = &st.drill {
        parts.push(format!("drill at stage {}", d.stage));
    }
    let mut line = parts.join(", ");
    if let Some(msg) = st.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(": ");
        line.push_str(msg);
    }
    line
}

/// How a wait for the controller ended.
enum Waited<T> {
    /// Acknowledged, and the condition holds: what it said, and the policy then.
    Done(T, Box<FailoverPolicy>),
    /// Out of time: the policy as last seen, and whether the request was acknowledged.
    Timeout(Option<Box<FailoverPolicy>>, bool),
}

impl Ctx {
    fn policies(&self) -> Api<FailoverPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn explain_policy(&self, e: kube::Error, name: &str) -> Failure {
        self.explain_for::<FailoverPolicy>(e, Some(name), NOT_FOUND_HINT)
            .await
    }

    /// `get fp NAME [-w]`.
    pub async fn get_policy(&self, name: &str, watch: bool) -> Result<ExitCode> {
        if let Some(o) = self.output {
            crate::commands::print_as(&self.fetch_policy(name).await?, o)?;
            return Ok(ExitCode::SUCCESS);
        }
        let frame = |p: &FailoverPolicy| {
            crate::policy_view::render(p, crate::commands::width(), crate::commands::colour())
        };
        if !watch {
            print!("{}", frame(&self.fetch_policy(name).await?));
            return Ok(ExitCode::SUCCESS);
        }
        let mut last = String::new();
        loop {
            let now = frame(&self.fetch_policy(name).await?);
            if now != last {
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    print!("\x1b[H\x1b[2J");
                } else if !last.is_empty() {
                    println!();
                }
                print!("{now}");
                last = now;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    }

    /// `get fp`: the namespace's policies, a line each.
    pub async fn list_policies(&self) -> Result<ExitCode> {
        let list = match self.policies().list(&Default::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                return Err(self
                    .explain_for::<FailoverPolicy>(e, None, NOT_FOUND_HINT)
                    .await);
            }
        };
        if let Some(o) = self.output {
            crate::commands::print_as(&list, o)?;
            return Ok(ExitCode::SUCCESS);
        }
        let width = crate::commands::width();
        println!(
            "{}",
            crate::tree::cut(
                &format!(
                    "{:<20} {:<11} {:<10} {:<10} {:<11}",
                    "NAME", "PHASE", "ACTIVE", "HOLDER", "LEASE"
                ),
                width
            )
        );
        for p in &list {
            let st = p.status.clone().unwrap_or_default();
            let c = st.coordination.clone().unwrap_or_default();
            let line = format!(
                "{:<20} {:<11} {:<10} {:<10} {:<11}",
                p.metadata.name.as_deref().unwrap_or_default(),
                st.phase.as_deref().unwrap_or("-"),
                st.active_member.as_deref().unwrap_or("-"),
                c.holder.as_deref().unwrap_or("-"),
                if c.state.is_empty() {
                    "-"
                } else {
                    c.state.as_str()
                },
            );
            println!("{}", crate::tree::cut(line.trim_end(), width));
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn fetch_policy(&self, name: &str) -> Result<FailoverPolicy> {
        match self.policies().get(name).await {
            Ok(p) => Ok(p),
            Err(e) => Err(self.explain_policy(e, name).await),
        }
    }

    /// Write the request annotation `key` (a merge patch: other annotations stay).
    async fn annotate(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
        match self
            .policies()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.explain_policy(e, name).await),
        }
    }

    /// Watch the policy until the controller has acknowledged the request `token` under
    /// `key` and `done` returns something, or `timeout` runs out. Says when the controller
    /// acknowledges it, and warns when it has not within 10 s, as `promote` does.
    async fn wait_policy<T>(
        &self,
        name: &str,
        key: &str,
        token: &str,
        timeout: Duration,
        mut done: impl FnMut(&FailoverPolicy) -> Option<T>,
    ) -> Result<Waited<T>> {
        let verb = key.trim_start_matches("cutover.dev/");
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let ack_by = (start + ACK_WITHIN).min(deadline);
        let stream = watcher(
            self.policies(),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        );
        let mut stream = std::pin::pin!(stream);
        let mut acked = false;
        let mut warned = false;
        let mut current: Option<Box<FailoverPolicy>> = None;
        loop {
            if let Some(p) = &current {
                if !acked && acknowledged(p, key, token) {
                    acked = true;
                    if self.output.is_none() {
                        println!(
                            "{name}: {verb} acknowledged by the controller; {}",
                            message(p)
                        );
                    }
                }
                if acked && let Some(t) = done(p) {
                    return Ok(Waited::Done(t, p.clone()));
                }
            }
            let wake = if acked || warned { deadline } else { ack_by };
            match tokio::time::timeout_at(wake, stream.next()).await {
                Err(_) if wake >= deadline => return Ok(Waited::Timeout(current, acked)),
                Err(_) => {
                    warned = true;
                    if self.output.is_none() {
                        println!("{name}: {verb} requested");
                    }
                    eprintln!(
                        "warning: the controller has not acknowledged it within 10 s; is cutover-controller running? (waiting up to {})",
                        duration_text(timeout)
                    );
                }
                Ok(None) => return Err(Failure::new("the watch ended")),
                Ok(Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) => {
                    current = Some(Box::new(p));
                }
                Ok(Some(Ok(watcher::Event::Delete(_)))) => {
                    return Err(Failure::new(format!("FailoverPolicy {name} was deleted")));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => {
                    return Err(self
                        .explain_policy(kube::Error::Service(Box::new(e)), name)
                        .await);
                }
            }
        }
    }

    /// `failover POLICY [--to MEMBER] [--force] [--timeout]`: exit 0 when the traffic
    /// moved, 1 when the controller refused the move, 2 when the wait ran out.
    pub async fn failover(
        &self,
        name: &str,
        to: Option<&str>,
        force: bool,
        timeout: Duration,
    ) -> Result<ExitCode> {
        let p = self.fetch_policy(name).await?;
        check_target(&p, to)?;
        if let Some(m) = p.status.as_ref().and_then(|s| s.moving.as_ref()) {
            // The controller finishes a move before it looks at requests: this one would
            // be acknowledged and dropped.
            return Err(Failure::new(format!(
                "{name}: a move from {} to {} is under way (since {}); wait until it ends (kubectl get failoverpolicy {name} -w), then ask again",
                m.from,
                m.to,
                m.started.0.strftime("%H:%M:%S UTC")
            )));
        }
        let before = active(&p).map(str::to_string);
        let token = token();
        self.annotate(name, requests::FAILOVER, &failover_value(&token, to, force))
            .await?;
        let waited = self
            .wait_policy(name, requests::FAILOVER, &token, timeout, |p| {
                outcome(p, before.as_deref(), to)
            })
            .await?;
        match waited {
            Waited::Done(Outcome::Moved(now), p) => {
                match self.output {
                    Some(o) => print_as(&p, o)?,
                    None => {
                        let was = before.map(|b| format!(" (was {b})")).unwrap_or_default();
                        println!("failover: traffic on {now}{was}");
                        if !message(&p).is_empty() {
                            println!("{}", message(&p));
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            Waited::Done(Outcome::Refused(why), p) => {
                if let Some(o) = self.output {
                    print_as(&p, o)?;
                }
                let hint = if force || why.contains("--force") {
                    ""
                } else {
                    "; kubectl cutover failover --force accepts the data loss"
                };
                Err(Failure::new(format!("{name}: {why}{hint}")))
            }
            Waited::Timeout(last, acked) => {
                if let (Some(o), Some(p)) = (self.output, &last) {
                    print_as(p, o)?;
                }
                let message = match last.as_deref() {
                    Some(p) if acked => format!(
                        "{name}: the failover has not ended within {}: {}",
                        duration_text(timeout),
                        describe(p)
                    ),
                    _ => format!(
                        "{name}: the controller has not acknowledged the failover request within {}; is cutover-controller running? (the request stays in the annotation {key} and is acted on when the controller runs; kubectl annotate failoverpolicy {name} {key}- withdraws it)",
                        duration_text(timeout),
                        key = requests::FAILOVER
                    ),
                };
                Err(Failure { message, code: 2 })
            }
        }
    }

    /// `drill POLICY [--timeout]`: exit 0 when the drill passed, 1 when it failed, 2 when
    /// the wait ran out.
    pub async fn drill(&self, name: &str, timeout: Duration) -> Result<ExitCode> {
        let p = self.fetch_policy(name).await?;
        let st = p.status.clone().unwrap_or_default();
        let remembered = st.last_drill.as_ref().map(|r| r.started.clone());
        if let Some(d) = &st.drill {
            eprintln!(
                "note: a drill is under way already (stage {}, started {}); its report is the one this waits for",
                d.stage,
                d.report.started.0.strftime("%H:%M:%S UTC")
            );
        }
        let token = token();
        self.annotate(name, requests::DRILL, &token).await?;
        // The stage as it changes, for a person watching.
        let show_stage = self.output.is_none() && std::io::stdout().is_terminal();
        let mut stage = String::new();
        let waited = self
            .wait_policy(name, requests::DRILL, &token, timeout, |p| {
                if show_stage
                    && let Some(d) = p.status.as_ref().and_then(|s| s.drill.as_ref())
                    && d.stage != stage
                {
                    stage.clone_from(&d.stage);
                    println!(
                        "{name}: drill {}: {} → {}",
                        d.stage, d.report.from, d.report.to
                    );
                }
                drill_outcome(p, remembered.as_ref())
            })
            .await?;
        match waited {
            Waited::Done(DrillOutcome::Refused(why), p) => {
                if let Some(o) = self.output {
                    print_as(&p, o)?;
                }
                Err(Failure::new(format!("{name}: {why}")))
            }
            Waited::Done(DrillOutcome::Report(report), _) => {
                match self.output {
                    Some(o) => print_as(&report, o)?,
                    None => print!("{}", render_report(&report, width(), colour())),
                }
                Ok(if report.verdict.as_deref() == Some("Passed") {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Waited::Timeout(last, acked) => {
                let message = match last.as_deref() {
                    Some(p) if acked => format!(
                        "{name}: no drill report within {}: {}",
                        duration_text(timeout),
                        describe(p)
                    ),
                    _ => format!(
                        "{name}: the controller has not acknowledged the drill request within {}; is cutover-controller running? (the request stays in the annotation {key} and is acted on when the controller runs; kubectl annotate failoverpolicy {name} {key}- withdraws it)",
                        duration_text(timeout),
                        key = requests::DRILL
                    ),
                };
                Err(Failure { message, code: 2 })
            }
        }
    }
}

/// Seconds as short as they go: `30s`, `0.5s`, `1.234s`.
fn seconds(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

/// `<measured> (target <t>)`, or `not measured`.
fn with_target(measured: Option<String>, target: Option<f64>) -> String {
    let mut out = measured.unwrap_or_else(|| "not measured".into());
    if let Some(t) = target {
        out.push_str(&format!(" (target {})", seconds(t)));
    }
    out
}

/// `text` after `prefix`, in lines of at most `width` columns: words stay whole unless one
/// is longer than a line; the lines after the first are indented as far as `prefix` goes
/// (less when that would leave under 20 columns).
fn wrap(prefix: &str, text: &str, width: usize) -> Vec<String> {
    let mut len = prefix.chars().count();
    let indent = len.min(width.saturating_sub(20));
    let pad = " ".repeat(indent);
    let mut lines = Vec::new();
    let mut line = prefix.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let room = width.saturating_sub(len + usize::from(!empty));
            if word.len() <= room {
                if !empty {
                    line.push(' ');
                    len += 1;
                }
                line.extend(&word);
                len += word.len();
                empty = false;
                break;
            }
            if !empty {
                lines.push(std::mem::replace(&mut line, pad.clone()));
                len = indent;
                empty = true;
                continue;
            }
            // Longer than a whole line: split it.
            let rest = word.split_off(room.max(1));
            line.extend(&word);
            lines.push(std::mem::replace(&mut line, pad.clone()));
            len = indent;
            word = rest;
        }
    }
    if !empty || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// A drill's report for a person, in lines of at most `width` columns.
pub fn render_report(r: &DrillReport, width: usize, colour: bool) -> String {
    let verdict = r.verdict.as_deref().unwrap_or("Running");
    let code = if verdict == "Passed" { "32" } else { "31" };
    let route = if r.to.is_empty() {
        r.from.clone()
    } else {
        format!("{} → {} → {}", r.from, r.to, r.from)
    };
    let mut lines = vec![format!("drill {}: {route}", paint(verdict, code, colour))];
    let mut when = format!(
        "started {} by {}",
        r.started.0.strftime("%Y-%m-%d %H:%M:%S UTC"),
        r.trigger
    );
    if let Some(f) = &r.finished {
        let took = f.0.duration_since(r.started.0).as_secs_f64().max(0.0);
        when.push_str(&format!(", took {}", seconds(took)));
    }
    lines.push(when);
    lines.push(format!(
        "RTO {}",
        with_target(r.rto_seconds.map(seconds), r.rto_target_seconds)
    ));
    let rpo = match (r.rpo_seconds, r.rpo_bytes) {
        (Some(s), Some(b)) => Some(format!("{}, {b} bytes", seconds(s))),
        (Some(s), None) => Some(seconds(s)),
        (None, Some(b)) => Some(format!("{b} bytes")),
        (None, None) => None,
    };
    lines.push(format!("RPO {}", with_target(rpo, r.rpo_target_seconds)));
    lines.push(format!(
        "requests through the entry: {}, failed: {}",
        r.requests, r.requests_failed
    ));
    if let Some(m) = r.message.as_deref().filter(|m| !m.trim().is_empty()) {
        lines.extend(wrap("", m, width));
    }
    if !r.steps.is_empty() {
        lines.push(String::new());
        for s in &r.steps {
            let at = format!("{}  ", s.time.0.strftime("%H:%M:%S%.3f"));
            lines.extend(wrap(&at, &s.step, width));
        }
    }
    if let Some(cm) = &r.config_map {
        lines.push(String::new());
        lines.push(format!("report: ConfigMap {cm}"));
    }
    lines
        .iter()
        .map(|l| cut(l, width) + "\n")
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(status: serde_json::Value) -> FailoverPolicy {
        serde_json::from_value(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
            "metadata": { "name": "shop" },
            "spec": {
                "members": [
                    { "name": "east", "blueGreenDeployment": "shop" },
                    { "name": "west", "blueGreenDeployment": "shop" }
                ],
                "entry": { "httpRoute": { "name": "shop" } }
            },
            "status": status
        }))
        .expect("a valid FailoverPolicy")
    }

    fn report(extra: serde_json::Value) -> DrillReport {
        let mut v = json!({
            "started": "2025-03-03T03:00:00Z",
            "finished": "2025-03-03T03:00:12.5Z",
            "trigger": "request",
            "from": "east",
            "to": "west",
            "steps": [
                { "time": "2025-03-03T03:00:00Z", "step": "drill started (request)" },
                { "time": "2025-03-03T03:00:01.234Z", "step": "west answers through the entry" }
            ],
            "rtoSeconds": 1.234,
            "rpoSeconds": 0.2,
            "rpoBytes": 4096,
            "rtoTargetSeconds": 30.0,
            "rpoTargetSeconds": 1.0,
            "requests": 120,
            "requestsFailed": 2,
            "verdict": "Passed",
            "message": "RTO and RPO within their targets",
            "configMap": "shop-drill-20250303-030000"
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in extra {
                v.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("a valid DrillReport")
    }

    fn visible(line: &str) -> usize {
        let mut n = 0;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn the_report_says_verdict_route_targets_requests_and_steps() {
        let text = render_report(&report(json!({})), 80, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "drill Passed: east → west → east");
        assert_eq!(
            lines[1],
            "started 2025-03-03 03:00:00 UTC by request, took 12.5s"
        );
        assert!(lines.contains(&"RTO 1.234s (target 30s)"), "{text}");
        assert!(
            lines.contains(&"RPO 0.2s, 4096 bytes (target 1s)"),
            "{text}"
        );
        assert!(
            lines.contains(&"requests through the entry: 120, failed: 2"),
            "{text}"
        );
        assert!(
            lines.contains(&"RTO and RPO within their targets"),
            "{text}"
        );
        assert!(
            lines.contains(&"03:00:00.000  drill started (request)"),
            "{text}"
        );
        assert!(
            lines.contains(&"03:00:01.234  west answers through the entry"),
            "{text}"
        );
        assert_eq!(
            lines.last(),
            Some(&"report: ConfigMap shop-drill-20250303-030000")
        );
    }

    #[test]
    fn targets_only_when_set_and_unmeasured_values_say_so() {
        let r = report(json!({
            "rtoSeconds": null, "rtoTargetSeconds": null,
            "rpoBytes": null, "rpoTargetSeconds": 0.5, "rpoSeconds": 2.0
        }));
        let text = render_report(&r, 80, false);
        assert!(text.lines().any(|l| l == "RTO not measured"), "{text}");
        assert!(text.lines().any(|l| l == "RPO 2s (target 0.5s)"), "{text}");
        let r = report(json!({ "rpoSeconds": null, "rpoBytes": null, "rpoTargetSeconds": null }));
        let text = render_report(&r, 80, false);
        assert!(text.lines().any(|l| l == "RPO not measured"), "{text}");
        assert_eq!(seconds(30.0), "30s");
        assert_eq!(seconds(0.25), "0.25s");
        assert_eq!(seconds(1.2344), "1.234s");
        assert_eq!(seconds(0.0), "0s");
    }

    #[test]
    fn the_header_shows_a_failed_verdict_in_red_only_with_colour() {
        let r = report(json!({ "verdict": "Failed", "message": "RTO 45s over the target 30s" }));
        let plain = render_report(&r, 80, false);
        assert!(
            plain.starts_with("drill Failed: east → west → east\n"),
            "{plain}"
        );
        assert!(!plain.contains('\x1b'));
        let coloured = render_report(&r, 80, true);
        assert!(
            coloured.starts_with("drill \x1b[31mFailed\x1b[0m: east"),
            "{coloured:?}"
        );
        let passed = render_report(&report(json!({})), 80, true);
        assert!(
            passed.starts_with("drill \x1b[32mPassed\x1b[0m"),
            "{passed:?}"
        );
        // A drill that did not run has no target member.
        let not_run = report(
            json!({ "verdict": "Failed", "to": "", "message": "drill not run: no healthy standby to drill on" }),
        );
        assert!(render_report(&not_run, 80, false).starts_with("drill Failed: east\n"));
    }

    #[test]
    fn the_report_fits_80_columns_and_wraps_long_text_whole() {
        let long = "the standby answered through the entry only after the health checks of the old primary had failed three times in a row, which is slower than the target allows";
        let r = report(json!({
            "from": "a-member-of-20-chars",
            "to": "b-member-of-20-chars",
            "message": long,
            "steps": [
                { "time": "2025-03-03T03:00:00Z", "step": long },
                { "time": "2025-03-03T03:00:01Z", "step": format!("url https://{}.example/healthz", "x".repeat(120)) }
            ],
            "configMap": format!("{}-drill-20250303-030000", "p".repeat(40)),
        }));
        for colour in [false, true] {
            let text = render_report(&r, 80, colour);
            for l in text.lines() {
                assert!(visible(l) <= 80, "over 80 columns: {l:?}");
            }
            assert!(!text.contains('…'), "nothing cut:\n{text}");
            // Whole words, every one of them kept.
            let words: Vec<&str> = text.split_whitespace().collect();
            assert!(
                long.split_whitespace().all(|w| words.contains(&w)),
                "{text}"
            );
        }
        let text = render_report(&r, 80, false);
        let step = text
            .lines()
            .position(|l| l.starts_with("03:00:00.000  the standby"))
            .expect("the step");
        let next = text.lines().nth(step + 1).expect("a continuation");
        assert!(
            next.starts_with(&" ".repeat(14)) && !next.starts_with(&" ".repeat(15)),
            "continuations line up under the text: {next:?}"
        );
        // Narrower terminals too.
        for l in render_report(&r, 40, false).lines() {
            assert!(l.chars().count() <= 40, "over 40 columns: {l:?}");
        }
    }

    #[test]
    fn wrapping_keeps_words_and_splits_only_overlong_ones() {
        assert_eq!(wrap("", "a b c", 80), vec!["a b c"]);
        assert_eq!(wrap("", "", 80), vec![""]);
        assert_eq!(wrap("> ", "aaa bbb ccc", 9), vec!["> aaa bbb", "ccc"]);
        let text = "aaa bbb ccc ddd eee fff";
        assert_eq!(wrap("> ", text, 23), vec!["> aaa bbb ccc ddd eee", "  fff"]);
        assert_eq!(wrap("", "abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn the_target_must_be_a_member_and_not_the_active_one() {
        let p = policy(json!({ "activeMember": "east" }));
        assert!(check_target(&p, None).is_ok());
        assert!(check_target(&p, Some("west")).is_ok());
        let e = check_target(&p, Some("nope")).expect_err("no such member");
        assert_eq!(e.code, 1);
        assert!(
            e.message.contains("\"nope\"") && e.message.contains("members: east, west"),
            "{e}"
        );
        let e = check_target(&p, Some("east")).expect_err("already active");
        assert!(e.message.contains("already active"), "{e}");
        // No status yet: any member will do.
        assert!(check_target(&policy(json!({})), Some("east")).is_ok());
    }

    #[test]
    fn the_annotation_starts_with_the_token() {
        assert_eq!(failover_value("t1", None, false), "t1");
        assert_eq!(failover_value("t1", Some("west"), false), "t1 to=west");
        assert_eq!(failover_value("t1", Some("west"), true), "t1 to=west force");
        assert_eq!(failover_value("t1", None, true), "t1 force");
    }

    #[test]
    fn outcomes_moved_refused_or_still_going() {
        let moved = policy(json!({ "activeMember": "west", "message": "traffic on west" }));
        assert_eq!(
            outcome(&moved, Some("east"), None),
            Some(Outcome::Moved("west".into()))
        );
        let moving = policy(json!({ "activeMember": "east", "moving": {
            "from": "east", "to": "west", "started": "2025-03-03T03:00:00Z" },
            "message": "waiting for east's database to be fenced" }));
        assert_eq!(outcome(&moving, Some("east"), Some("west")), None);
        let refused = policy(json!({ "activeMember": "east",
            "message": "failover to west refused: its replication lag in seconds is unknown" }));
        assert_eq!(
            outcome(&refused, Some("east"), Some("west")),
            Some(Outcome::Refused(
                "failover to west refused: its replication lag in seconds is unknown".into()
            ))
        );
        let quiet = policy(json!({ "activeMember": "east", "message": "east is healthy" }));
        assert_eq!(outcome(&quiet, Some("east"), None), None);
        assert_eq!(outcome(&policy(json!({})), None, None), None);
        // Traffic already where it was asked to go.
        assert_eq!(
            outcome(&moved, Some("west"), Some("west")),
            Some(Outcome::Moved("west".into()))
        );
    }

    #[test]
    fn a_drill_the_controller_refused_ends_the_wait_with_its_reason() {
        let refused = policy(json!({ "activeMember": "east",
            "message": "drill refused: spec.entry: set httpRoute" }));
        assert_eq!(
            drill_outcome(&refused, None),
            Some(DrillOutcome::Refused(
                "drill refused: spec.entry: set httpRoute".into()
            ))
        );
        let quiet = policy(json!({ "activeMember": "east", "message": "east is healthy" }));
        assert_eq!(drill_outcome(&quiet, None), None);
    }

    #[test]
    fn acknowledgement_and_a_new_report() {
        let p = policy(json!({
            "handledRequests": { "cutover.dev/drill": "t2" },
            "lastDrill": report(json!({})),
        }));
        assert!(acknowledged(&p, requests::DRILL, "t2"));
        assert!(!acknowledged(&p, requests::DRILL, "t1"));
        assert!(!acknowledged(&p, requests::FAILOVER, "t2"));
        let earlier: Time = serde_json::from_value(json!("2025-03-03T02:00:00Z")).expect("time");
        let same: Time = serde_json::from_value(json!("2025-03-03T03:00:00Z")).expect("time");
        assert!(new_report(&p, None).is_some());
        assert!(new_report(&p, Some(&earlier)).is_some());
        assert!(new_report(&p, Some(&same)).is_none());
        let running = policy(json!({ "lastDrill": report(json!({ "verdict": null })) }));
        assert!(new_report(&running, None).is_none());
    }

    #[test]
    fn durations_read_like_the_flag() {
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_text(Duration::from_secs(0)), "0s");
    }
}
