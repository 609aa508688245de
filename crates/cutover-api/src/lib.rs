//! Cutover's custom resources and the Kubernetes types the rest of the workspace uses.

pub use k8s_openapi;
pub use kube;
