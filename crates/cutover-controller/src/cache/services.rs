//! Services as the caches keep them: [`CachedService`], four per BlueGreenDeployment. A
//! k8s-openapi `Service` is 824 bytes before any string, and each of its label and selector
//! maps is a B-tree node of about half a kilobyte however few entries it has: 3.6 KB per
//! Service as cached before this view (measured by deserializing 20,000 copies of one the
//! controller made). Here labels, annotations and selector are short lists and the spec is only what a
//! pass compares. A pass gets a `Service` back ([`CachedService::to_service`]).

use cutover_api::k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use cutover_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// A Service as cached: its metadata without labels and annotations (kept as lists beside
/// it), its selector and its ports' names and numbers.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedService {
    /// Its metadata, without labels, annotations or managed fields (see [`slim`]).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// As it comes from the watch; emptied by [`slim`] (boxed: a `ServiceSpec` is 416
    /// bytes inline, even once it is gone).
    #[serde(default)]
    spec: Option<Box<ServiceSpec>>,
    #[serde(skip)]
    maps: super::FlatMaps,
    #[serde(skip)]
    selector: Option<Vec<(String, String)>>,
    #[serde(skip)]
    ports: Option<Vec<Port>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Port {
    name: Option<String>,
    port: i32,
    target_port: Option<IntOrString>,
}

view_of!(CachedService, Service);

impl CachedService {
    /// The Service as a pass reads it: what the cache keeps, the rest empty.
    pub fn to_service(&self) -> Service {
        let mut metadata = self.metadata.clone();
        self.maps.restore(&mut metadata);
        Service {
            metadata,
            spec: Some(ServiceSpec {
                selector: self.selector.as_ref().map(|s| s.iter().cloned().collect()),
                ports: self.ports.as_ref().map(|ports| {
                    ports
                        .iter()
                        .map(|p| ServicePort {
                            name: p.name.clone(),
                            port: p.port,
                            target_port: p.target_port.clone(),
                            ..ServicePort::default()
                        })
                        .collect()
                }),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }
}

/// [`super::slim`], and of a Service what no pass reads: annotations other than Cutover's
/// (an adopted Service's selector before adoption is one), and of its spec all but the
/// selector and the ports' names and numbers; labels and selector become lists.
pub fn slim(s: &mut CachedService) {
    super::slim(s);
    if let Some(a) = s.metadata.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("cutover.dev/"));
        if a.is_empty() {
            s.metadata.annotations = None;
        }
    }
    s.maps.take(&mut s.metadata);
    if let Some(spec) = s.spec.take() {
        s.selector = spec.selector.map(|m| m.into_iter().collect());
        s.ports = spec.ports.map(|ports| {
            ports
                .into_iter()
                .map(|p| Port {
                    name: p.name,
                    port: p.port,
                    target_port: p.target_port,
                })
                .collect()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_a_pass_reads_and_gives_a_service_back() {
        let full = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "shop", "namespace": "prod", "uid": "s1",
                "labels": { "app.kubernetes.io/managed-by": "cutover", "team": "a" },
                "annotations": { "cutover.dev/adopted-by": "u1", "other": "x" },
                "ownerReferences": [{ "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
                                      "name": "shop", "uid": "u1", "controller": true }],
                "managedFields": [{ "manager": "cutover-controller", "operation": "Apply" }]
            },
            "spec": {
                "selector": { "app": "shop", "cutover.dev/color": "blue" },
                "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP" }],
                "clusterIP": "10.96.0.10", "type": "ClusterIP", "sessionAffinity": "None"
            },
            "status": { "loadBalancer": {} }
        });
        let mut cached: CachedService = serde_json::from_value(full.clone()).expect("cached");
        slim(&mut cached);
        assert!(cached.spec.is_none() && cached.metadata.labels.is_none());
        assert!(cached.metadata.annotations.is_none());
        let s = cached.to_service();
        let original: Service = serde_json::from_value(full).expect("service");
        assert_eq!(s.metadata.labels, original.metadata.labels);
        assert_eq!(
            s.metadata.owner_references,
            original.metadata.owner_references
        );
        assert_eq!(s.metadata.managed_fields, None);
        assert_eq!(
            s.metadata.annotations,
            Some([("cutover.dev/adopted-by".to_string(), "u1".to_string())].into())
        );
        let (spec, was) = (s.spec.expect("spec"), original.spec.expect("spec"));
        assert_eq!(spec.selector, was.selector);
        let port = &spec.ports.expect("ports")[0];
        let was_port = &was.ports.expect("ports")[0];
        assert_eq!(
            (&port.name, port.port, &port.target_port),
            (&was_port.name, was_port.port, &was_port.target_port)
        );
        assert_eq!(spec.cluster_ip, None, "what no pass reads is gone");
    }
}
