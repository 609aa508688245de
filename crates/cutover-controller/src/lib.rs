//! The Cutover controller's building blocks; `main.rs` wires them together.

pub mod analysis;
pub mod api_requests;
pub mod bluegreen;
pub mod clusters;
pub mod error;
pub mod events;
pub mod failover;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod mirror;
pub mod run;
pub mod traffic;

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "cutover-controller";
