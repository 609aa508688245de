//! The process-backed node runs a Deployment's pods as real processes, each in its own
//! network namespace, reports readiness from real probes so Services get the endpoints,
//! and stops processes on deletion.

use std::time::{Duration, Instant};

use cutover_test_support::e2e::{self, ProcessNode};
use cutover_test_support::{TestNamespace, wait_for, wait_for_list};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

async fn get(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(text)
}

#[tokio::test]
async fn a_deployment_runs_as_local_processes_with_real_readiness() {
    // The image `cutover-demo-app:v1` names this workspace's binary.
    let bins = e2e::build(&["cutover-demo-app", "cutover-process-node"]);
    let ns = TestNamespace::new("procnode").await;
    let node = ProcessNode::start(&ns, &bins, 78).await;
    // Ready, and tainted only with its own taint.
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let taints = nodes
        .get(&node.name)
        .await
        .expect("node")
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default();
    assert!(
        !taints.is_empty() && taints.iter().all(|t| t.key == "cutover.dev/process-node"),
        "{taints:?}"
    );

    let deployments: Api<Deployment> = ns.api();
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "app" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "demo" } },
            "template": {
                "metadata": { "labels": { "app": "demo" } },
                "spec": node.demo_pod_spec("v1")
            }
        }
    }))
    .expect("valid");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create Deployment");
    let services: Api<Service> = ns.api();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "app" },
        "spec": { "selector": { "app": "demo" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .expect("valid");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    wait_for(
        &deployments,
        "app",
        "2 ready replicas",
        Duration::from_secs(90),
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                == Some(2)
        },
    )
    .await;

    let pods: Api<Pod> = ns.api();
    let list = pods.list(&ListParams::default()).await.expect("pods").items;
    let ips: Vec<String> = list
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1], "an address per pod");
    for ip in &ips {
        assert!(ip.starts_with("10.244.78."), "{ip}");
        let answer = get(&format!("{ip}:8080"))
            .await
            .expect("the pod's process answers on its own address");
        assert!(answer.contains("\"version\":\"v1\""), "{answer}");
    }
    // The Service's EndpointSlice lists both pods, ready.
    let slices: Api<EndpointSlice> = ns.api();
    wait_for_list(
        &slices,
        kube::runtime::watcher::Config::default().labels("kubernetes.io/service-name=app"),
        "both pod addresses ready in the Service's EndpointSlice",
        Duration::from_secs(60),
        |listed: &[std::sync::Arc<EndpointSlice>]| {
            let mut ready: Vec<String> = listed
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.clone())
                .collect();
            ready.sort();
            let mut want = ips.clone();
            want.sort();
            ready == want
        },
    )
    .await;

    // Deleting a pod stops its process (SIGTERM; the demo app exits at once).
    let victim = list[0].metadata.name.clone().expect("name");
    let victim_ip = list[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("ip");
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("{victim_ip}:8080")).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the deleted pod's process still answers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent confirms the deletion once the process is gone.
    while pods.get_opt(&victim).await.expect("get pod").is_some() {
        assert!(
            Instant::now() < deadline,
            "the pod object was never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(
        &deployments,
        "app",
        "the replacement to be ready",
        Duration::from_secs(90),
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.ready_replicas == Some(2) && s.replicas == Some(2))
        },
    )
    .await;
}
