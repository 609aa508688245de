//! Measurements, and what they add up to: a metric's phase, a run's phase, and when the
//! next measurement is due.
//!
//! Verdicts are taken from a [`Tally`], kept up to date as measurements come in. The list of
//! [`Measurement`]s is for display (the AnalysisRun status, `kubectl cutover get`) and may be
//! shortened with [`cap`] without changing any verdict.

use std::time::Duration;

use crate::release::Timestamp;

/// What one measurement showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MeasurementPhase {
    /// The value met the success condition (or did not meet the failure condition).
    Successful,
    /// The value met the failure condition (or missed the success condition).
    Failed,
    /// There was nothing to judge (no data, NaN) or the value fell between the conditions.
    Inconclusive,
    /// The provider failed: Prometheus down, a timeout, a response that could not be read.
    Error,
}

/// One measurement, as recorded in the AnalysisRun status.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// What it showed.
    pub phase: MeasurementPhase,
    /// When the provider was asked.
    pub started_at: Timestamp,
    /// When the answer came back (or the attempt gave up).
    pub finished_at: Timestamp,
    /// The value measured, as text, if any.
    pub value: Option<String>,
    /// Why it ended this way (the provider's error, the condition's error), if worth saying.
    pub message: Option<String>,
}

/// How one metric is measured and judged (from the AnalysisTemplate).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPolicy {
    /// Time from the end of one measurement to the start of the next.
    pub interval: Duration,
    /// Measurements to take (errors not counted); `None`: measure until the release step ends.
    pub count: Option<u32>,
    /// Wait before the first measurement.
    pub initial_delay: Duration,
    /// Failed measurements tolerated; one more fails the metric.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive.
    pub inconclusive_limit: u32,
    /// Provider errors in a row tolerated; one more puts the metric in error.
    pub consecutive_error_limit: u32,
}

impl Default for MetricPolicy {
    /// Every 10 s until the step ends, at once, no failure or inconclusive tolerated,
    /// up to 4 provider errors in a row.
    fn default() -> Self {
        MetricPolicy {
            interval: Duration::from_secs(10),
            count: None,
            initial_delay: Duration::ZERO,
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
        }
    }
}

/// Where one metric stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricPhase {
    /// Still measuring.
    Running,
    /// Done, and no limit was exceeded.
    Successful,
    /// More failed measurements than the failure limit allows.
    Failed,
    /// More inconclusive measurements than the inconclusive limit allows.
    Inconclusive,
    /// More provider errors in a row than the consecutive error limit allows.
    Error,
}

/// Where a whole analysis run stands: the worst of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunPhase {
    /// Some metric is still measuring, none has gone wrong.
    Running,
    /// Every metric succeeded.
    Successful,
    /// Some metric failed: the release aborts.
    Failed,
    /// Some metric is inconclusive (none failed or errored): the release pauses.
    Inconclusive,
    /// Some metric's provider kept failing (none failed).
    Error,
}

/// Running counts of a metric's measurements; the verdicts are taken from these.
///
/// Kept in the status beside the (capped) measurement list, so dropping old measurements
/// never changes a verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Tally {
    /// Successful measurements.
    pub successful: u32,
    /// Failed measurements.
    pub failed: u32,
    /// Inconclusive measurements.
    pub inconclusive: u32,
    /// Provider errors.
    pub error: u32,
    /// Provider errors since the last measurement that was not one.
    pub consecutive_error: u32,
    /// All measurements, errors included.
    pub taken: u32,
}

impl Tally {
    /// The tally of these measurements, oldest first.
    pub fn of(measurements: &[Measurement]) -> Tally {
        let mut tally = Tally::default();
        for m in measurements {
            tally.record(m.phase);
        }
        tally
    }

    /// Counts one more measurement.
    pub fn record(&mut self, phase: MeasurementPhase) {
        self.taken = self.taken.saturating_add(1);
        let slot = match phase {
            MeasurementPhase::Successful => &mut self.successful,
            MeasurementPhase::Failed => &mut self.failed,
            MeasurementPhase::Inconclusive => &mut self.inconclusive,
            MeasurementPhase::Error => &mut self.error,
        };
        *slot = slot.saturating_add(1);
        self.consecutive_error = match phase {
            MeasurementPhase::Error => self.consecutive_error.saturating_add(1),
            _ => 0,
        };
    }

    /// Measurements that count toward the policy's `count`: all but provider errors.
    pub fn counted(&self) -> u32 {
        self.successful
            .saturating_add(self.failed)
            .saturating_add(self.inconclusive)
    }
}

