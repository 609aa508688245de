//! The `smi` router: an SMI TrafficSplit (`split.smi-spec.io/v1alpha4`, older Linkerd and
//! OSM) that Cutover owns: apex Service `<name>`, backends `<name>-blue` and `<name>-green`.
//! SMI has no header routes or mirroring; those steps are refused for `smi` routing.
//! (Linkerd 2.12+ reads Gateway API HTTPRoutes: use `gatewayAPI` there.)

use cutover_api::BlueGreenDeployment;
use cutover_core::release::RouteObs;
use cutover_core::{Color, PerColor};
use serde_json::{Value, json};

use super::Target;

/// The split the TrafficSplit implements now.
pub fn observe(spec: &Value, bgd: &BlueGreenDeployment) -> RouteObs {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    let mut weights = PerColor::<i64>::default();
    for b in spec
        .get("backends")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for c in Color::ALL {
            if b.get("service").and_then(Value::as_str) == Some(format!("{name}-{c}").as_str()) {
                *weights.get_mut(c) += b.get("weight").and_then(Value::as_i64).unwrap_or(0);
            }
        }
    }
    RouteObs {
        weights,
        ..RouteObs::default()
    }
}

/// The TrafficSplit's spec for `target`.
pub fn render(bgd: &BlueGreenDeployment, target: &Target) -> Value {
    let name = bgd.metadata.name.clone().unwrap_or_default();
    json!({
        "service": name,
        "backends": [
            { "service": format!("{name}-{}", target.stable), "weight": 100 - i64::from(target.canary_weight) },
            { "service": format!("{name}-{}", target.stable.other()), "weight": i64::from(target.canary_weight) },
        ]
    })
}
