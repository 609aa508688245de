//! Moving traffic between the colors. One module per provider, behind [`TrafficRouter`].
//!
//! A router writes only what it manages and reads it back ([`TrafficRouter::read`]) so the
//! release moves on from what the data plane is actually configured to do, not from what
//! was asked. The live Service follows the live color through [`LiveRouter`]; weighted
//! providers edit their route object ([`RouteKind`]).

pub mod gateway;
pub mod istio;
pub mod live_endpoints;
pub mod live_selector;
pub mod services;
pub mod smi;

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::HeaderMatch;
use cutover_api::kube::api::{ApiResource, GroupVersionKind};
use cutover_core::release::RouteObs;
use serde_json::Value;

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

/// How the live Service follows the live color: its selector (both colors at home) or its
/// mirrored endpoints (a color elsewhere, `spec.environments`).
#[derive(Debug)]
pub enum LiveRouter<'a> {
    /// The live Service's selector.
    Service(live_selector::ServiceRouter<'a>),
    /// The live Service's mirrored EndpointSlice.
    Mirror(live_endpoints::MirrorRouter<'a>),
}

impl TrafficRouter for LiveRouter<'_> {
    async fn set_weight(&self, canary: Color, weight: u8) -> Result<(), Error> {
        match self {
            LiveRouter::Service(r) => r.set_weight(canary, weight).await,
            LiveRouter::Mirror(r) => r.set_weight(canary, weight).await,
        }
    }

    async fn read(&self) -> Result<Option<TrafficState>, Error> {
        match self {
            LiveRouter::Service(r) => r.read().await,
            LiveRouter::Mirror(r) => r.read().await,
        }
    }
}

/// Prefix of the name of the rule (route) Cutover adds for a header route; the step
/// index follows it.
pub const HEADER_ROUTE_PREFIX: &str = "cutover-header-";

/// The step of the header rule among rules (routes) named `names`, if one is in place.
pub fn header_step<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    names
        .into_iter()
        .find_map(|n| n.strip_prefix(HEADER_ROUTE_PREFIX))
        .and_then(|s| s.parse().ok())
}

/// What a weighted provider should do.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The color that keeps the traffic not sent to the other one.
    pub stable: Color,
    /// Percent of traffic on the other color.
    pub canary_weight: u8,
    /// The header route: its step and matches.
    pub header: Option<(u32, Vec<HeaderMatch>)>,
    /// Percent mirrored to the other color.
    pub mirror: u8,
}

/// A weighted provider: a route object whose managed parts Cutover edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A Gateway API HTTPRoute (the user's).
    Gateway,
    /// An Istio VirtualService (the user's).
    Istio,
    /// An SMI TrafficSplit (Cutover's own).
    Smi,
}

impl RouteKind {
    /// The provider of `bgd` and its object's name (`None`: `service` routing).
    pub fn of(bgd: &BlueGreenDeployment) -> Option<(RouteKind, String)> {
        let r = bgd.spec.traffic_routing.as_ref()?;
        if let Some(g) = &r.gateway_api {
            return Some((RouteKind::Gateway, g.http_route.clone()));
        }
        if let Some(i) = &r.istio {
            return Some((RouteKind::Istio, i.virtual_service.name.clone()));
        }
        r.smi
            .as_ref()
            .map(|s| (RouteKind::Smi, s.traffic_split_name.clone()))
    }

    /// The Kubernetes kind.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Gateway => "HTTPRoute",
            RouteKind::Istio => "VirtualService",
            RouteKind::Smi => "TrafficSplit",
        }
    }

    /// The API resource of the route object.
    pub fn api_resource(self) -> ApiResource {
        let gvk = match self {
            RouteKind::Gateway => {
                GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute")
            }
            RouteKind::Istio => {
                GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService")
            }
            RouteKind::Smi => {
                GroupVersionKind::gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit")
            }
        };
        ApiResource::from_gvk(&gvk)
    }

    /// Whether Cutover creates and owns the object (rather than editing the user's).
    pub fn owned(self) -> bool {
        self == RouteKind::Smi
    }

    /// What `spec` holds for the colors now (read it against the live color with
    /// [`RouteObs::relative_to`]), or what is wrong with it.
    pub fn observe(
        self,
        spec: &Value,
        bgd: &BlueGreenDeployment,
        route: &str,
    ) -> Result<RouteObs, String> {
        let name = bgd.metadata.name.clone().unwrap_or_default();
        match self {
            RouteKind::Gateway => gateway::observe(spec, &name, route),
            RouteKind::Istio => istio::observe(spec, bgd, route),
            RouteKind::Smi => Ok(smi::observe(spec, bgd)),
        }
    }

    /// `spec` with `target` applied to the parts Cutover manages.
    pub fn render(self, spec: &Value, bgd: &BlueGreenDeployment, target: &Target) -> Value {
        match self {
            RouteKind::Gateway => gateway::render(spec, bgd, target),
            RouteKind::Istio => istio::render(spec, bgd, target),
            RouteKind::Smi => smi::render(bgd, target),
        }
    }
}
