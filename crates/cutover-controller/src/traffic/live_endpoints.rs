//! The live switch when the colors run in other namespaces or clusters
//! (`spec.environments`): the live Service `<name>` has no selector, and its EndpointSlice
//! `<name>` mirrors one color's ready endpoints, labelled with that color. A switch is one
//! write of that EndpointSlice: the old color's addresses are replaced by the new color's in
//! one update, so the live Service is never empty.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::{Api, Client};
use cutover_api::{BlueGreenDeployment, COLOR_LABEL};
use cutover_core::{Color, PerColor};

use super::services::{self, ServiceRole};
use super::{TrafficRouter, TrafficState};
use crate::endpoint_mirror::{self, BLUEGREEN_SLICE_MANAGER, Endpoints};
use crate::error::Error;
use crate::objects::{apply, owned_labels, owner_reference};

/// Switches traffic by rewriting the live Service's mirrored EndpointSlice.
pub struct MirrorRouter<'a> {
    bgd: &'a BlueGreenDeployment,
    client: Client,
    ns: String,
    endpoints: &'a PerColor<Endpoints>,
}

impl std::fmt::Debug for MirrorRouter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorRouter")
            .field("bgd", &self.bgd.metadata.name)
            .finish_non_exhaustive()
    }
}

impl<'a> MirrorRouter<'a> {
    /// The router of `bgd` in its namespace `ns`, with each color's ready endpoints.
    pub fn new(
        bgd: &'a BlueGreenDeployment,
        client: Client,
        ns: &str,
        endpoints: &'a PerColor<Endpoints>,
    ) -> Self {
        Self {
            bgd,
            client,
            ns: ns.to_string(),
            endpoints,
        }
    }
}

/// The mirrored EndpointSlice of home Service `role`, holding `color`'s endpoints.
pub fn role_slice(
    bgd: &BlueGreenDeployment,
    role: ServiceRole,
    color: Color,
    eps: &Endpoints,
) -> Result<serde_json::Value, Error> {
    let name = role.service_name(bgd.metadata.name.as_deref().unwrap_or_default());
    let mut labels: BTreeMap<String, String> =
        owned_labels(bgd.metadata.name.as_deref().unwrap_or_default(), None);
    labels.insert(COLOR_LABEL.into(), color.as_str().into());
    let owner = owner_reference(bgd)?;
    Ok(endpoint_mirror::slice(
        &name,
        &name,
        &services::port_name(bgd),
        &labels,
        BLUEGREEN_SLICE_MANAGER,
        &owner,
        eps,
    ))
}

/// Write home Service `role` (no selector) and its EndpointSlice with `color`'s endpoints.
pub async fn point(
    bgd: &BlueGreenDeployment,
    client: &Client,
    ns: &str,
    role: ServiceRole,
    color: Color,
    eps: &Endpoints,
) -> Result<(), Error> {
    let name = role.service_name(bgd.metadata.name.as_deref().unwrap_or_default());
    let svc = services::mirror_service(bgd, role)?;
    apply(client, ns, &name, &svc, "Service").await?;
    let slice = role_slice(bgd, role, color, eps)?;
    endpoint_mirror::apply_slice(client, ns, &slice)
        .await
        .map_err(|source| Error::Apply {
            kind: "EndpointSlice",
            name,
            source,
        })
}

/// The color the mirrored EndpointSlice of home Service `role` holds, if it exists.
pub fn slice_color(slice: &EndpointSlice) -> Option<Color> {
    match slice.metadata.labels.as_ref()?.get(COLOR_LABEL)?.as_str() {
        "blue" => Some(Color::Blue),
        "green" => Some(Color::Green),
        _ => None,
    }
}

impl TrafficRouter for MirrorRouter<'_> {
    async fn set_weight(&self, canary: Color, weight: u8) -> Result<(), Error> {
        let color = if weight >= 100 {
            canary
        } else {
            canary.other()
        };
        let eps = self.endpoints.get(color);
        if eps.addresses.is_empty() {
            return Err(Error::NoEndpoints {
                color: color.as_str(),
            });
        }
        point(
            self.bgd,
            &self.client,
            &self.ns,
            ServiceRole::Live,
            color,
            eps,
        )
        .await
    }

    async fn read(&self) -> Result<Option<TrafficState>, Error> {
        let name =
            ServiceRole::Live.service_name(self.bgd.metadata.name.as_deref().unwrap_or_default());
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let slice = api.get_opt(&name).await.map_err(|source| Error::Read {
            kind: "EndpointSlice",
            name,
            source,
        })?;
        Ok(slice
            .as_ref()
            .and_then(slice_color)
            .map(|stable| TrafficState {
                stable,
                canary_weight: 0,
            }))
    }
}
