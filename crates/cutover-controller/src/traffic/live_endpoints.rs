//! The live switch when the colors run in other namespaces or clusters
//! (`spec.environments`): the live Service `<name>` has no selector, and its EndpointSlice
//! `<name>` mirrors one color's ready endpoints, labelled with that color. A switch is one
//! write of that EndpointSlice: the old color's addresses are replaced by the new color's in
//! one update, so the live Service is never empty.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::{Client, ResourceExt as _};
use cutover_api::{BlueGreenDeployment, COLOR_LABEL};
use cutover_core::{Color, PerColor};

use super::services::{self, ServiceRole};
use crate::endpoint_mirror::{self, BLUEGREEN_SLICE_MANAGER, Endpoints};
use crate::error::Error;
use crate::objects::{apply_owned, owned_labels, owner_reference, refuse_taken};

/// Switches traffic by rewriting the live Service's mirrored EndpointSlice.
pub struct LiveEndpoints<'a> {
    bgd: &'a BlueGreenDeployment,
    client: Client,
    /// Each color's ready endpoints where it runs, as observed this pass.
    endpoints: &'a PerColor<Endpoints>,
    /// The live Service's mirrored EndpointSlice as observed this pass.
    observed: Option<&'a EndpointSlice>,
    /// Whether the pass knows first hand that the live Service and its slice are absent or
    /// ours.
    checked: bool,
    /// The user's Service of the live Service's name, adopted (`spec.workloadRef`).
    adopted: Option<&'a Service>,
}

impl std::fmt::Debug for LiveEndpoints<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEndpoints")
            .field("bgd", &self.bgd.metadata.name)
            .finish_non_exhaustive()
    }
}

impl<'a> LiveEndpoints<'a> {
    /// The switch of `bgd`, with each color's ready `endpoints` and the live slice
    /// `observed`.
    pub fn new(
        bgd: &'a BlueGreenDeployment,
        client: Client,
        endpoints: &'a PerColor<Endpoints>,
        (observed, checked): (Option<&'a EndpointSlice>, bool),
        adopted: Option<&'a Service>,
    ) -> Self {
        Self {
            bgd,
            client,
            endpoints,
            observed,
            checked,
            adopted,
        }
    }

    /// The color the live Service's mirrored EndpointSlice holds, as observed.
    pub fn live(&self) -> Option<Color> {
        self.observed.and_then(slice_color)
    }

    /// Make the live Service's EndpointSlice hold `color`'s ready endpoints.
    pub async fn point(&self, color: Color) -> Result<(), Error> {
        let eps = self.endpoints.get(color);
        if eps.addresses.is_empty() {
            return Err(Error::NoEndpoints {
                color: color.as_str(),
            });
        }
        let ns = self.bgd.namespace().unwrap_or_default();
        let checked = (ServiceRole::Live, self.checked);
        point(
            self.bgd,
            &self.client,
            &ns,
            checked,
            color,
            eps,
            self.adopted,
        )
        .await
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
/// Unless the pass `checked` both first hand, they are read first ([`apply_owned`]). An
/// `adopted` Service of the user's (`spec.workloadRef`) keeps its selector, which is
/// switched to `color` once the slice is there ([`super::adopted`]).
pub async fn point(
    bgd: &BlueGreenDeployment,
    client: &Client,
    ns: &str,
    (role, checked): (ServiceRole, bool),
    color: Color,
    eps: &Endpoints,
    adopted: Option<&Service>,
) -> Result<(), Error> {
    let name = role.service_name(bgd.metadata.name.as_deref().unwrap_or_default());
    if !checked {
        refuse_taken::<EndpointSlice>(client, ns, &name, "EndpointSlice", bgd).await?;
    }
    if adopted.is_none() {
        let svc = services::mirror_service(bgd, role)?;
        apply_owned(client, ns, &name, &svc, "Service", (bgd, checked)).await?;
    }
    let slice = role_slice(bgd, role, color, eps)?;
    endpoint_mirror::apply_slice(client, ns, &slice)
        .await
        .map_err(|source| Error::Apply {
            kind: "EndpointSlice",
            name,
            source,
        })?;
    match adopted {
        Some(user) => super::adopted::point(client, bgd, user, color).await,
        None => Ok(()),
    }
}

/// The color the mirrored EndpointSlice of home Service `role` holds, if it exists.
pub fn slice_color(slice: &EndpointSlice) -> Option<Color> {
    match slice.metadata.labels.as_ref()?.get(COLOR_LABEL)?.as_str() {
        "blue" => Some(Color::Blue),
        "green" => Some(Color::Green),
        _ => None,
    }
}
