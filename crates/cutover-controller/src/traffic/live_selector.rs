//! The `service` router: the live Service `<name>` selects one color's pods. A switch is
//! one server-side apply of the Service's selector; kube-proxy (or the mesh) follows the
//! EndpointSlices, which change from one color's ready pods to the other's in one update.

use cutover_api::BlueGreenDeployment;
use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::kube::Api;
use cutover_api::kube::api::{Patch, PatchParams};
use cutover_core::Color;

use super::services::{self, ServiceRole};
use super::{TrafficRouter, TrafficState};
use crate::FIELD_MANAGER;
use crate::error::Error;

/// Switches traffic with the live Service's selector.
#[derive(Clone)]
pub struct ServiceRouter<'a> {
    bgd: &'a BlueGreenDeployment,
    services: Api<Service>,
}

impl std::fmt::Debug for ServiceRouter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRouter")
            .field("bgd", &self.bgd.metadata.name)
            .finish()
    }
}

impl<'a> ServiceRouter<'a> {
    /// The router of `bgd`, writing through `services` (its namespace).
    pub fn new(bgd: &'a BlueGreenDeployment, services: Api<Service>) -> Self {
        Self { bgd, services }
    }

    fn live_name(&self) -> String {
        ServiceRole::Live.service_name(self.bgd.metadata.name.as_deref().unwrap_or_default())
    }
}

impl TrafficRouter for ServiceRouter<'_> {
    async fn set_weight(&self, canary: Color, weight: u8) -> Result<(), Error> {
        // No weights: 100 sends everything to `canary`, anything else leaves it on the other.
        let color = if weight >= 100 {
            canary
        } else {
            canary.other()
        };
        let svc = services::service(self.bgd, ServiceRole::Live, color)?;
        let name = self.live_name();
        self.services
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&svc),
            )
            .await
            .map_err(|source| Error::Apply {
                kind: "Service",
                name,
                source,
            })?;
        Ok(())
    }

    async fn read(&self) -> Result<Option<TrafficState>, Error> {
        let name = self.live_name();
        let svc = self
            .services
            .get_opt(&name)
            .await
            .map_err(|source| Error::Read {
                kind: "Service",
                name,
                source,
            })?;
        Ok(svc
            .as_ref()
            .and_then(services::selected_color)
            .map(|stable| TrafficState {
                stable,
                canary_weight: 0,
            }))
    }
}
