//! The README's first command, run as a user runs it (with `--fast` timings): it must end
//! with zero failed requests during v1 → v2 and v3 rolled back on its own.

use std::process::Command;

#[test]
fn the_demo_releases_a_good_version_and_rolls_back_a_bad_one() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["demo", "--fast"])
        .current_dir(cutover_test_support::local_cluster::workspace_root());
    cutover_test_support::e2e::without_test_cargo_env(&mut cmd);
    let out = cmd.output().expect("run cargo xtask demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("v1 → v2 without a failed request: yes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("v3 rolled back on its own: yes"),
        "{stdout}"
    );
    let v3 = stdout
        .lines()
        .find(|l| l.starts_with("v2 → v3"))
        .expect("a v3 row in the summary");
    assert!(v3.trim_end().ends_with('s'), "a rollback time: {v3}");
}
