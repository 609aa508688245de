//! The Argo CD health checks under `deploy/argocd/` run by Debian's Lua 5.4 (the language
//! Argo CD embeds) against status fixtures of each phase, built from the API's own types so
//! that the field names the scripts read are the ones the controller writes.

use std::path::PathBuf;
use std::process::Command;

use cutover_api::{BlueGreenDeployment, FailoverPolicy};
use serde_json::{Value, json};

/// A Lua table constructor for a JSON value (as Argo CD hands `obj` to the script).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Run `script` with `obj`; (status, message).
fn health(script: &str, obj: &Value) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/argocd")
        .join(script);
    let program = format!(
        "obj = {}\nlocal hs = dofile({:?})\nio.write(hs.status, \"\\n\", hs.message or \"\")",
        lua(obj),
        path.display().to_string()
    );
    let out = Command::new("lua5.4")
        .args(["-e", &program])
        .output()
        .expect("lua5.4 is installed (apt-get install lua5.4; cargo xtask test does)");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn bgd(generation: i64, status: Value) -> Value {
    let obj: BlueGreenDeployment = serde_json::from_value(json!({
        "apiVersion": "cutover.dev/v1alpha1", "kind": "BlueGreenDeployment",
        "metadata": { "name": "shop", "namespace": "prod", "generation": generation },
        "spec": {
            "replicas": 2, "selector": { "matchLabels": { "app": "shop" } },
            "template": { "metadata": { "labels": { "app": "shop" } }, "spec": { "containers": [{ "name": "a", "image": "shop:1" }] } },
            "service": { "port": 80 }
        },
        "status": status,
    }))
    .expect("a valid BlueGreenDeployment");
    serde_json::to_value(obj).expect("serialises")
}

#[test]
fn blue_green_deployment_health_follows_the_phase_and_the_observed_generation() {
    let script = "bluegreendeployment-health.lua";
    let cases = [
        (
            json!({ "phase": "Healthy", "message": "blue is live", "observedGeneration": 3 }),
            "Healthy",
        ),
        (
            json!({ "phase": "Progressing", "message": "step 0: setting weight 20%", "observedGeneration": 3 }),
            "Progressing",
        ),
        (
            json!({ "phase": "Paused", "message": "step 1: paused until `kubectl cutover promote`", "observedGeneration": 3 }),
            "Suspended",
        ),
        (
            json!({ "phase": "Degraded", "message": "release aborted", "observedGeneration": 3 }),
            "Degraded",
        ),
    ];
    for (status, want) in cases {
        let message = status["message"].as_str().unwrap_or_default().to_string();
        let (got, said) = health(script, &bgd(3, status));
        assert_eq!(got, want, "{message}");
        assert_eq!(said, message);
    }
    // A spec the controller has not seen yet is progressing, whatever the old phase says.
    let (got, said) = health(
        script,
        &bgd(4, json!({ "phase": "Healthy", "observedGeneration": 3 })),
    );
    assert_eq!(got, "Progressing");
    assert!(said.contains("generation 4"), "{said}");
    let mut fresh = bgd(1, json!({}));
    fresh.as_object_mut().expect("object").remove("status");
    assert_eq!(health(script, &fresh).0, "Progressing");
}

#[test]
fn failover_policy_health_follows_the_phase() {
    let policy = |status: Value| -> Value {
        let obj: FailoverPolicy = serde_json::from_value(json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
            "metadata": { "name": "dr", "namespace": "prod", "generation": 1 },
            "spec": {
                "members": [
                    { "name": "east", "blueGreenDeployment": "shop" },
                    { "name": "west", "blueGreenDeployment": "shop", "clusterRef": { "secretName": "west" } }
                ],
                "entry": { "httpRoute": { "name": "shop" } }
            },
            "status": status,
        }))
        .expect("a valid FailoverPolicy");
        serde_json::to_value(obj).expect("serialises")
    };
    let script = "failoverpolicy-health.lua";
    for (phase, want) in [
        ("Healthy", "Healthy"),
        ("FailingOver", "Progressing"),
        ("Drilling", "Progressing"),
        ("FailedOver", "Degraded"),
        ("Degraded", "Degraded"),
    ] {
        let (got, said) = health(
            script,
            &policy(
                json!({ "phase": phase, "activeMember": "east", "message": "m", "observedGeneration": 1 }),
            ),
        );
        assert_eq!(got, want, "{phase}");
        assert_eq!(said, "active member east: m");
    }
    assert_eq!(health(script, &policy(json!({}))).0, "Progressing");
}
