//! `cargo xtask krew`: the archive is reproducible, the manifest names it with its sha256
//! and the fields krew's index validation requires, and the packaged plugin runs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest as _, Sha256};

fn package() -> (PathBuf, Vec<u8>) {
    let manifest = PathBuf::from(common::xtask(&["krew", "--debug"]).trim());
    let archive = manifest.with_file_name("kubectl-cutover_linux_amd64.tar.gz");
    (manifest, std::fs::read(&archive).expect("the archive"))
}

#[test]
fn the_krew_manifest_names_a_reproducible_archive_of_a_working_plugin() {
    let (manifest, first) = package();
    let (_, second) = package();
    assert_eq!(first, second, "two packagings of one build, one archive");
    let sha: String = Sha256::digest(&first)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let m: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&manifest).expect("manifest")).expect("YAML");
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "cutover");
    assert_eq!(
        m["spec"]["version"].as_str(),
        Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert!(
        m["spec"]["shortDescription"]
            .as_str()
            .is_some_and(|d| d.len() <= 50)
    );
    let platform = &m["spec"]["platforms"][0];
    assert_eq!(platform["selector"]["matchLabels"]["os"], "linux");
    assert_eq!(platform["sha256"].as_str(), Some(sha.as_str()));
    assert!(
        platform["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")
                && u.ends_with("/kubectl-cutover_linux_amd64.tar.gz")
                && u.contains(&format!("v{}", env!("CARGO_PKG_VERSION")))),
        "{:?}",
        platform["uri"]
    );
    assert_eq!(platform["bin"], "kubectl-cutover");

    // What krew would unpack runs.
    let dir = std::env::temp_dir().join(format!("cutover-krew-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(manifest.with_file_name("kubectl-cutover_linux_amd64.tar.gz"))
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("tar");
    assert!(status.success());
    let out = Command::new(dir.join("kubectl-cutover"))
        .arg("--version")
        .output()
        .expect("run the packaged plugin");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
