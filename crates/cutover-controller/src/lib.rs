//! The Cutover controller's building blocks; `main.rs` and `run.rs` wire them together.
//!
//! Features: [`bluegreen`] (releases), [`failover`] (disaster recovery), [`analysis`]
//! (AnalysisRuns). Below them, shared by all and importing none: [`traffic`] (one
//! interface over every way of moving traffic), [`cache`] (watch caches), [`objects`]
//! (reads, server-side applies, ownership), [`providers`] (measurements), [`conditions`],
//! [`clock`], [`endpoint_mirror`], [`clusters`], [`coordination`] (an etcd lease with
//! fencing tokens), [`error`], [`metrics`], [`events`].
//! `tests/layers.rs` checks that no feature imports from inside another.

pub mod analysis;
pub mod api_requests;
pub mod bluegreen;
pub mod cache;
pub mod clock;
pub mod clusters;
pub mod conditions;
pub mod coordination;
pub mod endpoint_mirror;
pub mod error;
pub mod events;
pub mod failover;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod providers;
pub mod run;
pub mod traffic;

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "cutover-controller";
