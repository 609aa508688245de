//! Analysis: runs, measurements and providers.

pub mod run;
