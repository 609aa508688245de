//! The objects a BlueGreenDeployment owns, rendered from its spec. Pure: no I/O, so the
//! exact shape of every owned object is unit-tested.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use cutover_api::{
    BlueGreenDeployment, COLOR_LABEL, INSTANCE_LABEL, REVISION_ANNOTATION, TEMPLATE_HASH_ANNOTATION,
};
use cutover_core::Color;

use crate::error::Error;
use crate::objects::{metadata, name_of};

/// Name of a color's Deployment.
pub fn deployment_name(name: &str, color: Color) -> String {
    format!("{name}-{color}")
}

/// The pods' selector for `color`: the user's selector plus the color label.
fn color_selector(bgd: &BlueGreenDeployment, color: Color) -> LabelSelector {
    let mut selector = bgd.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(COLOR_LABEL.to_string(), color.as_str().to_string());
    selector
}

/// The Deployment of `color` running the spec's template as `revision` (whose hash is
/// `template_hash`), at `replicas` pods.
pub fn color_deployment(
    bgd: &BlueGreenDeployment,
    color: Color,
    template_hash: &str,
    revision: i64,
    replicas: i32,
) -> Result<Deployment, Error> {
    let name = name_of(bgd)?;
    let mut meta = metadata(bgd, deployment_name(name, color), Some(color))?;
    meta.annotations = Some(BTreeMap::from([
        (
            TEMPLATE_HASH_ANNOTATION.to_string(),
            template_hash.to_string(),
        ),
        (REVISION_ANNOTATION.to_string(), revision.to_string()),
    ]));
    let mut template = bgd.spec.template.clone();
    let pod_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let labels = pod_meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(COLOR_LABEL.to_string(), color.as_str().to_string());
    labels.insert(INSTANCE_LABEL.to_string(), name.to_string());
    Ok(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: color_selector(bgd, color),
            template,
            // The idle color takes no live traffic while its template changes: replace all
            // pods at once rather than rolling.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".to_string()),
                rolling_update: None,
            }),
            revision_history_limit: Some(1),
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// Name of the ControllerRevision recording revision `hash` of `name`.
pub fn revision_name(name: &str, hash: &str) -> String {
    format!("{name}-{hash}")
}

/// The ControllerRevision that records a revision's template (for `kubectl cutover undo
/// --to-revision N`): the user's `spec.template` as written, in `data.template`.
pub fn controller_revision(
    bgd: &BlueGreenDeployment,
    template_hash: &str,
    revision: i64,
) -> Result<cutover_api::k8s_openapi::api::apps::v1::ControllerRevision, Error> {
    let name = name_of(bgd)?;
    let mut meta = metadata(bgd, revision_name(name, template_hash), None)?;
    meta.annotations = Some(BTreeMap::from([(
        TEMPLATE_HASH_ANNOTATION.to_string(),
        template_hash.to_string(),
    )]));
    let template = serde_json::to_value(&bgd.spec.template).map_err(|source| Error::Serialize {
        what: "spec.template",
        source,
    })?;
    Ok(
        cutover_api::k8s_openapi::api::apps::v1::ControllerRevision {
            metadata: meta,
            revision,
            data: Some(
                cutover_api::k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                    serde_json::json!({ "template": template }),
                ),
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::bgd;

    #[test]
    fn color_deployment_selects_only_its_color_and_records_the_revision() {
        let d = color_deployment(&bgd(), Color::Green, "abc", 7, 3).expect("render");
        assert_eq!(d.metadata.name.as_deref(), Some("shop-green"));
        let spec = d.spec.expect("spec");
        let sel = spec.selector.match_labels.expect("labels");
        assert_eq!(sel.get("app").map(String::as_str), Some("shop"));
        assert_eq!(sel.get(COLOR_LABEL).map(String::as_str), Some("green"));
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("pod labels");
        assert_eq!(
            pod_labels.get(COLOR_LABEL).map(String::as_str),
            Some("green")
        );
        let ann = d.metadata.annotations.expect("annotations");
        assert_eq!(
            ann.get(TEMPLATE_HASH_ANNOTATION).map(String::as_str),
            Some("abc")
        );
        assert_eq!(ann.get(REVISION_ANNOTATION).map(String::as_str), Some("7"));
        let owner = &d.metadata.owner_references.expect("owner")[0];
        assert_eq!(owner.uid, "u-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(spec.replicas, Some(3));
    }
}
