//! Status of a BlueGreenDeployment: memory to and from status fields, and conditions merged
//! so that `lastTransitionTime` moves only when a condition's status changes. Pure.

use crate::clock::{parse_time, rfc3339};
pub use crate::conditions::Wanted;
use cutover_api::blue_green::{ReleaseStatus, StandbyStatus};
use cutover_api::{BlueGreenDeploymentStatus, Color as ApiColor, Phase as ApiPhase};
use cutover_core::Color;
use cutover_core::release::{Cause, Memory, Phase, Release, StandbyState};

/// API color from core color.
pub fn api_color(c: Color) -> ApiColor {
    match c {
        Color::Blue => ApiColor::Blue,
        Color::Green => ApiColor::Green,
    }
}

/// Core color from API color.
pub fn core_color(c: ApiColor) -> Color {
    match c {
        ApiColor::Blue => Color::Blue,
        ApiColor::Green => Color::Green,
    }
}

/// API phase from core phase.
pub fn api_phase(p: Phase) -> ApiPhase {
    match p {
        Phase::Healthy => ApiPhase::Healthy,
        Phase::Progressing => ApiPhase::Progressing,
        Phase::Paused => ApiPhase::Paused,
        Phase::Degraded => ApiPhase::Degraded,
    }
}

/// What the controller remembered, read from status.
pub fn memory_from(status: Option<&BlueGreenDeploymentStatus>) -> Memory {
    let Some(s) = status else {
        return Memory::default();
    };
    Memory {
        active: s.active_color.map(core_color),
        release: s.release.as_ref().and_then(|r| {
            Some(Release {
                color: core_color(r.color?),
                template_hash: r.template_hash.clone(),
                revision: r.revision,
                started_at: parse_time(&r.started_at)?,
                available_at: r.available_at.as_deref().and_then(parse_time),
                aborted: r.abort_reason.clone(),
                attempt: r.attempt,
                promoted_at: r.promoted_at.as_deref().and_then(parse_time),
                step_index: r.step_index,
                step_started_at: r.step_started_at.as_deref().and_then(parse_time),
            })
        }),
        standby: s.standby.as_ref().and_then(|sb| {
            Some(StandbyState {
                color: core_color(sb.color?),
                since: parse_time(&sb.since)?,
            })
        }),
        latest_revision: s.latest_revision,
    }
}

/// Write `memory` into `status`.
pub fn write_memory(status: &mut BlueGreenDeploymentStatus, memory: &Memory) {
    status.active_color = memory.active.map(api_color);
    status.release = memory.release.as_ref().map(|r| ReleaseStatus {
        color: Some(api_color(r.color)),
        revision: r.revision,
        template_hash: r.template_hash.clone(),
        started_at: rfc3339(r.started_at),
        available_at: r.available_at.map(rfc3339),
        abort_reason: r.aborted.clone(),
        attempt: r.attempt,
        promoted_at: r.promoted_at.map(rfc3339),
        step_index: r.step_index,
        step_started_at: r.step_started_at.map(rfc3339),
    });
    status.abort = memory.release.as_ref().is_some_and(|r| r.aborted.is_some());
    status.standby = memory.standby.map(|sb| StandbyStatus {
        color: Some(api_color(sb.color)),
        since: rfc3339(sb.since),
    });
    status.latest_revision = memory.latest_revision;
}

fn want(type_: &'static str, status: bool, reason: &'static str, message: &str) -> Wanted {
    Wanted::new(type_, status, reason, message)
}

/// The conditions for a plan's phase and cause.
pub fn conditions_for(phase: Phase, cause: Cause, message: &str) -> Vec<Wanted> {
    let available = !matches!(cause, Cause::LiveNotReady | Cause::InitialRollout);
    let progressing = match cause {
        Cause::Steady => want(
            "Progressing",
            false,
            "ReleaseComplete",
            "no release under way",
        ),
        Cause::ProgressDeadlineExceeded => {
            want("Progressing", false, "ProgressDeadlineExceeded", message)
        }
        Cause::Aborted => want("Progressing", false, "ReleaseAborted", message),
        Cause::LiveNotReady => want("Progressing", false, "LiveNotReady", message),
        Cause::InitialRollout => want("Progressing", true, "InitialRollout", message),
        Cause::WaitingForColor => want("Progressing", true, "WaitingForNewColor", message),
        Cause::AutoPromotionDelay => want("Progressing", true, "AutoPromotionDelay", message),
        Cause::WaitingForPromotion | Cause::PausedBySpec => {
            want("Progressing", true, "NewColorAvailable", message)
        }
        Cause::Analysing => want("Progressing", true, "Analysing", message),
        Cause::AnalysisHeld => want("Progressing", true, "AnalysisHeld", message),
        Cause::RolledBack => want("Progressing", false, "RolledBack", message),
        Cause::Stepping => want("Progressing", true, "Stepping", message),
        Cause::PausedByStep => want("Progressing", true, "PausedByStep", message),
    };
    let paused = match cause {
        Cause::WaitingForPromotion => want("Paused", true, "WaitingForPromotion", message),
        Cause::PausedBySpec => want("Paused", true, "PausedBySpec", message),
        Cause::AnalysisHeld => want("Paused", true, "AnalysisHeld", message),
        Cause::PausedByStep => want("Paused", true, "PausedByStep", message),
        _ => want("Paused", false, "NotPaused", "the release is not paused"),
    };
    let degraded = match (phase, cause) {
        (Phase::Degraded, Cause::Aborted) => want("Degraded", true, "Aborted", message),
        (Phase::Degraded, Cause::ProgressDeadlineExceeded) => {
            want("Degraded", true, "ProgressDeadlineExceeded", message)
        }
        (Phase::Degraded, Cause::RolledBack) => want("Degraded", true, "RolledBack", message),
        (Phase::Degraded, _) => want("Degraded", true, "LiveNotReady", message),
        _ => want("Degraded", false, "AsExpected", "nothing is wrong"),
    };
    vec![
        if available {
            want(
                "Available",
                true,
                "LiveColorAvailable",
                "the live color has all pods ready",
            )
        } else {
            want("Available", false, "LiveColorUnavailable", message)
        },
        progressing,
        paused,
        degraded,
        want("InvalidSpec", false, "SpecAccepted", "the spec is valid"),
    ]
    .into_iter()
    .chain(readiness(phase, message))
    .collect()
}

