//! Status conditions: what the controller means now ([`Wanted`]) merged into what the
//! object says ([`merge`]), keeping `lastTransitionTime` while a condition's status holds.
//! Shared by every object the controller writes a status for.

use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as the controller means it now (its time filled in by [`merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// A sentence.
    pub message: String,
}

impl Wanted {
    /// Condition `type_` with `status`, `reason` and `message`.
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: &str) -> Self {
        Wanted {
            type_,
            status,
            reason,
            message: message.to_string(),
        }
    }
}

/// Merge `wanted` into `old`: unchanged statuses keep their `lastTransitionTime`; types not
/// in `wanted` are kept as they were.
pub fn merge(
    old: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = old.to_vec();
    for w in wanted {
        let status = if w.status { "True" } else { "False" };
        let previous = out.iter().position(|c| c.type_ == w.type_);
        let last_transition_time = match previous.map(|i| &out[i]) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => now.clone(),
        };
        let cond = Condition {
            type_: w.type_.to_string(),
            status: status.to_string(),
            reason: w.reason.to_string(),
            message: w.message.clone(),
            observed_generation: generation,
            last_transition_time,
        };
        match previous {
            Some(i) => out[i] = cond,
            None => out.push(cond),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    #[test]
    fn merge_keeps_transition_time_when_status_is_unchanged() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:05:00Z");
        let first = merge(
            &[],
            &[Wanted::new("Paused", true, "WaitingForPromotion", "a")],
            Some(1),
            &t0,
        );
        let same = merge(
            &first,
            &[Wanted::new("Paused", true, "WaitingForPromotion", "b")],
            Some(2),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].message, "b");
        let flipped = merge(
            &same,
            &[Wanted::new("Paused", false, "NotPaused", "c")],
            Some(2),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped.len(), 1);
    }
}
