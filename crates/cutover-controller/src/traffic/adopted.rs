//! The user's own Service as the live Service (`spec.workloadRef`): a Service named like the
//! BlueGreenDeployment that selects the adopted Deployment's pods. The controller never
//! owns it (no owner reference: deleting the BlueGreenDeployment does not delete it) and
//! writes only its selector — the selector it had plus `cutover.dev/color` — with a label
//! that brings it into the controller's cache and an annotation with the selector it had,
//! under a field manager of its own. Giving it back writes that selector again and drops
//! the label and annotations.
//!
//! With a color away from home (`spec.environments`) Cutover's own live Service has no
//! selector and serves the mirrored EndpointSlice `<name>` of the live color's endpoints.
//! An adopted Service keeps its selector (kube-controller-manager keeps the slice it makes
//! from it only while there is one): the mirrored slice is written first, then the
//! selector gets the color label as above, which at home selects the live color's pods if
//! it runs there and nothing otherwise. Giving it back restores the selector before the
//! mirrored slice goes.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::core::v1::Service;
use cutover_api::k8s_openapi::api::discovery::v1::EndpointSlice;
use cutover_api::kube::api::DeleteParams;
use cutover_api::kube::{Api, Client, ResourceExt as _};
use cutover_api::{BlueGreenDeployment, COLOR_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use cutover_core::Color;
use serde_json::json;

use crate::error::Error;
use crate::objects::{apply_fields, owned_by};

/// Annotation on an adopted Service: the uid of the BlueGreenDeployment switching it.
pub const ADOPTED_BY: &str = "cutover.dev/adopted-by";

/// Annotation on an adopted Service: its selector before adoption (JSON).
pub const SELECTOR_BEFORE: &str = "cutover.dev/selector-before-adoption";

/// The field manager part the adopted Service's selector is written with.
const PART: &str = "adopted-service";

/// Whether `svc` is a Service `bgd` may switch without owning it: `bgd` adopts a workload
/// and does not own the Service (pure).
pub fn adoptable(svc: &Service, bgd: &BlueGreenDeployment) -> bool {
    bgd.spec.workload_ref.is_some() && !owned_by(&svc.metadata, bgd)
}

/// The selector `svc` had before it was adopted (pure).
pub fn selector_before(svc: &Service) -> BTreeMap<String, String> {
    svc.annotations()
        .get(SELECTOR_BEFORE)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| {
            let mut s = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            s.remove(COLOR_LABEL);
            s
        })
}

/// Point adopted Service `svc` of `bgd` at `color`'s pods.
pub async fn point(
    client: &Client,
    bgd: &BlueGreenDeployment,
    svc: &Service,
    color: Color,
) -> Result<(), Error> {
    let before = selector_before(svc);
    let mut selector = before.clone();
    selector.insert(COLOR_LABEL.to_string(), color.as_str().to_string());
    let before = serde_json::to_string(&before).map_err(|source| Error::Serialize {
        what: "Service selector",
        source,
    })?;
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    apply_fields(
        &api,
        &svc.name_any(),
        PART,
        json!({
            "metadata": {
                "labels": { MANAGED_BY_LABEL: MANAGED_BY },
                "annotations": {
                    ADOPTED_BY: bgd.metadata.uid.clone().unwrap_or_default(),
                    SELECTOR_BEFORE: before,
                }
            },
            "spec": { "selector": selector }
        }),
    )
    .await
}

/// Whether adopted Service `svc` is `bgd`'s and selects `color` (pure).
pub fn selects(svc: &Service, bgd: &BlueGreenDeployment, color: Color) -> bool {
    svc.annotations().get(ADOPTED_BY) == bgd.metadata.uid.as_ref()
        && super::services::selected_color(svc) == Some(color)
}

/// Give Service `name` in `ns` back, if `bgd` adopted it: its selector as it was, without
/// the controller's label and annotations; then its mirrored EndpointSlice (if any) goes.
pub async fn give_back(
    client: &Client,
    ns: &str,
    name: &str,
    bgd: &BlueGreenDeployment,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let Some(svc) = crate::objects::get(&api, "Service", name).await? else {
        return Ok(());
    };
    if svc.annotations().get(ADOPTED_BY) != bgd.metadata.uid.as_ref() {
        return Ok(());
    }
    apply_fields(
        &api,
        name,
        PART,
        json!({ "spec": { "selector": selector_before(&svc) } }),
    )
    .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    if let Some(slice) = crate::objects::get(&slices, "EndpointSlice", name).await?
        && owned_by(&slice.metadata, bgd)
    {
        slices
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Apply {
                kind: "EndpointSlice",
                name: name.to_string(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_service(selector: serde_json::Value, annotations: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": { "name": "shop", "namespace": "prod", "annotations": annotations },
            "spec": { "selector": selector, "ports": [{ "port": 80 }] }
        }))
        .expect("service")
    }

    #[test]
    fn the_selector_before_adoption_survives_switches() {
        let fresh = user_service(json!({ "app": "shop" }), json!({}));
        assert_eq!(
            selector_before(&fresh),
            BTreeMap::from([("app".to_string(), "shop".to_string())])
        );
        let switched = user_service(
            json!({ "app": "shop", COLOR_LABEL: "green" }),
            json!({ SELECTOR_BEFORE: "{\"app\":\"shop\",\"tier\":\"web\"}" }),
        );
        assert_eq!(
            selector_before(&switched),
            BTreeMap::from([
                ("app".to_string(), "shop".to_string()),
                ("tier".to_string(), "web".to_string())
            ])
        );
    }

    #[test]
    fn an_adopted_service_selects_a_color_for_its_adopter_only() {
        let mut adopter = crate::fixtures::bgd();
        adopter.metadata.uid = Some("u1".into());
        let fresh = user_service(json!({ "app": "shop" }), json!({}));
        assert!(!selects(&fresh, &adopter, Color::Blue));
        let switched = user_service(
            json!({ "app": "shop", COLOR_LABEL: "blue" }),
            json!({ ADOPTED_BY: "u1" }),
        );
        assert!(selects(&switched, &adopter, Color::Blue));
        assert!(!selects(&switched, &adopter, Color::Green));
        let someone_elses = user_service(
            json!({ "app": "shop", COLOR_LABEL: "blue" }),
            json!({ ADOPTED_BY: "u2" }),
        );
        assert!(!selects(&someone_elses, &adopter, Color::Blue));
    }

    #[test]
    fn only_a_workload_adopter_switches_a_service_it_does_not_own() {
        let svc = user_service(json!({ "app": "shop" }), json!({}));
        let plain = crate::fixtures::bgd();
        assert!(!adoptable(&svc, &plain));
        let mut adopter = crate::fixtures::bgd();
        adopter.spec.workload_ref = Some(cutover_api::blue_green::WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "shop".into(),
            scale_down: Default::default(),
        });
        assert!(adoptable(&svc, &adopter));
    }
}
