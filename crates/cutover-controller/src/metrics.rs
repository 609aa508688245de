//! The controller's Prometheus metrics, registered once, under the `cutover_` prefix.
//!
//! [`Metrics`] is cheap to clone (every metric is shared) and each call site is one line:
//! `metrics.promoted(ns, name)`. Series labelled by object are dropped with
//! [`Metrics::forget`] when the object is deleted.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

/// The phases a release can be in; [`Metrics::set_phase`] keeps one series per phase.
pub const PHASES: [&str; 4] = ["Healthy", "Progressing", "Paused", "Degraded"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    namespace: String,
    name: String,
    /// `failover` or `failback`.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    namespace: String,
    name: String,
    verdict: String,
}

/// Phases of a FailoverPolicy.
pub const FAILOVER_PHASES: [&str; 5] = [
    "Healthy",
    "FailingOver",
    "FailedOver",
    "Degraded",
    "Drilling",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    namespace: String,
    name: String,
    reason: String,
}

fn reconcile_duration_histogram() -> Histogram {
    // 5 ms to about 41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn object(namespace: &str, name: &str) -> ObjectLabels {
    ObjectLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// Every metric the controller exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<KindLabels, Histogram>,
    release_phase: Family<PhaseLabels, Gauge>,
    release_weight: Family<ObjectLabels, Gauge>,
    promotions: Family<ObjectLabels, Counter>,
    rollbacks: Family<RollbackLabels, Counter>,
    traffic_switch_duration: Histogram,
    leader: Gauge,
    failover_phase: Family<PhaseLabels, Gauge>,
    failovers: Family<FailoverLabels, Counter>,
    failover_duration: Family<FailoverLabels, Histogram>,
    drills: Family<DrillLabels, Counter>,
    /// The rollback reasons seen per object, so that [`Metrics::forget`] can find their series.
    rollback_reasons: Arc<Mutex<HashMap<ObjectLabels, BTreeSet<String>>>>,
}

