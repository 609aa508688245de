//! The controller's layers, checked on its sources: a feature (`bluegreen/`, `failover/`,
//! `analysis/`) never imports from inside another, and the shared modules below them
//! (traffic, objects, caches, clock, conditions, …) never import a feature. Only the
//! wiring (`run.rs`, `main.rs`, `lib.rs`) sees them all.

use std::path::{Path, PathBuf};

const FEATURES: [&str; 3] = ["bluegreen", "failover", "analysis"];
const WIRING: [&str; 3] = ["run.rs", "main.rs", "lib.rs"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The feature a source file belongs to (`None`: shared, below the features).
fn feature_of(rel: &Path) -> Option<&'static str> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    FEATURES
        .into_iter()
        .find(|f| first == *f || first == format!("{f}.rs"))
}

/// The features a file's code names through `crate::<feature>`.
fn features_named(text: &str) -> Vec<&'static str> {
    FEATURES
        .into_iter()
        .filter(|f| text.contains(&format!("crate::{f}")))
        .collect()
}

#[test]
fn features_stay_in_their_wing_and_shared_modules_stay_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        if WIRING.iter().any(|w| rel == Path::new(w)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let own = feature_of(rel);
        for named in features_named(&text) {
            if Some(named) != own {
                wrong.push(format!(
                    "{} ({}) imports crate::{named}",
                    rel.display(),
                    own.unwrap_or("shared")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports across layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_a_crossing() {
    assert_eq!(
        features_named("use crate::bluegreen::status;"),
        ["bluegreen"]
    );
    assert_eq!(feature_of(Path::new("failover/mod.rs")), Some("failover"));
    assert_eq!(feature_of(Path::new("traffic/route.rs")), None);
}
