//! The live switch when both colors run at home: the live Service `<name>` selects one
//! color's pods. A switch is one server-side apply of the Service's selector; kube-proxy
//! (or the mesh) follows the EndpointSlices, which change from one color's ready pods to
//! the other's in one update.

use cutover_api::BlueGreenDeployment;
use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::kube::{Client, ResourceExt as _};
use cutover_core::Color;

use super::services::{self, ServiceRole};
use crate::error::Error;
use crate::objects::apply_owned;

/// Switches traffic with the live Service's selector.
pub struct LiveSelector<'a> {
    bgd: &'a BlueGreenDeployment,
    client: Client,
    /// The live Service as observed this pass.
    observed: Option<&'a Service>,
    /// Whether the pass knows first hand that the live Service is absent or ours.
    checked: bool,
}

impl std::fmt::Debug for LiveSelector<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSelector")
            .field("bgd", &self.bgd.metadata.name)
            .finish_non_exhaustive()
    }
}

impl<'a> LiveSelector<'a> {
    /// The switch of `bgd`, whose live Service was `observed` (`checked`: first hand, so
    /// that writing it needs no read before).
    pub fn new(
        bgd: &'a BlueGreenDeployment,
        client: Client,
        (observed, checked): (Option<&'a Service>, bool),
    ) -> Self {
        Self {
            bgd,
            client,
            observed,
            checked,
        }
    }

    /// The color the live Service selects, as observed.
    pub fn live(&self) -> Option<Color> {
        self.observed.and_then(services::selected_color)
    }

    /// Make the live Service select `color`'s pods.
    pub async fn point(&self, color: Color) -> Result<(), Error> {
        if let Some(user) = self.observed
            && super::adopted::adoptable(user, self.bgd)
        {
            return super::adopted::point(&self.client, self.bgd, user, color).await;
        }
        let svc = services::service(self.bgd, ServiceRole::Live, color)?;
        let name = ServiceRole::Live.service_name(&self.bgd.name_any());
        let ns = self.bgd.namespace().unwrap_or_default();
        let checked = (self.bgd, self.checked);
        apply_owned(&self.client, &ns, &name, &svc, "Service", checked)
            .await
            .map(|_| ())
    }
}
