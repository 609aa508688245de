//! The Cutover controller's building blocks; `main.rs` wires them together.

pub mod analysis;
pub mod api_requests;
pub mod bluegreen;
pub mod cache;
pub mod clock;
pub mod clusters;
pub mod conditions;
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
