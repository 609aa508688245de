//! Cutover's decisions, free of I/O. Everything here takes what was observed (and the
//! current time as an argument) and returns a plan; the controller carries it out.
//!
//! The release state machine arrives with the blue-green core issue.