/// `Ready` (for `kubectl wait --for=condition=Ready`), and kstatus' `Reconciling` and
/// `Stalled` (Flux, kpt, `kubectl` status readers): Ready once all traffic is on a fully
/// available live color with no release under way; Reconciling while a release (or a
/// paused one) is under way; Stalled when it is degraded and waits for a person.
fn readiness(phase: Phase, message: &str) -> [Wanted; 3] {
    let (ready, reconciling, stalled) = match phase {
        Phase::Healthy => (
            want("Ready", true, "Healthy", message),
            want("Reconciling", false, "Healthy", "no release under way"),
            want("Stalled", false, "Healthy", "nothing is wrong"),
        ),
        Phase::Progressing | Phase::Paused => {
            let reason = if phase == Phase::Paused {
                "Paused"
            } else {
                "Progressing"
            };
            (
                want("Ready", false, reason, message),
                want("Reconciling", true, reason, message),
                want("Stalled", false, reason, "nothing is wrong"),
            )
        }
        Phase::Degraded => (
            want("Ready", false, "Degraded", message),
            want("Reconciling", false, "Degraded", message),
            want("Stalled", true, "Degraded", message),
        ),
    };
    [ready, reconciling, stalled]
}

/// Conditions for a spec (or environment) the controller cannot act on.
pub fn invalid_spec_conditions(reason: &'static str, message: &str) -> Vec<Wanted> {
    let mut wanted = vec![
        want("Degraded", true, reason, message),
        want("InvalidSpec", true, reason, message),
    ];
    wanted.extend(readiness(Phase::Degraded, message));
    wanted
}

/// Conditions while a color's place cannot be reached: the release waits.
pub fn unreachable_conditions(message: &str) -> Vec<Wanted> {
    vec![
        want("Degraded", true, "ClusterUnreachable", message),
        want("Ready", false, "ClusterUnreachable", message),
        // Transient: the release resumes when the place answers again.
        want("Reconciling", true, "ClusterUnreachable", message),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::release::Timestamp;

    fn status_of(wanted: &[Wanted], type_: &str) -> Option<bool> {
        wanted.iter().find(|w| w.type_ == type_).map(|w| w.status)
    }

    #[test]
    fn ready_reconciling_and_stalled_follow_the_phase_for_kubectl_wait_and_kstatus() {
        let cases = [
            (Phase::Healthy, Cause::Steady, (true, false, false)),
            (Phase::Progressing, Cause::Stepping, (false, true, false)),
            (Phase::Paused, Cause::PausedByStep, (false, true, false)),
            (Phase::Degraded, Cause::Aborted, (false, false, true)),
            (Phase::Degraded, Cause::LiveNotReady, (false, false, true)),
        ];
        for (phase, cause, (ready, reconciling, stalled)) in cases {
            let w = conditions_for(phase, cause, "m");
            assert_eq!(status_of(&w, "Ready"), Some(ready), "{phase:?}");
            assert_eq!(status_of(&w, "Reconciling"), Some(reconciling), "{phase:?}");
            assert_eq!(status_of(&w, "Stalled"), Some(stalled), "{phase:?}");
        }
        let invalid = invalid_spec_conditions("MissingRoute", "m");
        assert_eq!(status_of(&invalid, "Ready"), Some(false));
        assert_eq!(status_of(&invalid, "Stalled"), Some(true));
        let away = unreachable_conditions("m");
        assert_eq!(status_of(&away, "Ready"), Some(false));
        assert_eq!(status_of(&away, "Reconciling"), Some(true));
    }

    #[test]
    fn memory_round_trips_through_status() {
        let memory = Memory {
            active: Some(Color::Green),
            release: Some(Release {
                color: Color::Blue,
                template_hash: "abc".into(),
                revision: 4,
                started_at: Timestamp(1_700_000_000_000),
                available_at: Some(Timestamp(1_700_000_005_000)),
                aborted: Some("why".into()),
                attempt: 2,
                promoted_at: Some(Timestamp(1_700_000_006_000)),
                step_index: 3,
                step_started_at: Some(Timestamp(1_700_000_007_000)),
            }),
            standby: Some(StandbyState {
                color: Color::Blue,
                since: Timestamp(1_700_000_001_000),
            }),
            latest_revision: 4,
        };
        let mut status = BlueGreenDeploymentStatus::default();
        write_memory(&mut status, &memory);
        assert!(status.abort);
        assert_eq!(memory_from(Some(&status)), memory);
    }
}
