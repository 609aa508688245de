//! The ConfigMaps and Secrets a pod template uses, the revision hash that covers them, and
//! the per-revision snapshots that keep each color on the config it was released with.
//!
//! A release must be reproducible: the new color sees the new config while the live color
//! keeps the old one. So the controller copies each referenced ConfigMap/Secret into an
//! immutable snapshot named `<name>-<hash of its data>`, owned by the BlueGreenDeployment,
//! and the color's Deployment references the snapshot. Editing the original starts a new
//! release (its hash changes); the live color's pods never see the edit.

use std::collections::BTreeMap;

use cutover_api::k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use sha2::{Digest as _, Sha256};

/// ConfigMap or Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl ConfigKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }
}

/// A ConfigMap or Secret a template references.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    /// Its kind.
    pub kind: ConfigKind,
    /// Its name (same namespace).
    pub name: String,
    /// Every reference to it is `optional: true`.
    pub optional: bool,
}

/// Call `f` on every ConfigMap/Secret name field in the pod spec (volumes, projected
/// volumes, env, envFrom of containers and init containers).
fn visit_refs(spec: &mut PodSpec, f: &mut dyn FnMut(ConfigKind, &mut String, bool)) {
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(cm) = v.config_map.as_mut() {
            f(
                ConfigKind::ConfigMap,
                &mut cm.name,
                cm.optional.unwrap_or(false),
            );
        }
        if let Some(s) = v.secret.as_mut()
            && let Some(name) = s.secret_name.as_mut()
        {
            f(ConfigKind::Secret, name, s.optional.unwrap_or(false));
        }
        if let Some(p) = v.projected.as_mut() {
            for src in p.sources.iter_mut().flatten() {
                if let Some(cm) = src.config_map.as_mut() {
                    f(
                        ConfigKind::ConfigMap,
                        &mut cm.name,
                        cm.optional.unwrap_or(false),
                    );
                }
                if let Some(s) = src.secret.as_mut() {
                    f(ConfigKind::Secret, &mut s.name, s.optional.unwrap_or(false));
                }
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        for e in c.env.iter_mut().flatten() {
            let Some(from) = e.value_from.as_mut() else {
                continue;
            };
            if let Some(r) = from.config_map_key_ref.as_mut() {
                f(
                    ConfigKind::ConfigMap,
                    &mut r.name,
                    r.optional.unwrap_or(false),
                );
            }
            if let Some(r) = from.secret_key_ref.as_mut() {
                f(ConfigKind::Secret, &mut r.name, r.optional.unwrap_or(false));
            }
        }
        for e in c.env_from.iter_mut().flatten() {
            if let Some(r) = e.config_map_ref.as_mut() {
                f(
                    ConfigKind::ConfigMap,
                    &mut r.name,
                    r.optional.unwrap_or(false),
                );
            }
            if let Some(r) = e.secret_ref.as_mut() {
                f(ConfigKind::Secret, &mut r.name, r.optional.unwrap_or(false));
            }
        }
    }
}

/// The ConfigMaps and Secrets `template` references, sorted, each once.
pub fn referenced(template: &PodTemplateSpec) -> Vec<ConfigRef> {
    let mut found: BTreeMap<(ConfigKind, String), bool> = BTreeMap::new();
    let mut spec = template.spec.clone().unwrap_or_default();
    visit_refs(&mut spec, &mut |kind, name, optional| {
        let entry = found.entry((kind, name.clone())).or_insert(true);
        *entry &= optional;
    });
    found
        .into_iter()
        .map(|((kind, name), optional)| ConfigRef {
            kind,
            name,
            optional,
        })
        .collect()
}

/// The data of one referenced object: key → bytes (`None`: it does not exist).
pub type ConfigData = Option<BTreeMap<String, Vec<u8>>>;

/// Hex SHA-256 of a ConfigMap's or Secret's data, short.
pub fn data_hash(data: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
    }
    hex(&h.finalize()[..5])
}

/// The revision hash: the template and the data of every config it references.
pub fn template_hash(template: &PodTemplateSpec, configs: &[(ConfigRef, ConfigData)]) -> String {
    let mut h = Sha256::new();
    // serde_json writes struct fields in declaration order and maps sorted: canonical.
    h.update(serde_json::to_vec(template).unwrap_or_default());
    for (r, data) in configs {
        h.update(r.kind.as_str().as_bytes());
        h.update(r.name.as_bytes());
        match data {
            Some(d) => h.update(data_hash(d).as_bytes()),
            None => h.update(b"-absent-"),
        }
    }
    hex(&h.finalize()[..5])
}

/// Name of the snapshot of `name` with data hash `hash`.
pub fn snapshot_name(name: &str, hash: &str) -> String {
    let mut base = name.to_string();
    // Names are at most 253 characters; keep room for "-" and the hash.
    base.truncate(253 - 1 - hash.len());
    format!("{base}-{hash}")
}

