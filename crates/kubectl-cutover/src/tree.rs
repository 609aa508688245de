//! The `get` view of a BlueGreenDeployment, without I/O: a tree of its colors (revision,
//! image, ready pods), traffic weight, step, analysis verdicts and recent events, every line
//! cut to the terminal width. Colour only when asked (a terminal).

use std::fmt::Write as _;

use cutover_api::analysis::{AnalysisPhase, AnalysisRun};
use cutover_api::{BlueGreenDeployment, Color, Phase};

/// One Event as shown.
#[derive(Debug, Clone)]
pub struct EventLine {
    /// Seconds since it was last seen.
    pub age_seconds: i64,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
    /// Warning (rather than Normal).
    pub warning: bool,
}

/// What the view shows.
#[derive(Debug)]
pub struct View<'a> {
    /// The object.
    pub bgd: &'a BlueGreenDeployment,
    /// Its analysis runs, newest first.
    pub runs: &'a [AnalysisRun],
    /// Its recent events, newest first.
    pub events: &'a [EventLine],
    /// Width to cut lines to.
    pub width: usize,
    /// ANSI colours.
    pub colour: bool,
}

pub(crate) fn paint(text: &str, code: &str, on: bool) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn color_name(c: Color) -> &'static str {
    match c {
        Color::Blue => "blue",
        Color::Green => "green",
    }
}

fn phase_name(p: Option<Phase>) -> &'static str {
    match p {
        Some(Phase::Healthy) => "Healthy",
        Some(Phase::Progressing) => "Progressing",
        Some(Phase::Paused) => "Paused",
        Some(Phase::Degraded) => "Degraded",
        None => "Unknown",
    }
}

fn analysis_name(p: Option<AnalysisPhase>) -> &'static str {
    match p {
        Some(AnalysisPhase::Running) => "Running",
        Some(AnalysisPhase::Successful) => "Successful",
        Some(AnalysisPhase::Failed) => "Failed",
        Some(AnalysisPhase::Inconclusive) => "Inconclusive",
        Some(AnalysisPhase::Error) => "Error",
        None => "Pending",
    }
}

/// Cut `line` to `width` visible characters (colour codes do not count).
pub(crate) fn cut(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut visible = 0;
    let mut chars = line.chars().peekable();
    let mut truncated = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            for d in chars.by_ref() {
                out.push(d);
                if d == 'm' {
                    break;
                }
            }
            continue;
        }
        if visible + 1 > width {
            truncated = true;
            continue;
        }
        out.push(c);
        visible += 1;
    }
    if truncated && width > 0 {
        // Replace the last visible character with an ellipsis.
        if let Some(pos) = out.rfind(|c: char| c != '\x1b' && !c.is_ascii_control()) {
            let ch_len = out[pos..].chars().next().map_or(1, char::len_utf8);
            out.replace_range(pos..pos + ch_len, "…");
        }
    }
    out
}

