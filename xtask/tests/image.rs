//! `cargo xtask image` as a user runs it: two builds of one commit give the same digests,
//! and each program image is non-root, carries the CA bundle and the OCI labels, and has no
//! shell. The archives are read with `tar`, as any OCI tool would read them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `cargo xtask image --debug`: reference → (digest, archive).
fn build() -> BTreeMap<String, (String, String)> {
    common::xtask(&["image", "--debug"])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                (w.next()?.to_string(), w.next()?.to_string()),
            ))
        })
        .collect()
}

/// A file of the archive.
fn member(archive: &str, path: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["-xOf", archive, path])
        .output()
        .expect("run tar");
    assert!(out.status.success(), "{path} in {archive}");
    out.stdout
}

fn blob(archive: &str, digest: &str) -> Vec<u8> {
    member(
        archive,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Every path in the image's layers.
fn files(archive: &str, manifest: &Value) -> Vec<String> {
    let dir = tempdir();
    let mut all = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        let path = dir.join("layer");
        std::fs::write(&path, blob(archive, digest)).expect("write layer");
        let out = Command::new("tar")
            .args(["-tf", &path.display().to_string()])
            .output()
            .expect("list layer");
        assert!(out.status.success());
        all.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim_start_matches("./").to_string()),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    all
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cutover-image-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn images_are_reproducible_non_root_with_ca_bundle_labels_and_no_shell() {
    let first = build();
    let second = build();
    assert_eq!(first.len(), 4, "pause and three programs: {first:?}");
    for (reference, (digest, _)) in &first {
        assert_eq!(
            Some(digest),
            second.get(reference).map(|(d, _)| d),
            "{reference}: two builds of one commit, one digest"
        );
    }
    for program in ["cutover-controller", "cutover-router", "cutover-demo-app"] {
        let (reference, (_, archive)) = first
            .iter()
            .find(|(r, _)| r.contains(&format!("/{program}:")))
            .unwrap_or_else(|| panic!("an image of {program}: {first:?}"));
        assert!(Path::new(archive).exists());
        let index = json(&member(archive, "index.json"));
        let manifest = json(&blob(
            archive,
            index["manifests"][0]["digest"].as_str().expect("manifest"),
        ));
        let config = json(&blob(
            archive,
            manifest["config"]["digest"].as_str().expect("config"),
        ));
        assert_eq!(config["config"]["User"], "65532:65532", "{reference}");
        let labels = &config["config"]["Labels"];
        assert_eq!(
            labels["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            labels["org.opencontainers.image.revision"]
                .as_str()
                .is_some_and(|r| r.len() == 40),
            "the commit: {labels}"
        );
        assert!(labels["org.opencontainers.image.source"].is_string());
        let files = files(archive, &manifest);
        assert!(
            files
                .iter()
                .any(|f| f == &format!("usr/local/bin/{program}")),
            "{files:?}"
        );
        assert!(
            files
                .iter()
                .any(|f| f == "etc/ssl/certs/ca-certificates.crt"),
            "the CA bundle: {files:?}"
        );
        assert!(
            !files
                .iter()
                .any(|f| f.ends_with("bin/sh") || f.ends_with("bin/bash")),
            "no shell: {files:?}"
        );
    }
}