/// `template` with each reference to a config in `snapshots` ((kind, name) → snapshot
/// name) rewritten to the snapshot.
pub fn with_snapshots(
    template: &PodTemplateSpec,
    snapshots: &BTreeMap<(ConfigKind, String), String>,
) -> PodTemplateSpec {
    let mut out = template.clone();
    if let Some(spec) = out.spec.as_mut() {
        visit_refs(spec, &mut |kind, name, _| {
            if let Some(snap) = snapshots.get(&(kind, name.clone())) {
                *name = snap.clone();
            }
        });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "spec": {
                "volumes": [
                    { "name": "cfg", "configMap": { "name": "shop-config" } },
                    { "name": "tls", "secret": { "secretName": "shop-tls" } },
                ],
                "containers": [{
                    "name": "app",
                    "image": "shop:1",
                    "env": [{ "name": "K", "valueFrom": { "secretKeyRef": { "name": "shop-db", "key": "password" } } }],
                    "envFrom": [{ "configMapRef": { "name": "shop-config" } }, { "configMapRef": { "name": "extra", "optional": true } }]
                }]
            }
        }))
        .expect("valid template")
    }

    #[test]
    fn the_cache_keeps_a_deployments_references_and_images() {
        use cutover_api::k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
        let mut t = template();
        if let Some(spec) = t.spec.as_mut() {
            spec.volumes.get_or_insert_default().push(
                serde_json::from_value(serde_json::json!({ "name": "tmp", "emptyDir": {} }))
                    .expect("volume"),
            );
            spec.containers[0].args = Some(vec!["--port=8080".into()]);
            spec.init_containers = Some(vec![
                serde_json::from_value(serde_json::json!({
                    "name": "init", "image": "init:1",
                    "env": [
                        { "name": "PLAIN", "value": "x" },
                        { "name": "S", "valueFrom": { "secretKeyRef": { "name": "init-only", "key": "k", "optional": true } } }
                    ]
                }))
                .expect("container"),
            ]);
        }
        let d = Deployment {
            spec: Some(DeploymentSpec {
                template: t.clone(),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        };
        let mut cached: crate::cache::CachedDeployment =
            serde_json::from_value(serde_json::to_value(&d).expect("JSON")).expect("cached");
        crate::cache::slim_deployment(&mut cached);
        let kept = cached.to_deployment().spec.expect("spec").template;
        assert_eq!(referenced(&kept), referenced(&t));
        let spec = kept.spec.expect("pod spec");
        assert_eq!(spec.containers[0].image.as_deref(), Some("shop:1"));
        assert_eq!(spec.containers[0].args, None, "what no pass reads is gone");
        assert_eq!(
            spec.volumes
                .iter()
                .flatten()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["cfg", "tls"]
        );
    }

    #[test]
    fn finds_every_reference_once() {
        let refs = referenced(&template());
        let names: Vec<_> = refs
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.optional))
            .collect();
        assert_eq!(
            names,
            [
                (ConfigKind::ConfigMap, "extra", true),
                (ConfigKind::ConfigMap, "shop-config", false),
                (ConfigKind::Secret, "shop-db", false),
                (ConfigKind::Secret, "shop-tls", false),
            ]
        );
    }

    #[test]
    fn the_hash_changes_with_the_template_and_with_config_data() {
        let t = template();
        let r = referenced(&t);
        let data = |v: &str| Some(BTreeMap::from([("k".to_string(), v.as_bytes().to_vec())]));
        let base: Vec<_> = r.iter().map(|r| (r.clone(), data("1"))).collect();
        let h1 = template_hash(&t, &base);
        assert_eq!(h1, template_hash(&t, &base), "stable");
        let mut changed = base.clone();
        changed[1].1 = data("2");
        assert_ne!(h1, template_hash(&t, &changed), "config data counts");
        let mut t2 = t.clone();
        if let Some(spec) = t2.spec.as_mut() {
            spec.containers[0].image = Some("shop:2".into());
        }
        assert_ne!(h1, template_hash(&t2, &base), "template counts");
    }

    #[test]
    fn snapshots_replace_every_reference() {
        let t = template();
        let snaps = BTreeMap::from([
            (
                (ConfigKind::ConfigMap, "shop-config".to_string()),
                "shop-config-aa".to_string(),
            ),
            (
                (ConfigKind::Secret, "shop-db".to_string()),
                "shop-db-bb".to_string(),
            ),
        ]);
        let out = with_snapshots(&t, &snaps);
        let refs: Vec<_> = referenced(&out).into_iter().map(|r| r.name).collect();
        assert_eq!(refs, ["extra", "shop-config-aa", "shop-db-bb", "shop-tls"]);
    }
}
