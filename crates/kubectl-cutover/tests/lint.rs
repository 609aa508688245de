//! `kubectl cutover lint`: the table of manifests in `tests/lint_cases/` (`valid/` must be
//! accepted, `invalid/` rejected), checked offline by `lint` and, with the same table,
//! against the real API server (server-side dry run, strict field validation), which is
//! the truth `lint` imitates.
//!
//! An invalid case starts with `# expect: <part of the field path>`: a finding must name
//! that field. An optional `# message: <part of the message>` line: that finding's message
//! must contain it too.

mod common;
#[path = "../src/lint.rs"]
mod lint;

use std::path::Path;

use common::{dry_run_create, show};
use serde::Deserialize as _;
use serde_json::Value;

/// One manifest of the table.
#[derive(Debug)]
struct Case {
    /// `valid/x.yaml` or `invalid/x.yaml`.
    name: String,
    valid: bool,
    /// The field a finding must name (invalid cases).
    expect_field: String,
    /// Part of that finding's message, if given.
    expect_message: Option<String>,
    text: String,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint_cases");
    let mut cases = Vec::new();
    for (dir, valid) in [("valid", true), ("invalid", false)] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let name = format!(
                "{dir}/{}",
                path.file_name().expect("file name").to_string_lossy()
            );
            let comment = |key: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                    .map(|v| v.trim().to_owned())
            };
            let expect_field = comment("expect").unwrap_or_default();
            if !valid {
                assert!(
                    text.starts_with("# expect:"),
                    "{name}: the first line must be `# expect: <field>`"
                );
            }
            let expect_message = comment("message");
            cases.push(Case {
                name,
                valid,
                expect_field,
                expect_message,
                text,
            });
        }
    }
    cases
}

#[test]
fn lint_accepts_the_valid_cases_and_names_the_field_of_the_invalid_ones() {
    let cases = cases();
    let valid = cases.iter().filter(|c| c.valid).count();
    assert!(valid >= 6, "only {valid} valid cases");
    assert!(
        cases.len() - valid >= 10,
        "only {} invalid cases",
        cases.len() - valid
    );
    let mut failures = Vec::new();
    for case in &cases {
        let findings = lint::lint_text(&case.name, &case.text);
        println!("{}:\n{}", case.name, show(&findings));
        if case.valid {
            if !findings.is_empty() {
                failures.push(format!(
                    "{}: expected no finding, got:\n{}",
                    case.name,
                    show(&findings)
                ));
            }
            continue;
        }
        let named = findings.iter().any(|f| {
            f.field.contains(&case.expect_field)
                && case
                    .expect_message
                    .as_ref()
                    .is_none_or(|m| f.message.contains(m.as_str()))
        });
        if !named {
            failures.push(format!(
                "{}: expected a finding at {:?}{}, got:\n{}",
                case.name,
                case.expect_field,
                case.expect_message
                    .as_ref()
                    .map(|m| format!(" saying {m:?}"))
                    .unwrap_or_default(),
                show(&findings)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn lint_reports_yaml_errors_and_skips_other_groups() {
    let findings = lint::lint_text("broken.yaml", "kind: [unclosed\n");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].field, "");
    assert!(findings[0].message.contains("YAML"), "{findings:?}");

    let other =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: Not_Checked }\ndata: { a: 1 }\n";
    assert_eq!(lint::lint_text("cm.yaml", other), vec![]);

    let text = "apiVersion: cutover.dev/v1alpha1\nkind: BlueGreenDeployment\nspec: {}\n";
    let findings = lint::lint_text("shop.yaml", text);
    let first = findings.first().expect("a finding");
    assert_eq!(first.object, "BlueGreenDeployment/<document 1>");
    assert!(
        findings.iter().any(|f| f.field == "metadata.name"),
        "{findings:?}"
    );
    assert!(
        findings.iter().any(|f| f.field == "spec.service"),
        "{findings:?}"
    );
    assert!(
        first
            .to_string()
            .starts_with("shop.yaml: BlueGreenDeployment/<document 1>: "),
        "{first}"
    );

    let unknown = "apiVersion: cutover.dev/v1\nkind: BlueGreenDeployment\nmetadata: { name: a }\n";
    let findings = lint::lint_text("v1.yaml", unknown);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].field, "apiVersion");
    let unknown = "apiVersion: cutover.dev/v1alpha1\nkind: Rollout\nmetadata: { name: a }\n";
    let findings = lint::lint_text("kind.yaml", unknown);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].field, "kind");
}

/// Integral floats (`2.0`) become integers, as in kubectl's YAML to JSON conversion.
fn as_kubectl_sends_it(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(as_kubectl_sends_it).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, as_kubectl_sends_it(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The Cutover documents of a manifest, as JSON.
fn cutover_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("the cases are valid YAML"))
        .map(as_kubectl_sends_it)
        .filter(|doc| {
            doc.get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("cutover.dev/"))
        })
        .collect()
}

#[tokio::test]
async fn the_api_server_accepts_the_valid_cases_and_rejects_the_invalid_ones() {
    let ns = cutover_test_support::TestNamespace::new("lint").await;
    cutover_test_support::controller::install_crds(&ns.client).await;
    let mut failures = Vec::new();
    for case in cases() {
        let mut rejections = Vec::new();
        for object in cutover_documents(&case.text) {
            if let Err(message) = dry_run_create(&ns.client, &ns.name, object).await {
                rejections.push(message);
            }
        }
        println!(
            "{}: {}",
            case.name,
            if rejections.is_empty() {
                "accepted".to_owned()
            } else {
                rejections.join(" | ")
            }
        );
        match (case.valid, rejections.is_empty()) {
            (true, false) => failures.push(format!(
                "{}: the server rejected a valid case: {}",
                case.name,
                rejections.join(" | ")
            )),
            (false, true) => failures.push(format!(
                "{}: the server accepted an invalid case",
                case.name
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
