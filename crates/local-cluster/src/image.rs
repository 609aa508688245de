//! OCI images built with no Docker engine and no registry: Debian's buildah runs each
//! image's `Containerfile` (under `deploy/images/<name>/`) on a context made here, with a
//! fixed timestamp so that the same inputs give the same digest, and writes an OCI archive
//! that containerd imports (`ctr images import`) or a registry takes (`skopeo copy`).
//!
//! A context holds `bin/<binary>` and `rootfs/`: the binary's shared libraries copied from
//! this machine (what `ldd` names), `/etc/passwd` and `/etc/group` with `nonroot` (65532)
//! and the CA bundle. The pause image's context holds a static `pause` built from
//! `pause.c` with the C compiler.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext as _};
use crate::host::run;

/// One image to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The folder name under `deploy/images/` (and the binary's name, for program images).
    pub name: String,
    /// The full reference it is tagged with (`ghcr.io/cutover-dev/cutover-router:0.1.0`).
    pub reference: String,
    /// The program it runs; `None` for the pause image.
    pub binary: Option<PathBuf>,
    /// `org.opencontainers.image.version`.
    pub version: String,
    /// `org.opencontainers.image.revision` (the commit).
    pub revision: String,
    /// `org.opencontainers.image.source`.
    pub source: String,
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The reference it carries.
    pub reference: String,
    /// Its manifest digest (`sha256:…`).
    pub digest: String,
    /// The OCI archive.
    pub archive: PathBuf,
}

/// The epoch second every image is stamped with: reproducible digests.
const TIMESTAMP: &str = "0";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why images cannot be built here, or None.
pub fn unsupported() -> Option<String> {
    if crate::which("buildah").is_none() {
        return Some("buildah is missing (apt-get install buildah)".into());
    }
    if !Path::new(CA_BUNDLE).exists() {
        return Some(format!(
            "{CA_BUNDLE} is missing (apt-get install ca-certificates)"
        ));
    }
    None
}

/// The shared libraries `binary` loads, as `ldd` resolves them here (absolute paths).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Spawn {
            what: "ldd".into(),
            source,
        })?;
    // A static binary: "not a dynamic executable" (and a non-zero exit).
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

/// Paths in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and the loader line
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// Copy `from` to `rootfs` + its absolute path, following symlinks (the image gets the
/// file, at the path the loader asks for).
fn copy_into(rootfs: &Path, from: &Path) -> Result<(), Error> {
    let rel = from.strip_prefix("/").unwrap_or(from);
    let to = rootfs.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    std::fs::copy(from, &to).at(from)?;
    Ok(())
}

/// Make the build context of `spec` under `dir` (emptied first).
pub fn context(spec: &ImageSpec, dir: &Path, workspace: &Path) -> Result<(), Error> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).at(dir)?;
    }
    std::fs::create_dir_all(dir).at(dir)?;
    let source_dir = workspace.join("deploy").join("images").join(&spec.name);
    match &spec.binary {
        None => {
            let out = dir.join("pause");
            run(
                "cc",
                &[
                    "-Os",
                    "-static",
                    "-s",
                    "-o",
                    &out.display().to_string(),
                    &source_dir.join("pause.c").display().to_string(),
                ],
            )?;
        }
        Some(binary) => {
            let bin = dir.join("bin");
            std::fs::create_dir_all(&bin).at(&bin)?;
            std::fs::copy(binary, bin.join(&spec.name)).at(binary)?;
            let rootfs = dir.join("rootfs");
            for lib in shared_libraries(binary)? {
                copy_into(&rootfs, &lib)?;
            }
            copy_into(&rootfs, Path::new(CA_BUNDLE))?;
            let etc = rootfs.join("etc");
            std::fs::write(etc.join("passwd"), PASSWD).at(etc.join("passwd"))?;
            std::fs::write(etc.join("group"), GROUP).at(etc.join("group"))?;
        }
    }
    Ok(())
}

