//! A weighted provider's route object (HTTPRoute, VirtualService, TrafficSplit): read from
//! what the reconciler observed, written with optimistic concurrency. Each provider's JSON
//! is pure ([`super::gateway`], [`super::istio`], [`super::smi`]); this file is their I/O.
//!
//! Why not server-side apply: the parts Cutover manages sit inside lists the user owns
//! (`spec.rules` of an HTTPRoute, `spec.http` of a VirtualService are atomic lists), so an
//! apply would take the whole list over. Cutover reads the route fresh, changes only its
//! managed parts, and writes it back with the resourceVersion read: a concurrent edit of
//! the route fails this write instead of being overwritten.

use cutover_api::BlueGreenDeployment;
use cutover_api::kube::api::{DynamicObject, PostParams};
use cutover_api::kube::{Api, Client, ResourceExt as _};
use cutover_core::Color;
use cutover_core::release::RouteObs;

use super::{HeaderRoute, Observed, RouteKind, Target, TrafficProvider};
use crate::FIELD_MANAGER;
use crate::error::Error;
use crate::objects::{owned_labels, owner_reference};

/// The route of one BlueGreenDeployment.
pub struct Route<'a> {
    bgd: &'a BlueGreenDeployment,
    client: Client,
    kind: RouteKind,
    name: String,
    /// The route as observed this pass (`None`: not created yet, for an owned kind).
    observed: Option<&'a DynamicObject>,
}

impl std::fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The header route of step `i` of `bgd`: its index and matches.
pub fn header_of(bgd: &BlueGreenDeployment, i: u32) -> HeaderRoute {
    let matches = bgd
        .spec
        .strategy
        .steps
        .get(i as usize)
        .and_then(|s| s.set_header_route.as_ref())
        .map(|h| h.matches.clone())
        .unwrap_or_default();
    (i, matches)
}

impl<'a> Route<'a> {
    /// The route `spec.trafficRouting` names, as `observed` this pass; `None` for
    /// `service` routing.
    pub fn of(
        bgd: &'a BlueGreenDeployment,
        client: Client,
        observed: Option<&'a DynamicObject>,
    ) -> Option<Self> {
        let (kind, name) = RouteKind::of(bgd)?;
        Some(Route {
            bgd,
            client,
            kind,
            name,
            observed,
        })
    }

    /// What the observed route holds for the colors (`None`: absent or unreadable).
    pub fn observe(&self) -> Option<RouteObs> {
        let spec = &self.observed?.data["spec"];
        self.kind.observe(spec, self.bgd, &self.name).ok()
    }

    fn api(&self) -> Result<Api<DynamicObject>, Error> {
        let ns = self
            .bgd
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            ns,
            &self.kind.api_resource(),
        ))
    }

    /// Read the route fresh, apply `change` (given the split it implements now, read
    /// against `stable`) to the parts Cutover manages, and write it back with the
    /// resourceVersion read.
    async fn update(
        &self,
        stable: Color,
        change: impl FnOnce(Target) -> Target,
    ) -> Result<(), Error> {
        let (kind, bgd) = (self.kind, self.bgd);
        self.rewrite(|spec| {
            let obs = kind
                .observe(spec, bgd, &self.name)
                .ok()
                .and_then(|o| o.relative_to(stable))
                .unwrap_or_default();
            let now = Target {
                stable,
                canary_weight: obs.weight,
                header: obs.header_route.map(|i| header_of(bgd, i)),
                mirror: obs.mirror,
            };
            let target = change(now);
            tracing::debug!(name = %bgd.name_any(), route = %self.name, ?target, "{}", kind.kind());
            kind.render(spec, bgd, &target)
        })
        .await
    }

    /// Read the route fresh (an owned kind absent is made), give its spec to `change`, and
    /// write what it returns, if different, with the resourceVersion read.
    async fn rewrite(
        &self,
        change: impl FnOnce(&serde_json::Value) -> serde_json::Value,
    ) -> Result<(), Error> {
        let (kind, rname, bgd) = (self.kind, &self.name, self.bgd);
        let api = self.api()?;
        let current = api.get_opt(rname).await.map_err(|source| Error::Read {
            kind: kind.kind(),
            name: rname.clone(),
            source,
        })?;
        let mut route = match current {
            Some(r) => r,
            None if kind.owned() => {
                let mut r = DynamicObject::new(rname, &kind.api_resource())
                    .within(&bgd.namespace().unwrap_or_default());
                r.metadata.owner_references = Some(vec![owner_reference(bgd)?]);
                r.metadata.labels = Some(owned_labels(&bgd.name_any(), None));
                r.data = serde_json::json!({ "spec": {} });
                r
            }
            None => return Ok(()),
        };
        let spec = route.data["spec"].clone();
        let new_spec = change(&spec);
        if new_spec == spec {
            return Ok(());
        }
        route.data["spec"] = new_spec;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        let written = if route.metadata.resource_version.is_some() {
            api.replace(rname, &pp, &route).await
        } else {
            api.create(&pp, &route).await
        };
        written.map_err(|source| Error::Apply {
            kind: kind.kind(),
            name: rname.clone(),
            source,
        })?;
        tracing::info!(name = %bgd.name_any(), route = %rname, "updated {}", kind.kind());
        Ok(())
    }
}

impl TrafficProvider for Route<'_> {
    type Backend = Color;

    /// The color with most of the weight is read as live (the live Service is the
    /// authority: [`super::Traffic`] reads the split against it).
    fn read(&self) -> Result<Observed<Color>, Error> {
        let Some(obs) = self.observe() else {
            return Ok(Observed::default());
        };
        let live = match obs.weights.blue.cmp(&obs.weights.green) {
            std::cmp::Ordering::Greater => Some(Color::Blue),
            std::cmp::Ordering::Less => Some(Color::Green),
            std::cmp::Ordering::Equal => None,
        };
        Ok(Observed {
            live,
            split: live.and_then(|l| obs.relative_to(l)).unwrap_or_default(),
        })
    }

    async fn set_weight(&self, stable: Color, weight: u8) -> Result<(), Error> {
        self.update(stable, |now| Target {
            canary_weight: weight,
            ..now
        })
        .await
    }

    async fn set_header_route(
        &self,
        stable: Color,
        header: Option<HeaderRoute>,
    ) -> Result<(), Error> {
        self.update(stable, |now| Target { header, ..now }).await
    }

    async fn set_mirror(&self, stable: Color, percent: u8) -> Result<(), Error> {
        self.update(stable, |now| Target {
            mirror: percent,
            ..now
        })
        .await
    }

    async fn switch_live(&self, to: Color) -> Result<(), Error> {
        self.update(to, |_| Target {
            stable: to,
            canary_weight: 0,
            header: None,
            mirror: 0,
        })
        .await
    }

    /// Everything back on the color that has most of the traffic, no header route or
    /// mirror (an owned TrafficSplit goes with its owner). An adopted workload's route
    /// sends to the live Service `<name>` again: it is the user's, and outlives the colors.
    async fn remove(&self) -> Result<(), Error> {
        if self.kind.owned() {
            return Ok(());
        }
        if self.bgd.spec.workload_ref.is_some() {
            let (kind, bgd) = (self.kind, self.bgd);
            return self.rewrite(|spec| kind.give_back(spec, bgd)).await;
        }
        match self.read()?.live {
            Some(live) => self.switch_live(live).await,
            None => Ok(()),
        }
    }
}
