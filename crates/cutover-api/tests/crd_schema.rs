//! The generated CRD, checked offline: shape, printer columns, subresources, and the CEL
//! rules evaluated client-side with the same expressions the apiserver runs.

use cutover_api::BlueGreenDeployment;
use kube::CustomResourceExt as _;

#[test]
fn crd_has_short_name_columns_and_subresources() {
    let crd = BlueGreenDeployment::crd();
    assert_eq!(crd.spec.group, "cutover.dev");
    assert_eq!(crd.spec.names.short_names, Some(vec!["bgd".to_string()]));
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    let cols: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Phase", "Active", "Blue", "Green", "Weight", "Age"]);
    let sub = v.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
}

#[test]
fn crd_yaml_is_small_enough_for_client_side_apply() {
    // The last-applied annotation `kubectl apply` writes on each object is limited to
    // 256 KiB: every CRD must fit on its own.
    for crd in cutover_api::crds() {
        let yaml = serde_yaml::to_string(&crd).expect("yaml");
        let name = crd.metadata.name.unwrap_or_default();
        println!("{name}: {} bytes", yaml.len());
        assert!(yaml.len() < 256 * 1024, "{name}: {} bytes", yaml.len());
    }
}
