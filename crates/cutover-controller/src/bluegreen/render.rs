//! The objects a BlueGreenDeployment owns, rendered from its spec. Pure: no I/O, so the
//! exact shape of every owned object is unit-tested.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use cutover_api::k8s_openapi::api::core::v1::{
    Service, ServicePort as K8sServicePort, ServiceSpec,
};
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference,
};
use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use cutover_api::kube::Resource as _;
use cutover_api::{
    BlueGreenDeployment, COLOR_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    REVISION_ANNOTATION, TEMPLATE_HASH_ANNOTATION,
};
use cutover_core::Color;

use crate::error::Error;

/// The four Services of a BlueGreenDeployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRole {
    /// `<name>`: live traffic.
    Live,
    /// `<name>-preview`: the new color.
    Preview,
    /// `<name>-<color>`: one color, always.
    Color(Color),
}

impl ServiceRole {
    /// Every role, in the order they are observed.
    pub const ALL: [ServiceRole; 4] = [
        ServiceRole::Live,
        ServiceRole::Preview,
        ServiceRole::Color(Color::Blue),
        ServiceRole::Color(Color::Green),
    ];

    /// The Service's name for BlueGreenDeployment `name`.
    pub fn service_name(self, name: &str) -> String {
        match self {
            ServiceRole::Live => name.to_string(),
            ServiceRole::Preview => format!("{name}-preview"),
            ServiceRole::Color(c) => format!("{name}-{c}"),
        }
    }
}

/// Name of a color's Deployment.
pub fn deployment_name(name: &str, color: Color) -> String {
    format!("{name}-{color}")
}

/// Controller owner reference to `bgd`.
pub fn owner_reference(bgd: &BlueGreenDeployment) -> Result<OwnerReference, Error> {
    bgd.controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}

fn name_of(bgd: &BlueGreenDeployment) -> Result<&str, Error> {
    bgd.metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))
}

/// Labels on every owned object.
pub fn owned_labels(name: &str, color: Option<Color>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ]);
    if let Some(c) = color {
        labels.insert(COLOR_LABEL.to_string(), c.as_str().to_string());
    }
    labels
}

fn metadata(
    bgd: &BlueGreenDeployment,
    name: String,
    color: Option<Color>,
) -> Result<ObjectMeta, Error> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: bgd.metadata.namespace.clone(),
        labels: Some(owned_labels(name_of(bgd)?, color)),
        owner_references: Some(vec![owner_reference(bgd)?]),
        ..ObjectMeta::default()
    })
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

/// The Service of `role` selecting `color`'s pods.
pub fn service(
    bgd: &BlueGreenDeployment,
    role: ServiceRole,
    color: Color,
) -> Result<Service, Error> {
    let name = name_of(bgd)?;
    let fixed_color = match role {
        ServiceRole::Color(c) => Some(c),
        _ => None,
    };
    let mut selector = bgd.spec.selector.match_labels.clone().unwrap_or_default();
    selector.insert(COLOR_LABEL.to_string(), color.as_str().to_string());
    let port = &bgd.spec.service;
    Ok(Service {
        metadata: metadata(bgd, role.service_name(name), fixed_color)?,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![K8sServicePort {
                name: Some(port_name(bgd)),
                port: port.port,
                target_port: Some(
                    port.target_port
                        .clone()
                        .unwrap_or(IntOrString::Int(port.port)),
                ),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".to_string())),
                ..K8sServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The Service of `role` without a selector: its endpoints are mirrored from where the
/// color runs (`spec.environments`). Its port's target is the port itself (a Service
/// without a selector takes its endpoints' ports from its EndpointSlices).
pub fn mirror_service(bgd: &BlueGreenDeployment, role: ServiceRole) -> Result<Service, Error> {
    let mut svc = service(bgd, role, Color::Blue)?;
    if let Some(spec) = svc.spec.as_mut() {
        spec.selector = None;
        for p in spec.ports.iter_mut().flatten() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    Ok(svc)
}

/// The name of the Services' port (and of the mirrored EndpointSlices' port).
pub fn port_name(bgd: &BlueGreenDeployment) -> String {
    bgd.spec
        .service
        .name
        .clone()
        .unwrap_or_else(|| "http".to_string())
}

/// The color a Service selects, read from its selector.
pub fn selected_color(svc: &Service) -> Option<Color> {
    let selector = svc.spec.as_ref()?.selector.as_ref()?;
    match selector.get(COLOR_LABEL)?.as_str() {
        "blue" => Some(Color::Blue),
        "green" => Some(Color::Green),
        _ => None,
    }
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

    fn bgd() -> BlueGreenDeployment {
        let mut b: BlueGreenDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1",
            "kind": "BlueGreenDeployment",
            "metadata": { "name": "shop", "namespace": "prod", "uid": "u-1" },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": {
                    "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [{ "name": "app", "image": "shop:1" }] }
                },
                "service": { "port": 80, "targetPort": 8080 }
            }
        }))
        .expect("valid");
        b.metadata.uid = Some("u-1".into());
        b
    }

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

    #[test]
    fn services_select_the_given_color_on_the_target_port() {
        let s = service(&bgd(), ServiceRole::Live, Color::Blue).expect("render");
        assert_eq!(s.metadata.name.as_deref(), Some("shop"));
        assert_eq!(selected_color(&s), Some(Color::Blue));
        let port = &s
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports")[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
        let p = service(&bgd(), ServiceRole::Preview, Color::Green).expect("render");
        assert_eq!(p.metadata.name.as_deref(), Some("shop-preview"));
        assert_eq!(selected_color(&p), Some(Color::Green));
        let g = service(&bgd(), ServiceRole::Color(Color::Green), Color::Green).expect("render");
        assert_eq!(g.metadata.name.as_deref(), Some("shop-green"));
    }

    #[test]
    fn a_mirror_service_has_no_selector_and_keeps_the_port() {
        let s = mirror_service(&bgd(), ServiceRole::Live).expect("render");
        assert_eq!(s.metadata.name.as_deref(), Some("shop"));
        let spec = s.spec.expect("spec");
        assert!(spec.selector.is_none());
        let port = &spec.ports.expect("ports")[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.name.as_deref(), Some("http"));
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
    }
}