/// Where a metric stands, given its tally and whether the release step it belongs to ended.
///
/// The worst applies first: `Failed` when failed > `failure_limit`; `Error` when the
/// trailing run of provider errors > `consecutive_error_limit`; `Inconclusive` when
/// inconclusive > `inconclusive_limit`. Otherwise the metric is done (`Successful`) once
/// `count` measurements other than errors were taken, or once `stop_requested` (the step
/// ended: with no `count` this is the normal end; with a `count`, the step was cut short,
/// and the metric stops as in Argo Rollouts rather than run forever). Otherwise `Running`.
///
/// One guard beyond Argo: a metric that ends with inconclusive measurements and not one
/// successful one is `Inconclusive`, not `Successful` — missing data is never a pass, even
/// within the inconclusive limit.
pub fn metric_phase(policy: &MetricPolicy, tally: &Tally, stop_requested: bool) -> MetricPhase {
    if tally.failed > policy.failure_limit {
        return MetricPhase::Failed;
    }
    if tally.consecutive_error > policy.consecutive_error_limit {
        return MetricPhase::Error;
    }
    if tally.inconclusive > policy.inconclusive_limit {
        return MetricPhase::Inconclusive;
    }
    let done = stop_requested || policy.count.is_some_and(|n| tally.counted() >= n);
    if !done {
        return MetricPhase::Running;
    }
    if tally.successful == 0 && tally.inconclusive > 0 {
        return MetricPhase::Inconclusive;
    }
    MetricPhase::Successful
}

/// When the next measurement is due: `started_at + initial_delay` for the first, then
/// `interval` after the newest one finished.
///
/// Only the newest measurement is read, so a [`cap`]ped list gives the same answer. Callers
/// stop asking once the metric is no longer `Running`.
pub fn next_due(
    policy: &MetricPolicy,
    measurements: &[Measurement],
    started_at: Timestamp,
) -> Timestamp {
    match measurements.last() {
        None => started_at.plus(policy.initial_delay),
        Some(last) => last.finished_at.plus(policy.interval),
    }
}

/// Where a run stands: the worst of its metrics (Failed > Error > Inconclusive > Running >
/// Successful); a run with no metrics is `Successful`.
pub fn run_phase(metrics: &[MetricPhase]) -> RunPhase {
    fn badness(phase: MetricPhase) -> u8 {
        match phase {
            MetricPhase::Successful => 0,
            MetricPhase::Running => 1,
            MetricPhase::Inconclusive => 2,
            MetricPhase::Error => 3,
            MetricPhase::Failed => 4,
        }
    }
    let worst = metrics
        .iter()
        .copied()
        .max_by_key(|p| badness(*p))
        .unwrap_or(MetricPhase::Successful);
    match worst {
        MetricPhase::Running => RunPhase::Running,
        MetricPhase::Successful => RunPhase::Successful,
        MetricPhase::Failed => RunPhase::Failed,
        MetricPhase::Inconclusive => RunPhase::Inconclusive,
        MetricPhase::Error => RunPhase::Error,
    }
}

