//! The Services traffic goes through: live `<name>`, preview `<name>-preview` and one per
//! color `<name>-<color>`, rendered from the spec (pure). Both live switches
//! ([`super::live_selector`], [`super::live_endpoints`]) write them.

use cutover_api::k8s_openapi::api::core::v1::{
    Service, ServicePort as K8sServicePort, ServiceSpec,
};
use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use cutover_api::{BlueGreenDeployment, COLOR_LABEL};
use cutover_core::Color;

use crate::error::Error;
use crate::objects::{metadata, name_of};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::bgd;

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
