//! Objects shared by the unit tests of several modules.

use cutover_api::BlueGreenDeployment;

/// A BlueGreenDeployment `prod/shop` (uid `u-1`), 3 replicas, port 80 → 8080.
pub fn bgd() -> BlueGreenDeployment {
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

/// A BlueGreenDeployment from its JSON.
pub fn bgd_from(value: serde_json::Value) -> BlueGreenDeployment {
    serde_json::from_value(value).expect("a valid BlueGreenDeployment")
}
