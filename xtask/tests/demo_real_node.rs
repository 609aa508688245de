//! `cargo xtask demo --real-node`, run as a user runs it (with `--fast` timings): the same
//! story as the demo, with the pods as containers on the real node and the controller and
//! the router installed by the Helm chart. Its own test binary, so that it never runs beside
//! the other real-node tests (one real node at a time).

mod common;

#[test]
fn the_demo_on_the_real_node_releases_a_good_version_and_rolls_back_a_bad_one() {
    common::stop_real_nodes();
    let stdout = common::xtask(&["demo", "--real-node", "--fast"]);
    assert!(
        stdout.contains("v1 → v2 without a failed request: yes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("v3 rolled back on its own: yes"),
        "{stdout}"
    );
}
