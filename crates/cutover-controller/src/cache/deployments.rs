//! Cutover's Deployments as the caches keep them: [`CachedDeployment`], the few fields a
//! pass reads, deserialized straight from the watch. A k8s-openapi `Deployment` is 2,448
//! bytes before any string and each `Container` 2,144 (every field an inline `Option`),
//! so two colors per BlueGreenDeployment cost about 12 KB as full types even with all
//! but names, images and config references dropped; this view keeps them in about a
//! quarter of that. A pass gets a `Deployment` back ([`CachedDeployment::to_deployment`]),
//! so nothing past the cache knows the difference.

use cutover_api::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use cutover_api::k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PodSpec, PodTemplateSpec, Volume,
};
use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A Deployment of Cutover's as cached: metadata, size, status counts, and of its pod
/// template the containers' names, images and config references.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedDeployment {
    /// Its metadata (managed fields dropped, labels and annotations moved to lists by
    /// [`slim`]).
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    maps: super::FlatMaps,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Spec {
    replicas: Option<i32>,
    #[serde(default)]
    template: Template,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Template {
    #[serde(default)]
    spec: Pod,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pod {
    #[serde(default)]
    containers: Vec<CachedContainer>,
    init_containers: Option<Vec<CachedContainer>>,
    volumes: Option<Vec<Volume>>,
}

/// What a pass reads of a container: its name and image (shown in status) and the
/// ConfigMaps and Secrets it references (which config snapshots are still in use).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedContainer {
    name: String,
    image: Option<String>,
    env: Option<Vec<EnvVar>>,
    env_from: Option<Vec<EnvFromSource>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    observed_generation: Option<i64>,
    replicas: Option<i32>,
    updated_replicas: Option<i32>,
    ready_replicas: Option<i32>,
    available_replicas: Option<i32>,
}

view_of!(CachedDeployment, Deployment);

impl CachedDeployment {
    /// The Deployment as a pass reads it: what the cache keeps, the rest empty.
    pub fn to_deployment(&self) -> Deployment {
        let container = |c: &CachedContainer| Container {
            name: c.name.clone(),
            image: c.image.clone(),
            env: c.env.clone(),
            env_from: c.env_from.clone(),
            ..Container::default()
        };
        let pod = &self.spec.template.spec;
        let st = &self.status;
        let mut metadata = self.metadata.clone();
        self.maps.restore(&mut metadata);
        Deployment {
            metadata,
            spec: Some(DeploymentSpec {
                replicas: self.spec.replicas,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: pod.containers.iter().map(container).collect(),
                        init_containers: pod
                            .init_containers
                            .as_ref()
                            .map(|cs| cs.iter().map(container).collect()),
                        volumes: pod.volumes.clone(),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: st.observed_generation,
                replicas: st.replicas,
                updated_replicas: st.updated_replicas,
                ready_replicas: st.ready_replicas,
                available_replicas: st.available_replicas,
                ..DeploymentStatus::default()
            }),
        }
    }
}

/// [`super::slim`], labels and annotations as lists, and of the references only those to
/// config: env entries without `valueFrom` and volumes of other kinds are dropped.
pub fn slim(d: &mut CachedDeployment) {
    super::slim(d);
    d.maps.take(&mut d.metadata);
    let pod = &mut d.spec.template.spec;
    for c in pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
    {
        if let Some(env) = c.env.as_mut() {
            env.retain(|e| e.value_from.is_some());
        }
    }
    if let Some(volumes) = pod.volumes.as_mut() {
        volumes.retain(|v| v.config_map.is_some() || v.secret.is_some() || v.projected.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_a_pass_reads_and_gives_a_deployment_back() {
        let full = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "shop-blue", "namespace": "prod", "generation": 3,
                "labels": { "app.kubernetes.io/managed-by": "cutover" },
                "annotations": { "cutover.dev/template-hash": "abc" },
                "managedFields": [{ "manager": "cutover-controller", "operation": "Apply" }]
            },
            "spec": {
                "replicas": 4,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": {
                    "metadata": { "labels": { "app": "shop" } },
                    "spec": {
                        "containers": [{
                            "name": "app", "image": "shop:2", "args": ["--port=8080"],
                            "env": [{ "name": "PLAIN", "value": "x" },
                                    { "name": "S", "valueFrom": { "secretKeyRef": { "name": "db", "key": "k" } } }],
                            "envFrom": [{ "configMapRef": { "name": "cfg" } }]
                        }],
                        "volumes": [{ "name": "tmp", "emptyDir": {} },
                                    { "name": "tls", "secret": { "secretName": "tls" } }]
                    }
                }
            },
            "status": {
                "observedGeneration": 3, "replicas": 4, "updatedReplicas": 4, "readyReplicas": 3,
                "availableReplicas": 3,
                "conditions": [{ "type": "Available", "status": "True" }]
            }
        });
        let mut cached: CachedDeployment = serde_json::from_value(full.clone()).expect("cached");
        slim(&mut cached);
        let d = cached.to_deployment();
        let original: Deployment = serde_json::from_value(full).expect("deployment");
        assert_eq!(d.metadata.managed_fields, None);
        assert_eq!(d.metadata.generation, Some(3));
        assert!(cached.metadata.labels.is_none() && cached.metadata.annotations.is_none());
        assert_eq!(d.metadata.annotations, original.metadata.annotations);
        assert_eq!(d.metadata.labels, original.metadata.labels);
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(4));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.containers[0].image.as_deref(), Some("shop:2"));
        assert_eq!(pod.containers[0].args, None, "what no pass reads is gone");
        let env: Vec<&str> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, ["S"]);
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["tls"]);
        let mut want = original.status.expect("status");
        want.conditions = None;
        assert_eq!(d.status, Some(want));
    }
}
