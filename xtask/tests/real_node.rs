//! The real node as a user starts it: `cargo xtask cluster up --real-node`, `cargo xtask
//! image --load`, pods of locally built images on node `real-0` answering on their pod IP
//! and through a ClusterIP Service, the network guard dropping what would leave the
//! machine, and `cargo xtask cluster down` leaving the machine as it found it.

mod common;

use std::path::{Path, PathBuf};

use common::{eventually, get, xtask};
use cutover_test_support::local_cluster::{self as local, host, image};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, LogParams, PostParams};

const CLUSTER: &str = "realnode-test";

/// Pids of the processes a real node runs.
fn node_processes() -> Vec<(u32, String)> {
    let names = [
        "containerd",
        "containerd-shim-runc-v2",
        "kubelet",
        "kube-proxy",
        "pause",
    ];
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim().to_string();
            // A zombie has stopped; it waits only for its parent (here PID 1) to reap it.
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            (names.contains(&comm.as_str()) && state != "Z").then_some((pid, comm))
        })
        .collect()
}

fn pod(name: &str, image: &str, args: &[&str], serve: bool) -> Pod {
    let mut container = serde_json::json!({
        "name": "main", "image": image, "args": args,
        "securityContext": {
            "runAsNonRoot": true, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" }
        }
    });
    if serve {
        container["ports"] = serde_json::json!([{ "containerPort": 8080 }]);
        container["readinessProbe"] = serde_json::json!({
            "httpGet": { "path": "/healthz", "port": 8080 }, "periodSeconds": 1
        });
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": local::REAL_NODE },
            "restartPolicy": if serve { "Always" } else { "Never" },
            "containers": [container]
        }
    }))
    .expect("a valid Pod")
}

/// An image of Debian's static busybox, for the checks a shell tool makes (nc, cat).
fn busybox_image(out: &Path) -> PathBuf {
    let ctx = out.join("context").join("busybox-test");
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    let containerfile = ctx.join("Containerfile");
    std::fs::write(
        &containerfile,
        "FROM scratch\nCOPY --chmod=0755 busybox /bin/busybox\nUSER 65532:65532\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .expect("Containerfile");
    image::build_context(
        &containerfile,
        &ctx,
        "localhost/busybox-test:1",
        &[],
        out,
        "busybox-test",
    )
    .expect("busybox image")
    .archive
}

async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(&format!("pod {name} to finish"), || async {
        let p = pods.get(name).await.ok()?;
        let phase = p.status.as_ref()?.phase.clone()?;
        (phase == "Succeeded" || phase == "Failed").then_some(p)
    })
    .await
}

fn counter(name: &str) -> u64 {
    host::guard_counters()
        .into_iter()
        .find(|(c, _)| c == name)
        .map(|(_, n)| n)
        .unwrap_or_else(|| panic!("guard counter {name} missing: {:?}", host::guard_counters()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_node_runs_local_images_behind_the_guard_and_down_leaves_nothing() {
    common::stop_real_nodes();
    let before = host::HostSnapshot::take();
    let processes_before = node_processes();
    let (kubeconfig, socket) = common::start_real_node(CLUSTER);
    let busybox = busybox_image(&local::workspace_root().join("target").join("images"));
    local::real_node::import_images(&socket, &[busybox]).expect("import busybox");

    let client = local::client_for(&kubeconfig).await.expect("client");
    let node = Api::<Node>::all(client.clone())
        .get(local::REAL_NODE)
        .await
        .expect("node real-0");
    let runtime = node
        .status
        .and_then(|s| s.node_info)
        .map(|i| i.container_runtime_version)
        .unwrap_or_default();
    assert!(runtime.starts_with("containerd://"), "{runtime}");

    // A pod of a locally built image, on its pod IP and through a ClusterIP Service.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let demo = format!(
        "{}/cutover-demo-app:{}",
        image::REGISTRY,
        env!("CARGO_PKG_VERSION")
    );
    pods.create(
        &PostParams::default(),
        &pod(
            "hello",
            &demo,
            &["--listen", "0.0.0.0:8080", "--version", "v7"],
            true,
        ),
    )
    .await
    .expect("create pod");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "hello" },
        "spec": { "selector": { "app": "hello" }, "ports": [{ "port": 80, "targetPort": 8080 }] }
    }))
    .expect("a valid Service");
    let svc = services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    let pod_ip = eventually("pod hello Ready", || async {
        let p = pods.get("hello").await.ok()?;
        let st = p.status?;
        let ready = st
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(st.pod_ip?)
    })
    .await;
    assert!(pod_ip.starts_with("10.250.0."), "{pod_ip}");
    let pod_addr = format!("{pod_ip}:8080");
    let body = eventually("an answer on the pod IP", || get(&pod_addr, "/")).await;
    assert!(body.contains("\"version\":\"v7\""), "{body}");
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP");
    let service_addr = format!("{cluster_ip}:80");
    let body = eventually("an answer through the ClusterIP", || {
        get(&service_addr, "/")
    })
    .await;
    assert!(body.contains("\"version\":\"v7\""), "{body}");

    // Pods have no DNS server off the machine (and logs reach kubelet, which knows the
    // API server by its client certificate).
    pods.create(
        &PostParams::default(),
        &pod(
            "resolv",
            "localhost/busybox-test:1",
            &["cat", "/etc/resolv.conf"],
            false,
        ),
    )
    .await
    .expect("create pod");
    finished(&pods, "resolv").await;
    let resolv = pods
        .logs("resolv", &LogParams::default())
        .await
        .expect("pod logs through kubelet");
    // With no resolver configured, the pod's resolver points at its own loopback, where
    // nothing listens: every lookup fails inside the pod.
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    assert!(
        servers.iter().all(|s| s.starts_with("127.") || *s == "::1"),
        "a pod has a DNS server: {resolv}"
    );

    // The guard is in place before anything tries to leave, and drops it.
    let dropped_before = counter("forwarded-off-machine");
    assert!(
        host::sysctl("net.ipv4.ip_forward").as_deref() == Some("1"),
        "the CNI bridge forwards"
    );
    pods.create(
        &PostParams::default(),
        // TEST-NET-3: documentation space, no host of anyone's; the guard drops the SYN
        // before it could leave.
        &pod(
            "egress",
            "localhost/busybox-test:1",
            &["nc", "-w", "2", "203.0.113.1", "80"],
            false,
        ),
    )
    .await
    .expect("create pod");
    let egress = finished(&pods, "egress").await;
    assert_eq!(
        egress.status.and_then(|s| s.phase).as_deref(),
        Some("Failed"),
        "the pod could not connect out"
    );
    assert!(
        counter("forwarded-off-machine") > dropped_before,
        "the guard dropped the attempt: {:?}",
        host::guard_counters()
    );
    assert_eq!(
        counter("left-from-pods"),
        0,
        "no packet from a pod left the machine"
    );
    assert_eq!(
        counter("left-to-services"),
        0,
        "no packet to a Service left the machine"
    );

    xtask(&["cluster", "down", "--name", CLUSTER]);
    let after = host::HostSnapshot::take();
    assert_eq!(
        after, before,
        "the machine is as it was before the real node"
    );
    let left: Vec<_> = node_processes()
        .into_iter()
        .filter(|p| !processes_before.contains(p))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