/// Short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The step the release is at, as words.
fn step_text(bgd: &BlueGreenDeployment) -> Option<String> {
    let steps = &bgd.spec.strategy.steps;
    if steps.is_empty() {
        return None;
    }
    let st = bgd.status.as_ref()?;
    let i = st.current_step_index?;
    let total = steps.len();
    let idx = usize::try_from(i).ok()?;
    let what = match steps.get(idx) {
        None => "all steps done".to_string(),
        Some(s) => {
            if let Some(w) = s.set_weight {
                format!("setWeight {w}")
            } else if let Some(p) = &s.pause {
                match &p.duration {
                    Some(d) => format!("pause {d}"),
                    None => "pause (until promote)".to_string(),
                }
            } else if let Some(a) = &s.analysis {
                format!(
                    "analysis {}",
                    a.templates
                        .iter()
                        .map(|t| t.template_name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            } else if s.set_header_route.is_some() {
                "setHeaderRoute".to_string()
            } else if let Some(m) = &s.set_mirror {
                format!("setMirror {}%", m.percent)
            } else {
                "step".to_string()
            }
        }
    };
    Some(format!("{} of {total}: {what}", (idx + 1).min(total)))
}

/// Render the tree.
pub fn render(v: &View<'_>) -> String {
    let b = v.bgd;
    let st = b.status.clone().unwrap_or_default();
    let name = b.metadata.name.clone().unwrap_or_default();
    let ns = b.metadata.namespace.clone().unwrap_or_default();
    let phase = phase_name(st.phase);
    let phase_code = match st.phase {
        Some(Phase::Healthy) => "32",
        Some(Phase::Degraded) => "31",
        _ => "33",
    };
    let mut lines: Vec<String> = Vec::new();
    lines.push(format!(
        "{}  {}  {}",
        paint(&name, "1", v.colour),
        paint(phase, phase_code, v.colour),
        format_args!("namespace {ns}")
    ));
    let active = st.active_color;
    let release_color = st.release.as_ref().and_then(|r| r.color);
    let standby = st.standby.as_ref().and_then(|s| s.color);
    for color in [Color::Blue, Color::Green] {
        let cs = st.color(color).cloned();
        let role = if Some(color) == active {
            "live"
        } else if Some(color) == release_color {
            "new"
        } else if Some(color) == standby {
            "standby"
        } else {
            "idle"
        };
        let cname = paint(
            &format!("{:<5}", color_name(color)),
            if color == Color::Blue { "34" } else { "32" },
            v.colour,
        );
        let place = cs
            .as_ref()
            .and_then(|cs| match (&cs.namespace, &cs.cluster) {
                (None, None) => None,
                (ns, None) => Some(format!("namespace {}", ns.as_deref().unwrap_or_default())),
                (ns, Some(c)) => Some(format!(
                    "namespace {} in cluster {c}",
                    ns.as_deref()
                        .unwrap_or(v.bgd.metadata.namespace.as_deref().unwrap_or_default())
                )),
            });
        let line = match cs {
            Some(cs) => {
                let weight = if Some(color) == active {
                    100 - if release_color.is_some() {
                        st.weight.clamp(0, 100)
                    } else {
                        0
                    }
                } else if Some(color) == release_color {
                    st.weight.clamp(0, 100)
                } else {
                    0
                };
                format!(
                    "├─ {cname} {role:<7} rev {:<3} {:>3}%  {}/{} ready  {}",
                    cs.revision,
                    weight,
                    cs.ready_replicas,
                    cs.replicas,
                    cs.image.unwrap_or_default()
                )
            }
            None => format!("├─ {cname} {role:<7} (no Deployment)"),
        };
        lines.push(line);
        if let Some(place) = place {
            lines.push(format!("│        in {place}"));
        }
    }
    if let Some(step) = step_text(b) {
        lines.push(format!("├─ step      {step}"));
    }
    // The newest run per gate, of the revision being released (or live).
    let revision = st
        .release
        .as_ref()
        .map(|r| r.revision)
        .or_else(|| st.revision_of(active))
        .map(|r| r.to_string());
    let mut seen = Vec::new();
    let mut verdicts = Vec::new();
    for run in v.runs.iter().filter(|r| {
        revision.is_none()
            || r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("cutover.dev/revision"))
                == revision.as_ref()
    }) {
        let gate = run
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("cutover.dev/gate"))
            .cloned()
            .unwrap_or_else(|| "analysis".into());
        if seen.contains(&gate) {
            continue;
        }
        seen.push(gate.clone());
        let phase = run.status.as_ref().and_then(|s| s.phase);
        let code = match phase {
            Some(AnalysisPhase::Successful) => "32",
            Some(AnalysisPhase::Failed) | Some(AnalysisPhase::Error) => "31",
            _ => "33",
        };
        verdicts.push(format!(
            "{gate} {}",
            paint(analysis_name(phase), code, v.colour)
        ));
    }
    if !verdicts.is_empty() {
        lines.push(format!("├─ analysis  {}", verdicts.join(", ")));
    }
    if let Some(m) = &st.message {
        lines.push(format!("├─ message   {m}"));
    }
    if v.events.is_empty() {
        lines.push("└─ events    none".to_string());
    } else {
        lines.push("└─ events".to_string());
        for e in v.events.iter().take(5) {
            let reason = paint(
                &format!("{:<16}", e.reason),
                if e.warning { "31" } else { "0" },
                v.colour && e.warning,
            );
            lines.push(format!(
                "   {:>4}  {reason} {}",
                age(e.age_seconds),
                e.message
            ));
        }
    }
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "{}", cut(&l, v.width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_the_width_ignoring_colour_codes() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        let coloured = paint("abcdef", "31", true);
        let c = cut(&coloured, 4);
        assert!(c.starts_with("\x1b[31m") && c.contains('…'), "{c:?}");
    }

    fn run(gate: &str, revision: i64, phase: &str) -> AnalysisRun {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": { "name": format!("{gate}-{revision}"),
                "labels": { "cutover.dev/gate": gate, "cutover.dev/revision": revision.to_string() } },
            "spec": { "metrics": [] },
            "status": { "phase": phase }
        }))
        .expect("run")
    }

    #[test]
    fn the_tree_shows_roles_weights_and_the_release_s_own_verdicts() {
        let bgd: BlueGreenDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "web" },
            "spec": {
                "selector": { "matchLabels": { "app": "shop" } },
                "template": { "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [{ "name": "app", "image": "shop:3" }] } },
                "service": { "port": 80 },
                "trafficRouting": { "gatewayAPI": { "httpRoute": "shop" } },
                "strategy": { "steps": [{ "setWeight": 20 }, { "pause": {} }] }
            },
            "status": {
                "phase": "Paused", "activeColor": "green", "weight": 20, "currentStepIndex": 1,
                "blue": { "revision": 3, "podTemplateHash": "b", "image": "shop:3", "replicas": 2, "readyReplicas": 2 },
                "green": { "revision": 2, "podTemplateHash": "g", "image": "shop:2", "replicas": 2, "readyReplicas": 2,
                           "namespace": "web-dr", "cluster": "west-kubeconfig" },
                "release": { "color": "blue", "revision": 3, "templateHash": "b", "startedAt": "", "attempt": 1, "stepIndex": 1 },
                "message": "step 1: paused until `kubectl cutover promote`"
            }
        }))
        .expect("bgd");
        let runs = [run("step-0", 3, "Successful"), run("step-5", 2, "Failed")];
        let text = render(&View {
            bgd: &bgd,
            runs: &runs,
            events: &[],
            width: 80,
            colour: false,
        });
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("blue").contains("new")
                && line("blue").contains(" 20%")
                && line("blue").contains("shop:3"),
            "{text}"
        );
        assert!(
            line("green").contains("live") && line("green").contains(" 80%"),
            "{text}"
        );
        assert!(
            line("in namespace").contains("namespace web-dr in cluster west-kubeconfig"),
            "{text}"
        );
        assert!(
            line("step").contains("2 of 2: pause (until promote)"),
            "{text}"
        );
        assert!(
            line("analysis").contains("step-0 Successful") && !text.contains("step-5"),
            "{text}"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }
}
