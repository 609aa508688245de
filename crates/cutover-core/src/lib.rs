//! Cutover's decisions, free of I/O. Everything here takes what was observed (and the
//! current time as an argument) and returns a plan; the controller carries it out.

pub mod analysis;
pub mod color;
pub mod failover;
pub mod regional;
pub mod release;

pub use color::{Color, PerColor};