/// buildah with its storage under `store` (vfs: no mounts left behind).
fn buildah(store: &Path, args: &[&str]) -> Result<String, Error> {
    let root = store.join("root").display().to_string();
    let runroot = store.join("run").display().to_string();
    let mut all = vec![
        "--root",
        root.as_str(),
        "--runroot",
        runroot.as_str(),
        "--storage-driver",
        "vfs",
    ];
    all.extend_from_slice(args);
    run("buildah", &all)
}

/// Build `spec` into `out/<name>.oci.tar`, with its context under `out/context/<name>` and
/// buildah's storage under `out/store`.
pub fn build(spec: &ImageSpec, out: &Path, workspace: &Path) -> Result<BuiltImage, Error> {
    let ctx = out.join("context").join(&spec.name);
    context(spec, &ctx, workspace)?;
    let containerfile = workspace
        .join("deploy")
        .join("images")
        .join(&spec.name)
        .join("Containerfile");
    let args = [
        format!("VERSION={}", spec.version),
        format!("REVISION={}", spec.revision),
        format!("SOURCE={}", spec.source),
    ];
    build_context(
        &containerfile,
        &ctx,
        &spec.reference,
        &args,
        out,
        &spec.name,
    )
}

/// Run `containerfile` on the context `ctx` with `build_args`, tag the result `reference`
/// and write it to `out/<file>.oci.tar`.
pub fn build_context(
    containerfile: &Path,
    ctx: &Path,
    reference: &str,
    build_args: &[String],
    out: &Path,
    file: &str,
) -> Result<BuiltImage, Error> {
    let store = out.join("store");
    let containerfile = containerfile.display().to_string();
    let ctx = ctx.display().to_string();
    let mut args = vec![
        "bud",
        "--timestamp",
        TIMESTAMP,
        "--format",
        "oci",
        "--layers=false",
        "--identity-label=false",
    ];
    for a in build_args {
        args.extend(["--build-arg", a.as_str()]);
    }
    args.extend(["-f", &containerfile, "-t", reference, &ctx]);
    buildah(&store, &args)?;
    let archive = out.join(format!("{file}.oci.tar"));
    if archive.exists() {
        std::fs::remove_file(&archive).at(&archive)?;
    }
    let digest_file = out.join(format!("{file}.digest"));
    buildah(
        &store,
        &[
            "push",
            "--digestfile",
            &digest_file.display().to_string(),
            reference,
            &format!("oci-archive:{}:{}", archive.display(), reference),
        ],
    )?;
    let digest = std::fs::read_to_string(&digest_file)
        .at(&digest_file)?
        .trim()
        .to_string();
    // The image stays in the store only as long as it is needed: the archive is the product.
    let _ = buildah(&store, &["rmi", "--force", reference]);
    Ok(BuiltImage {
        reference: reference.to_string(),
        digest,
        archive,
    })
}

/// The registry path the project's images are named under (as `deploy/` names them).
pub const REGISTRY: &str = "ghcr.io/cutover-dev";
/// The programs shipped as images.
pub const PROGRAMS: [&str; 3] = ["cutover-controller", "cutover-router", "cutover-demo-app"];

/// The pause image every pod sandbox of the real node runs.
pub fn pause_image(version: &str, revision: &str, source: &str) -> ImageSpec {
    ImageSpec {
        name: "pause".into(),
        reference: crate::real_node::PAUSE_IMAGE.into(),
        binary: None,
        version: version.into(),
        revision: revision.into(),
        source: source.into(),
    }
}

/// The pause image, then one image per program in [`PROGRAMS`] from the binaries in
/// `bin_dir` (`target/debug` or `target/release`), tagged `version`.
pub fn project_images(
    bin_dir: &Path,
    version: &str,
    revision: &str,
    source: &str,
) -> Vec<ImageSpec> {
    let mut specs = vec![pause_image(version, revision, source)];
    specs.extend(PROGRAMS.iter().map(|p| ImageSpec {
        name: p.to_string(),
        reference: format!("{REGISTRY}/{p}:{version}"),
        binary: Some(bin_dir.join(p)),
        version: version.into(),
        revision: revision.into(),
        source: source.into(),
    }));
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_files_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }
}
