//! Two named clusters run side by side, each with its own state, and `down` leaves no
//! process behind.

use cutover_local_cluster::{self as local, UpOptions};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};

fn is_alive(pid: u32) -> bool {
    // Zombies are dead processes still waiting for this test to reap them.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

#[tokio::test]
async fn two_named_clusters_run_side_by_side_and_stop_cleanly() {
    // A run that failed half-way may have left them up, with its objects: start from none.
    for name in ["it-side-a", "it-side-b"] {
        local::down(name).expect("down a leftover");
    }
    let a = local::up(&UpOptions {
        name: "it-side-a".into(),
        nodes: 1,
        process_node: None,
        real_node: None,
    })
    .await
    .expect("cluster a starts");
    let b = local::up(&UpOptions {
        name: "it-side-b".into(),
        nodes: 1,
        process_node: None,
        real_node: None,
    })
    .await
    .expect("cluster b starts");
    assert_ne!(a.ports.apiserver, b.ports.apiserver);

    // Up again is a no-op on a healthy cluster.
    let again = local::up(&UpOptions {
        name: "it-side-a".into(),
        nodes: 1,
        process_node: None,
        real_node: None,
    })
    .await
    .expect("up is idempotent");
    assert_eq!(again.ports, a.ports);
    assert_eq!(
        again.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        a.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        "no process restarted"
    );

    let ca: Api<ConfigMap> = Api::namespaced(
        local::client_for(&a.kubeconfig).await.expect("client a"),
        "default",
    );
    let cb: Api<ConfigMap> = Api::namespaced(
        local::client_for(&b.kubeconfig).await.expect("client b"),
        "default",
    );
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("only-in-a".into());
    ca.create(&PostParams::default(), &cm)
        .await
        .expect("create in a");
    assert!(ca.get_opt("only-in-a").await.expect("get a").is_some());
    assert!(
        cb.get_opt("only-in-a").await.expect("get b").is_none(),
        "b does not see a's objects"
    );
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("only-in-b".into());
    cb.create(&PostParams::default(), &cm)
        .await
        .expect("create in b");
    assert!(
        ca.get_opt("only-in-b").await.expect("get a").is_none(),
        "a does not see b's objects"
    );

    for state in [&a, &b] {
        assert!(
            local::down(&state.name).expect("down"),
            "there was a cluster to stop"
        );
        for p in &state.processes {
            assert!(
                !is_alive(p.pid),
                "{} (pid {}) still runs after down",
                p.component,
                p.pid
            );
        }
        assert!(!local::state_dir(&state.name).exists(), "state removed");
    }
    assert!(
        !local::down("it-side-a").expect("down twice"),
        "down of a stopped cluster is a no-op"
    );
}