/// Keeps the newest `keep` measurements (at least one, which [`next_due`] reads), oldest
/// first; verdicts come from the [`Tally`], so nothing they need is lost.
pub fn cap(measurements: &mut Vec<Measurement>, keep: usize) {
    let keep = keep.max(1);
    if measurements.len() > keep {
        measurements.drain(..measurements.len() - keep);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use MeasurementPhase as M;
    use proptest::prelude::*;

    const S: M = M::Successful;
    const F: M = M::Failed;
    const I: M = M::Inconclusive;
    const E: M = M::Error;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn measurement(phase: M, started_at: Timestamp, finished_at: Timestamp) -> Measurement {
        Measurement {
            phase,
            started_at,
            finished_at,
            value: None,
            message: None,
        }
    }

    fn limits(count: Option<u32>, failure: u32, inconclusive: u32, errors: u32) -> MetricPolicy {
        MetricPolicy {
            count,
            failure_limit: failure,
            inconclusive_limit: inconclusive,
            consecutive_error_limit: errors,
            ..MetricPolicy::default()
        }
    }

    fn tally(phases: &[M]) -> Tally {
        let mut t = Tally::default();
        for p in phases {
            t.record(*p);
        }
        t
    }

    #[test]
    fn default_policy_matches_the_documented_defaults() {
        let p = MetricPolicy::default();
        assert_eq!(p.interval, secs(10));
        assert_eq!(p.count, None);
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert_eq!(
            (
                p.failure_limit,
                p.inconclusive_limit,
                p.consecutive_error_limit
            ),
            (0, 0, 4)
        );
    }

    #[test]
    fn tally_counts_and_resets_the_error_streak() {
        let t = tally(&[S, E, E, F, I, E]);
        assert_eq!(
            t,
            Tally {
                successful: 1,
                failed: 1,
                inconclusive: 1,
                error: 3,
                consecutive_error: 1,
                taken: 6,
            }
        );
        assert_eq!(t.counted(), 3);
    }

    #[test]
    fn metric_phase_table() {
        // (policy, measurements, stop requested, expected)
        let table: Vec<(MetricPolicy, Vec<M>, bool, MetricPhase)> = vec![
            // Nothing yet.
            (
                limits(Some(3), 0, 0, 4),
                vec![],
                false,
                MetricPhase::Running,
            ),
            (limits(None, 0, 0, 4), vec![], false, MetricPhase::Running),
            // The step ended before any measurement: nothing went wrong.
            (limits(None, 0, 0, 4), vec![], true, MetricPhase::Successful),
            // Count reached.
            (
                limits(Some(3), 0, 0, 4),
                vec![S, S],
                false,
                MetricPhase::Running,
            ),
            (
                limits(Some(3), 0, 0, 4),
                vec![S, S, S],
                false,
                MetricPhase::Successful,
            ),
            // Errors don't count toward `count`.
            (
                limits(Some(3), 0, 0, 4),
                vec![S, E, S, E],
                false,
                MetricPhase::Running,
            ),
            (
                limits(Some(3), 0, 0, 4),
                vec![S, E, S, E, S],
                false,
                MetricPhase::Successful,
            ),
            // No count: runs until the step ends.
            (
                limits(None, 0, 0, 4),
                vec![S; 50],
                false,
                MetricPhase::Running,
            ),
            (
                limits(None, 0, 0, 4),
                vec![S; 50],
                true,
                MetricPhase::Successful,
            ),
            // A count cut short by the end of the step stops rather than running forever.
            (
                limits(Some(10), 0, 0, 4),
                vec![S, S],
                true,
                MetricPhase::Successful,
            ),
            // Failure limit.
            (
                limits(None, 0, 0, 4),
                vec![S, F],
                false,
                MetricPhase::Failed,
            ),
            (
                limits(None, 1, 0, 4),
                vec![S, F],
                false,
                MetricPhase::Running,
            ),
            (
                limits(None, 1, 0, 4),
                vec![F, S, F],
                false,
                MetricPhase::Failed,
            ),
            (
                limits(Some(3), 1, 0, 4),
                vec![F, S, S],
                false,
                MetricPhase::Successful,
            ),
            // Failed even once count is reached or the step ended.
            (
                limits(Some(2), 0, 0, 4),
                vec![S, F],
                false,
                MetricPhase::Failed,
            ),
            (limits(None, 0, 0, 4), vec![S, F], true, MetricPhase::Failed),
            // Inconclusive limit.
            (
                limits(None, 0, 0, 4),
                vec![S, I],
                false,
                MetricPhase::Inconclusive,
            ),
            (
                limits(None, 0, 1, 4),
                vec![S, I],
                false,
                MetricPhase::Running,
            ),
            (
                limits(Some(3), 0, 1, 4),
                vec![S, I, S],
                false,
                MetricPhase::Successful,
            ),
            // Missing data alone is never a pass, even within the limit.
            (
                limits(Some(1), 0, 1, 4),
                vec![I],
                false,
                MetricPhase::Inconclusive,
            ),
            (
                limits(None, 0, 2, 4),
                vec![I, E, I],
                true,
                MetricPhase::Inconclusive,
            ),
            // Consecutive errors: only the trailing streak matters.
            (
                limits(None, 0, 0, 2),
                vec![E, E],
                false,
                MetricPhase::Running,
            ),
            (
                limits(None, 0, 0, 2),
                vec![E, E, E],
                false,
                MetricPhase::Error,
            ),
            (
                limits(None, 0, 0, 2),
                vec![E, E, S, E, E],
                false,
                MetricPhase::Running,
            ),
            (limits(None, 0, 0, 0), vec![S, E], false, MetricPhase::Error),
            (
                limits(None, 0, 0, 0),
                vec![E, S],
                false,
                MetricPhase::Running,
            ),
            // An error streak is not excused by the step ending.
            (
                limits(None, 0, 0, 1),
                vec![S, E, E],
                true,
                MetricPhase::Error,
            ),
            // Worst first: Failed over Error over Inconclusive.
            (
                limits(None, 0, 0, 0),
                vec![I, F, E],
                false,
                MetricPhase::Failed,
            ),
            (limits(None, 0, 0, 0), vec![I, E], false, MetricPhase::Error),
            (
                limits(None, 0, 0, 4),
                vec![I, F],
                false,
                MetricPhase::Failed,
            ),
        ];
        for (i, (policy, phases, stop, want)) in table.into_iter().enumerate() {
            let got = metric_phase(&policy, &tally(&phases), stop);
            assert_eq!(got, want, "row {i}: {phases:?}, stop {stop}, {policy:?}");
        }
    }

    #[test]
    fn next_due_table() {
        let start = Timestamp(1_000_000);
        let policy = MetricPolicy {
            interval: secs(30),
            initial_delay: secs(60),
            ..MetricPolicy::default()
        };
        // The first waits for the initial delay.
        assert_eq!(next_due(&policy, &[], start), Timestamp(1_060_000));
        // Then one interval after the newest one finished (a slow provider pushes it out).
        let ms = vec![
            measurement(S, Timestamp(1_060_000), Timestamp(1_061_000)),
            measurement(E, Timestamp(1_091_000), Timestamp(1_101_000)),
        ];
        assert_eq!(next_due(&policy, &ms[..1], start), Timestamp(1_091_000));
        assert_eq!(next_due(&policy, &ms, start), Timestamp(1_131_000));
        // No delay: due at once.
        assert_eq!(next_due(&MetricPolicy::default(), &[], start), start);
    }

    #[test]
    fn run_phase_is_the_worst_metric() {
        use MetricPhase as P;
        let table = [
            (vec![], RunPhase::Successful),
            (vec![P::Successful, P::Successful], RunPhase::Successful),
            (vec![P::Successful, P::Running], RunPhase::Running),
            (
                vec![P::Running, P::Inconclusive, P::Successful],
                RunPhase::Inconclusive,
            ),
            (vec![P::Inconclusive, P::Error, P::Running], RunPhase::Error),
            (vec![P::Error, P::Failed, P::Inconclusive], RunPhase::Failed),
            (vec![P::Failed, P::Successful], RunPhase::Failed),
        ];
        for (metrics, want) in table {
            assert_eq!(run_phase(&metrics), want, "{metrics:?}");
        }
    }

    #[test]
    fn cap_keeps_the_newest_and_at_least_one() {
        let ms: Vec<Measurement> = (0..5)
            .map(|i| measurement(S, Timestamp(i), Timestamp(i + 1)))
            .collect();
        let mut capped = ms.clone();
        cap(&mut capped, 2);
        assert_eq!(capped, ms[3..]);
        let mut capped = ms.clone();
        cap(&mut capped, 0);
        assert_eq!(capped, ms[4..]);
        let mut capped = ms.clone();
        cap(&mut capped, 10);
        assert_eq!(capped, ms);
    }

    fn phase() -> impl Strategy<Value = M> {
        prop_oneof![Just(S), Just(F), Just(I), Just(E)]
    }

    proptest! {
        /// Recording incrementally and capping the display list as we go gives the same
        /// verdicts and schedule as keeping every measurement.
        #[test]
        fn capping_changes_no_verdict(
            phases in prop::collection::vec(phase(), 0..60),
            keep in 0usize..8,
            count in prop::option::of(0u32..20),
            failure_limit in 0u32..4,
            inconclusive_limit in 0u32..4,
            consecutive_error_limit in 0u32..4,
            stop in any::<bool>(),
        ) {
            let policy = MetricPolicy {
                count,
                failure_limit,
                inconclusive_limit,
                consecutive_error_limit,
                ..MetricPolicy::default()
            };
            let start = Timestamp(0);
            let mut all = Vec::new();
            let mut shown = Vec::new();
            let mut running = Tally::default();
            for (i, p) in phases.iter().enumerate() {
                let at = next_due(&policy, &shown, start);
                prop_assert_eq!(at, next_due(&policy, &all, start));
                let m = measurement(*p, at, at.plus(Duration::from_millis(i as u64)));
                all.push(m.clone());
                shown.push(m);
                running.record(*p);
                cap(&mut shown, keep);
                prop_assert!(shown.len() <= keep.max(1));
            }
            prop_assert_eq!(running, Tally::of(&all));
            prop_assert_eq!(
                metric_phase(&policy, &running, stop),
                metric_phase(&policy, &Tally::of(&all), stop)
            );
            prop_assert_eq!(next_due(&policy, &shown, start), next_due(&policy, &all, start));
        }

        /// A Failed metric stays Failed whatever is measured next.
        #[test]
        fn failure_is_final(
            phases in prop::collection::vec(phase(), 0..40),
            more in prop::collection::vec(phase(), 0..10),
            failure_limit in 0u32..3,
        ) {
            let policy = MetricPolicy { failure_limit, ..MetricPolicy::default() };
            let mut t = tally(&phases);
            if metric_phase(&policy, &t, false) == MetricPhase::Failed {
                for p in more {
                    t.record(p);
                    prop_assert_eq!(metric_phase(&policy, &t, false), MetricPhase::Failed);
                }
            }
        }
    }
}
