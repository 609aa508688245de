//! Analysis: runs, measurements and providers.

pub mod gate;
pub mod providers;
pub mod run;