impl Metrics {
    /// Create the metrics and register them in `registry` under the `cutover_` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_duration_histogram),
            release_phase: Family::default(),
            release_weight: Family::default(),
            promotions: Family::default(),
            rollbacks: Family::default(),
            // 10 ms to about 20 s.
            traffic_switch_duration: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            leader: Gauge::default(),
            failover_phase: Family::default(),
            failovers: Family::default(),
            failover_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 14))
            }),
            drills: Family::default(),
            rollback_reasons: Arc::default(),
        };
        // The registry appends the final full stop to each help text.
        let r = registry.sub_registry_with_prefix("cutover");
        r.register(
            "reconciles",
            "Number of reconciliations run, by the kind of object reconciled",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Number of reconciliations that failed, by the kind of object and the kind of error",
            metrics.reconcile_errors.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time one reconciliation took, by the kind of object reconciled",
            Unit::Seconds,
            metrics.reconcile_duration.clone(),
        );
        r.register(
            "release_phase",
            "Phase of each release: 1 for its current phase, 0 for the others",
            metrics.release_phase.clone(),
        );
        r.register(
            "release_weight",
            "Percentage of each release's traffic that goes to its new color",
            metrics.release_weight.clone(),
        );
        r.register(
            "promotions",
            "Number of times a release's new color was promoted to live",
            metrics.promotions.clone(),
        );
        r.register(
            "rollbacks",
            "Number of times a release was rolled back to its previous color, by reason",
            metrics.rollbacks.clone(),
        );
        r.register_with_unit(
            "traffic_switch_duration",
            "Time it took to apply one traffic switch to the routing objects",
            Unit::Seconds,
            metrics.traffic_switch_duration.clone(),
        );
        r.register(
            "leader",
            "Whether this replica holds the leader Lease and may write: 1 if it does, 0 otherwise",
            metrics.leader.clone(),
        );
        r.register(
            "failover_phase",
            "Phase of each FailoverPolicy: 1 for its current phase, 0 for the others",
            metrics.failover_phase.clone(),
        );
        r.register(
            "failovers",
            "Number of moves of a FailoverPolicy's traffic, by kind (failover or failback)",
            metrics.failovers.clone(),
        );
        r.register_with_unit(
            "failover_duration",
            "Time from the start of a move (fence, promote, route) to traffic observed on the target",
            Unit::Seconds,
            metrics.failover_duration.clone(),
        );
        r.register(
            "drills",
            "Number of disaster-recovery drills finished, by verdict",
            metrics.drills.clone(),
        );
        metrics
    }

    /// Record the phase of a FailoverPolicy.
    pub fn set_failover_phase(&self, namespace: &str, name: &str, phase: &str) {
        for known in FAILOVER_PHASES {
            self.failover_phase
                .get_or_create(&PhaseLabels {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    phase: known.to_string(),
                })
                .set(i64::from(known == phase));
        }
    }

    /// Count one finished move of a FailoverPolicy's traffic that took `took`.
    pub fn failed_over(&self, namespace: &str, name: &str, failback: bool, took: Duration) {
        let labels = FailoverLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
            kind: if failback { "failback" } else { "failover" }.to_string(),
        };
        self.failovers.get_or_create(&labels).inc();
        self.failover_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Count one finished drill.
    pub fn drilled(&self, namespace: &str, name: &str, verdict: &str) {
        self.drills
            .get_or_create(&DrillLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// Count one reconciliation of an object of `kind`, successful or not, that took `elapsed`.
    pub fn reconcile_finished(&self, kind: &str, elapsed: Duration) {
        let labels = KindLabels {
            kind: kind.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Count one failed reconciliation of an object of `kind`; `error` names the kind of
    /// error (a short stable string such as `"kube"` or `"invalid_spec"`, not a message).
    pub fn reconcile_failed(&self, kind: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    /// Record the current phase of a release: 1 on its series, 0 on the other [`PHASES`].
    /// A phase outside [`PHASES`] is logged and leaves every series at 0.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: &str) {
        if !PHASES.contains(&phase) {
            warn!(
                namespace,
                name, phase, "unknown release phase; not exported"
            );
        }
        for known in PHASES {
            self.release_phase
                .get_or_create(&PhaseLabels {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    phase: known.to_string(),
                })
                .set(i64::from(known == phase));
        }
    }

    /// Record the percentage (0–100) of a release's traffic on its new color.
    pub fn set_weight(&self, namespace: &str, name: &str, percent: i32) {
        self.release_weight
            .get_or_create(&object(namespace, name))
            .set(i64::from(percent));
    }

    /// Count one promotion of a release's new color to live.
    pub fn promoted(&self, namespace: &str, name: &str) {
        self.promotions
            .get_or_create(&object(namespace, name))
            .inc();
    }

    /// Count one rollback of a release; `reason` is a short stable string such as
    /// `"analysis_failed"` or `"aborted"`.
    pub fn rolled_back(&self, namespace: &str, name: &str, reason: &str) {
        self.rollback_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(object(namespace, name))
            .or_default()
            .insert(reason.to_string());
        self.rollbacks
            .get_or_create(&RollbackLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Record how long applying one traffic switch took.
    pub fn traffic_switched(&self, elapsed: Duration) {
        self.traffic_switch_duration.observe(elapsed.as_secs_f64());
    }

    /// Record whether this replica holds the leader Lease.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Drop every series labelled with this object, once it has been deleted.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = object(namespace, name);
        for phase in PHASES {
            self.release_phase.remove(&PhaseLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                phase: phase.to_string(),
            });
        }
        self.release_weight.remove(&labels);
        self.promotions.remove(&labels);
        let reasons = self
            .rollback_reasons
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&labels)
            .unwrap_or_default();
        for reason in reasons {
            self.rollbacks.remove(&RollbackLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("the registry encodes");
        text
    }

    #[test]
    fn every_metric_is_exported_with_its_help_sentence() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.reconcile_finished("BlueGreenDeployment", Duration::from_millis(30));
        metrics.reconcile_failed("BlueGreenDeployment", "kube");
        metrics.set_phase("shop", "web", "Progressing");
        metrics.set_weight("shop", "web", 25);
        metrics.promoted("shop", "web");
        metrics.rolled_back("shop", "web", "analysis_failed");
        metrics.traffic_switched(Duration::from_millis(120));
        metrics.set_leader(true);
        let text = encoded(&registry);

        for (name, kind, help) in [
            (
                "cutover_reconciles",
                "counter",
                "Number of reconciliations run, by the kind of object reconciled.",
            ),
            (
                "cutover_reconcile_errors",
                "counter",
                "Number of reconciliations that failed, by the kind of object and the kind of error.",
            ),
            (
                "cutover_reconcile_duration_seconds",
                "histogram",
                "Time one reconciliation took, by the kind of object reconciled.",
            ),
            (
                "cutover_release_phase",
                "gauge",
                "Phase of each release: 1 for its current phase, 0 for the others.",
            ),
            (
                "cutover_release_weight",
                "gauge",
                "Percentage of each release's traffic that goes to its new color.",
            ),
            (
                "cutover_promotions",
                "counter",
                "Number of times a release's new color was promoted to live.",
            ),
            (
                "cutover_rollbacks",
                "counter",
                "Number of times a release was rolled back to its previous color, by reason.",
            ),
            (
                "cutover_traffic_switch_duration_seconds",
                "histogram",
                "Time it took to apply one traffic switch to the routing objects.",
            ),
            (
                "cutover_leader",
                "gauge",
                "Whether this replica holds the leader Lease and may write: 1 if it does, 0 otherwise.",
            ),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "no {name} in\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {name} {help}\n")),
                "no help for {name} in\n{text}"
            );
        }
        for sample in [
            r#"cutover_reconciles_total{kind="BlueGreenDeployment"} 1"#,
            r#"cutover_reconcile_errors_total{kind="BlueGreenDeployment",error="kube"} 1"#,
            r#"cutover_reconcile_duration_seconds_count{kind="BlueGreenDeployment"} 1"#,
            r#"cutover_release_phase{namespace="shop",name="web",phase="Progressing"} 1"#,
            r#"cutover_release_phase{namespace="shop",name="web",phase="Healthy"} 0"#,
            r#"cutover_release_weight{namespace="shop",name="web"} 25"#,
            r#"cutover_promotions_total{namespace="shop",name="web"} 1"#,
            r#"cutover_rollbacks_total{namespace="shop",name="web",reason="analysis_failed"} 1"#,
            "cutover_traffic_switch_duration_seconds_count 1",
            "cutover_leader 1",
        ] {
            assert!(
                text.contains(&format!("{sample}\n")),
                "no `{sample}` in\n{text}"
            );
        }
        assert!(
            !text.contains(".."),
            "a help text ends in two full stops:\n{text}"
        );
    }

    #[test]
    fn exactly_the_current_phase_is_one() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.set_phase("shop", "web", "Progressing");
        metrics.set_phase("shop", "web", "Degraded");
        let text = encoded(&registry);
        for phase in PHASES {
            let value = i64::from(phase == "Degraded");
            let sample = format!(
                r#"cutover_release_phase{{namespace="shop",name="web",phase="{phase}"}} {value}"#
            );
            assert!(
                text.contains(&format!("{sample}\n")),
                "no `{sample}` in\n{text}"
            );
        }

        metrics.set_phase("shop", "web", "Exploded");
        let text = encoded(&registry);
        assert!(!text.contains("Exploded"), "{text}");
        assert!(!text.contains(r#"phase="Degraded"} 1"#), "{text}");
    }

    #[test]
    fn forgetting_an_object_drops_only_its_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        for name in ["web", "api"] {
            metrics.set_phase("shop", name, "Healthy");
            metrics.set_weight("shop", name, 100);
            metrics.promoted("shop", name);
            metrics.rolled_back("shop", name, "aborted");
            metrics.rolled_back("shop", name, "analysis_failed");
        }
        metrics.forget("shop", "web");
        let text = encoded(&registry);
        assert!(
            !text.contains(r#"name="web""#),
            "series of web remain:\n{text}"
        );
        for sample in [
            r#"cutover_release_phase{namespace="shop",name="api",phase="Healthy"} 1"#,
            r#"cutover_release_weight{namespace="shop",name="api"} 100"#,
            r#"cutover_promotions_total{namespace="shop",name="api"} 1"#,
            r#"cutover_rollbacks_total{namespace="shop",name="api",reason="aborted"} 1"#,
            r#"cutover_rollbacks_total{namespace="shop",name="api",reason="analysis_failed"} 1"#,
        ] {
            assert!(
                text.contains(&format!("{sample}\n")),
                "no `{sample}` in\n{text}"
            );
        }
    }
}
