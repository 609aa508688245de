//! `cutover-router`: an L7 HTTP data plane for the part of Gateway API a blue-green release
//! needs. It serves the Gateways whose GatewayClass names `cutover.dev/router` as its
//! controller: listens on their HTTP listeners' ports, routes by host, path, method, header
//! and query matches to weighted Service backends straight at their ready endpoints,
//! mirrors requests, counts per-backend golden signals, and writes route status.
//!
//! - `model`: the Gateway API types read.
//! - `table`: the routing table, built without I/O and swapped in whole.
//! - `proxy`: listeners and forwarding; `upstream`: the per-thread connection pools.
//! - `watch`: the watches that rebuild the table, and the statuses written back.
//! - `metrics`, `admin`: `/metrics`, `/healthz`, `/debug/routes`.

pub mod admin;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod table;
pub mod upstream;
pub mod watch;

/// The `controllerName` GatewayClasses name to be served by this router.
pub const CONTROLLER_NAME: &str = "cutover.dev/router";
