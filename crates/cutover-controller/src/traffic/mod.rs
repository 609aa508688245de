//! Moving traffic. Every provider implements one narrow interface, [`TrafficProvider`]:
//! read back what the data plane is configured to do, set a weight, set a header route,
//! set a mirror, switch live, remove what Cutover manages. The reconcilers call it without
//! knowing which provider they have.
//!
//! - [`live_selector`]: the live Service's selector (both colors at home);
//! - [`live_endpoints`]: the live Service's mirrored EndpointSlice (a color elsewhere);
//! - [`route`]: a weighted route object, pure per provider in [`gateway`], [`istio`], [`smi`];
//! - [`entry`]: a FailoverPolicy's HTTPRoute entry, switched between member Services;
//! - [`Traffic`]: a BlueGreenDeployment's providers together (its route, then its live
//!   Service), chosen once from the spec by [`Traffic::new`].
//!
//! A provider writes only what it manages and reads it back, so a release moves on from
//! what the data plane is actually configured to do, not from what was asked.

pub mod adopted;
pub mod dns;
pub mod entry;
pub mod gateway;
pub mod istio;
pub mod live_endpoints;
pub mod live_selector;
pub mod route;
pub mod services;
pub mod smi;

use cutover_api::BlueGreenDeployment;
use cutover_api::blue_green::HeaderMatch;
use cutover_api::kube::api::{ApiResource, GroupVersionKind};
use cutover_core::release::{RouteObs, TrafficObs};
use serde_json::Value;

use cutover_core::Color;

use crate::error::Error;

/// A header route: the step it belongs to and its matches.
pub type HeaderRoute = (u32, Vec<HeaderMatch>);

/// What a provider reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<B> {
    /// The backend taking live traffic (`None`: nothing routed yet, or split).
    pub live: Option<B>,
    /// The split around `live` (weights, header route, mirror), for weighted providers.
    pub split: TrafficObs,
}

impl<B> Default for Observed<B> {
    fn default() -> Self {
        Observed {
            live: None,
            split: TrafficObs::default(),
        }
    }
}

/// A traffic provider, switching between backends `B` (a BlueGreenDeployment's colors, a
/// FailoverPolicy's members). Weights, header routes and mirrors go to "the other" backend
/// than `stable`; providers that cannot do them answer [`Error::Unsupported`].
pub trait TrafficProvider {
    /// What traffic is switched between.
    type Backend: Copy + Send + Sync;

    /// Read back where traffic goes now.
    fn read(&self) -> Result<Observed<Self::Backend>, Error>;

