//! Driving and waiting on BlueGreenDeployments: requests by annotation, waits on phase,
//! color and step.

use std::time::Duration;

use cutover_api::{BlueGreenDeployment, Phase};
use kube::api::{Api, Patch, PatchParams};

use crate::{TestNamespace, wait_for};

/// How long a release step may take in tests.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Ask for `key` (`cutover.dev/promote`, `abort`, `retry`) with a fresh token.
pub async fn request(ns: &TestNamespace, name: &str, key: &str) {
    let api: Api<BlueGreenDeployment> = ns.api();
    let token = format!("{:?}", std::time::SystemTime::now());
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "metadata": { "annotations": { key: token } } })),
    )
    .await
    .expect("annotate");
}

/// Wait until BlueGreenDeployment `name` satisfies `pred`.
pub async fn wait_bgd(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    pred: impl Fn(&BlueGreenDeployment) -> bool + Send + 'static,
) -> BlueGreenDeployment {
    let api: Api<BlueGreenDeployment> = ns.api();
    wait_for(
        &api,
        name,
        what,
        TIMEOUT,
        move |b: Option<&BlueGreenDeployment>| b.is_some_and(&pred),
    )
    .await
}

/// Its phase.
pub fn phase(b: &BlueGreenDeployment) -> Option<Phase> {
    b.status.as_ref().and_then(|s| s.phase)
}

/// Its live color.
pub fn active(b: &BlueGreenDeployment) -> Option<cutover_api::Color> {
    b.status.as_ref().and_then(|s| s.active_color)
}

/// Its condition of `type_`.
pub fn condition<'a>(
    b: &'a BlueGreenDeployment,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Wait until it is Healthy with `color` live.
pub async fn healthy_on(
    ns: &TestNamespace,
    name: &str,
    color: cutover_api::Color,
) -> BlueGreenDeployment {
    wait_bgd(
        ns,
        name,
        &format!("{name} Healthy on {color:?}"),
        move |b| phase(b) == Some(Phase::Healthy) && active(b) == Some(color),
    )
    .await
}
