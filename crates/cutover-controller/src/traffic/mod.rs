//! Moving traffic between the colors. One module per provider, behind [`TrafficRouter`].
//!
//! A router writes only what it manages and reads it back ([`TrafficRouter::read`]) so the
//! release moves on from what the data plane is actually configured to do, not from what
//! was asked. The `service` router is the only one so far: it switches the live Service's
//! selector, all traffic at once.

pub mod gateway;
pub mod service;

use cutover_core::Color;

use crate::error::Error;

/// Where live traffic goes, as read back from the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficState {
    /// The color taking the traffic that is not sent to `canary`.
    pub stable: Color,
    /// Percent of traffic on `stable.other()`.
    pub canary_weight: u8,
}

/// A traffic provider.
pub trait TrafficRouter {
    /// Send `weight` percent of live traffic to `canary` and the rest to its other color.
    /// Providers without weights accept only 0 and 100.
    fn set_weight(
        &self,
        canary: Color,
        weight: u8,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send;

    /// Read back where live traffic goes; `None` when nothing is routed yet.
    fn read(&self)
    -> impl std::future::Future<Output = Result<Option<TrafficState>, Error>> + Send;
}
