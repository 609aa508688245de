//! Analysis: when to take a measurement, what a measurement means, and what a run's
//! measurements add up to. Pure: time is a parameter, providers live in the controller.

pub mod compare;
pub mod condition;
pub mod value;
pub mod verdict;

pub use compare::{Alternative, UTest, judge, mann_whitney};
pub use condition::{Condition, ConditionError, assess};
pub use value::Value;
pub use verdict::{
    Measurement, MeasurementPhase, MetricPhase, MetricPolicy, RunPhase, Tally, cap, metric_phase,
    next_due, run_phase,
};
