//! Analysis: runs, measurements and providers.

pub mod providers;
pub mod run;