    /// Send `weight` percent to the backend other than `stable`, the rest to `stable`.
    fn set_weight(
        &self,
        stable: Self::Backend,
        weight: u8,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Put (`Some`) or take away (`None`) the header route to the backend other than
    /// `stable`.
    fn set_header_route(
        &self,
        stable: Self::Backend,
        header: Option<HeaderRoute>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Mirror `percent` of `stable`'s traffic to the other backend.
    fn set_mirror(
        &self,
        stable: Self::Backend,
        percent: u8,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Send all traffic to `to`: no weight, header route or mirror left to the others.
    fn switch_live(&self, to: Self::Backend) -> impl Future<Output = Result<(), Error>> + Send;

    /// Take away what Cutover manages (all traffic left on the live backend).
    fn remove(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// How a BlueGreenDeployment's live Service follows the live color: its selector (both
/// colors at home) or its mirrored endpoints (a color elsewhere, `spec.environments`).
#[derive(Debug)]
pub enum Live<'a> {
    /// The live Service's selector.
    Selector(live_selector::LiveSelector<'a>),
    /// The live Service's mirrored EndpointSlice.
    Endpoints(live_endpoints::LiveEndpoints<'a>),
}

/// A BlueGreenDeployment's traffic: its weighted route if it has one, and its live
/// Service. The route moves first; the live Service agrees on a switch.
#[derive(Debug)]
pub struct Traffic<'a> {
    /// The weighted provider's route (`spec.trafficRouting`), if any.
    pub route: Option<route::Route<'a>>,
    /// The live Service.
    pub live: Live<'a>,
}

impl TrafficProvider for Live<'_> {
    type Backend = Color;

    fn read(&self) -> Result<Observed<Color>, Error> {
        let live = match self {
            Live::Selector(l) => l.live(),
            Live::Endpoints(l) => l.live(),
        };
        Ok(Observed {
            live,
            split: TrafficObs::default(),
        })
    }

    /// No weights: 100 sends everything to the other color, anything less leaves it on
    /// `stable`.
    async fn set_weight(&self, stable: Color, weight: u8) -> Result<(), Error> {
        let to = if weight >= 100 {
            stable.other()
        } else {
            stable
        };
        self.switch_live(to).await
    }

    async fn set_header_route(&self, _: Color, _: Option<HeaderRoute>) -> Result<(), Error> {
        Err(unsupported())
    }

    async fn set_mirror(&self, _: Color, _: u8) -> Result<(), Error> {
        Err(unsupported())
    }

    async fn switch_live(&self, to: Color) -> Result<(), Error> {
        match self {
            Live::Selector(l) => l.point(to).await,
            Live::Endpoints(l) => l.point(to).await,
        }
    }

    /// The live Service is the user's entry point: it stays (with its owner).
    async fn remove(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Header routes and mirrors need a weighted provider.
pub(crate) fn unsupported() -> Error {
    Error::Unsupported {
        what: "header routes and mirroring with `service` traffic routing",
    }
}

impl TrafficProvider for Traffic<'_> {
    type Backend = Color;

    /// The live Service names the live color; a route's split is read against it. The
    /// weights alone cannot say which color is live (at a 60 % step the new color has the
    /// larger share), and a route switched before the Service followed reads as 100 % on
    /// the other color: a split the next switch completes or undoes. Before the first
    /// rollout (no live Service yet) nothing is live, whatever the route names.
    fn read(&self) -> Result<Observed<Color>, Error> {
        let live = self.live.read()?.live;
        let split = match (&self.route, live) {
            (Some(route), Some(live)) => route
                .observe()
                .and_then(|obs| obs.relative_to(live))
                .unwrap_or_default(),
            _ => TrafficObs::default(),
        };
        Ok(Observed { live, split })
    }

    async fn set_weight(&self, stable: Color, weight: u8) -> Result<(), Error> {
        match &self.route {
            Some(r) => r.set_weight(stable, weight).await,
            None => self.live.set_weight(stable, weight).await,
        }
    }

    async fn set_header_route(
        &self,
        stable: Color,
        header: Option<HeaderRoute>,
    ) -> Result<(), Error> {
        match &self.route {
            Some(r) => r.set_header_route(stable, header).await,
            None => self.live.set_header_route(stable, header).await,
        }
    }

    async fn set_mirror(&self, stable: Color, percent: u8) -> Result<(), Error> {
        match &self.route {
            Some(r) => r.set_mirror(stable, percent).await,
            None => self.live.set_mirror(stable, percent).await,
        }
    }

    async fn switch_live(&self, to: Color) -> Result<(), Error> {
        // All traffic to `to` in one route write; then the live Service agrees.
        if let Some(r) = &self.route {
            r.switch_live(to).await?;
        }
        self.live.switch_live(to).await
    }

    async fn remove(&self) -> Result<(), Error> {
        if let Some(r) = &self.route {
            r.remove().await?;
        }
        Ok(())
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

    /// `spec` given back to the live Service `<name>` (a user's route; an owned
    /// TrafficSplit goes with its owner instead).
    pub fn give_back(self, spec: &Value, bgd: &BlueGreenDeployment) -> Value {
        match self {
            RouteKind::Gateway => gateway::give_back(spec, bgd),
            RouteKind::Istio => istio::give_back(spec, bgd),
            RouteKind::Smi => spec.clone(),
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
