//! `kubectl cutover import`: the table of Argo Rollouts and Flagger manifests in
//! `tests/import_cases/`, converted by the binary as a user runs it.
//!
//! Each case starts with comment lines: `# untranslated: Kind/name: field.path` for every
//! field that must be reported as not translated (or `# untranslated: none`), and optionally
//! `# args: ...` with extra flags. The exit code, the reported fields (exactly those), and the
//! output (valid YAML whose Cutover objects pass the offline lint) are checked without a
//! cluster; `dry_run_...` creates every Cutover object of every output on the real API
//! server (server-side dry run), which is what lint imitates.

mod common;
#[path = "../src/lint.rs"]
mod lint;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::show;
use serde::Deserialize as _;
use serde_json::{Value, json};

/// One manifest of the table.
#[derive(Debug)]
struct Case {
    name: String,
    path: PathBuf,
    /// `Kind/name: field.path`, sorted.
    untranslated: Vec<String>,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import_cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/import_cases")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a case");
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
            let mut untranslated = Vec::new();
            let mut declared = false;
            let mut args = Vec::new();
            for line in header {
                if let Some(u) = line.strip_prefix("# untranslated:") {
                    declared = true;
                    if u.trim() != "none" {
                        untranslated.push(u.trim().to_owned());
                    }
                } else if let Some(a) = line.strip_prefix("# args:") {
                    args.extend(a.split_whitespace().map(str::to_owned));
                }
            }
            assert!(
                declared,
                "{name}: the header must declare `# untranslated: ...` (or `none`)"
            );
            untranslated.sort();
            Case {
                name,
                path,
                untranslated,
                args,
            }
        })
        .collect()
}

/// What a run of the binary printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-cutover"))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl-cutover");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("kubectl-cutover ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn import(case: &Case, extra: &[&str]) -> Run {
    let path = case.path.to_string_lossy().into_owned();
    let mut args = vec!["import", "-f", path.as_str()];
    args.extend(case.args.iter().map(String::as_str));
    args.extend(extra);
    run(&args, None)
}

/// The fields stderr reports as not translated: `Kind/name: field.path`, sorted (notes,
/// warnings and the summary are not fields).
fn reported(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = stderr
        .lines()
        .filter(|l| {
            !["note: ", "warning: ", "error: "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| {
            let mut parts = l.splitn(3, ": ");
            let source = parts.next().unwrap_or_default();
            let field = parts.next().unwrap_or_default();
            assert!(
                parts.next().is_some_and(|why| !why.is_empty()),
                "no reason given: {l}"
            );
            format!("{source}: {field}")
        })
        .collect();
    out.sort();
    out
}

/// The documents of a YAML stream.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("the output is valid YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

fn is_cutover(doc: &Value) -> bool {
    doc["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("cutover.dev/"))
}

#[test]
fn every_case_converts_reports_exactly_its_untranslated_fields_and_passes_lint() {
    let cases = cases();
    assert!(cases.len() >= 15, "only {} cases", cases.len());
    let partial = cases.iter().filter(|c| !c.untranslated.is_empty()).count();
    assert!(
        partial >= 3,
        "only {partial} cases with untranslated fields"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let out = import(case, &[]);
        println!("{}: exit {}\n{}", case.name, out.code, out.stderr);
        let want_code = if case.untranslated.is_empty() { 0 } else { 1 };
        if out.code != want_code {
            failures.push(format!(
                "{}: exit {} (want {want_code}):\n{}",
                case.name, out.code, out.stderr
            ));
        }
        let got = reported(&out.stderr);
        if got != case.untranslated {
            let missing: Vec<&String> = case
                .untranslated
                .iter()
                .filter(|u| !got.contains(u))
                .collect();
            let extra: Vec<&String> = got
                .iter()
                .filter(|u| !case.untranslated.contains(u))
                .collect();
            failures.push(format!(
                "{}: reported fields differ\n  declared, not reported: {missing:?}\n  reported, not declared: {extra:?}",
                case.name
            ));
        }
        let docs = documents(&out.stdout);
        if !docs.iter().any(is_cutover) {
            failures.push(format!("{}: no Cutover object in the output", case.name));
        }
        let findings = lint::lint_text(&case.name, &out.stdout);
        if !findings.is_empty() {
            failures.push(format!(
                "{}: the output does not pass lint:\n{}\n{}",
                case.name,
                show(&findings),
                out.stdout
            ));
        }
        // --allow-partial: the same output and report, exit 0.
        let partial = import(case, &["--allow-partial"]);
        if partial.code != 0 || partial.stdout != out.stdout || reported(&partial.stderr) != got {
            failures.push(format!(
                "{}: --allow-partial exits {} or changes the output",
                case.name, partial.code
            ));
        }
        // -o json: one List with the same objects.
        let json_out = import(case, &["--allow-partial", "-o", "json"]);
        let list: Value = serde_json::from_str(&json_out.stdout).expect("JSON output");
        if list["kind"] != "List" || list["items"].as_array() != Some(&docs) {
            failures.push(format!(
                "{}: -o json is not a List of the same objects",
                case.name
            ));
        }
        let findings = lint::lint_text(&case.name, &json_out.stdout);
        if !findings.is_empty() {
            failures.push(format!("{}: -o json does not pass lint", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn converted(file: &str, extra: &[&str]) -> Vec<Value> {
    let case = cases()
        .into_iter()
        .find(|c| c.name == file)
        .unwrap_or_else(|| panic!("no case {file}"));
    let out = import(&case, extra);
    documents(&out.stdout)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {docs:#?}"))
}

#[test]
fn specific_translations() {
    // Argo canary: the steps one for one.
    let docs = converted("argo-canary-gateway-api.yaml", &[]);
    let bgd = find(&docs, "BlueGreenDeployment", "storefront");
    assert_eq!(
        bgd["spec"]["strategy"]["steps"],
        json!([
            { "setWeight": 20 },
            { "pause": { "duration": "30s" } },
            { "analysis": { "templates": [ { "templateName": "storefront-errors" } ],
                            "args": [ { "name": "service", "value": "storefront" } ] } },
            { "setWeight": 50 },
            { "pause": {} }
        ])
    );
    assert_eq!(
        bgd["spec"]["trafficRouting"],
        json!({ "gatewayAPI": { "httpRoute": "storefront" } })
    );
    // The HTTPRoute now weighs Cutover's per-color Services; the Rollout's are left out.
    let route = find(&docs, "HTTPRoute", "storefront");
    let names: Vec<&str> = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backendRefs")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, vec!["storefront-blue", "storefront-green"]);
    assert!(!docs.iter().any(|d| d["kind"] == "Service"), "{docs:#?}");
    let hpa = find(&docs, "HorizontalPodAutoscaler", "storefront");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "BlueGreenDeployment");

    // Flagger: stepWeight 10, maxWeight 30 → 10, 20, 30, each followed by the analysis.
    let docs = converted("flagger-canary-linkerd.yaml", &[]);
    let bgd = find(&docs, "BlueGreenDeployment", "catalog");
    let check = json!({ "analysis": { "templates": [ { "templateName": "catalog-metrics" } ] } });
    assert_eq!(
        bgd["spec"]["strategy"]["steps"],
        json!([{ "setWeight": 10 }, check, { "setWeight": 20 }, check, { "setWeight": 30 }, check])
    );
    assert_eq!(
        bgd["spec"]["workloadRef"],
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": "catalog", "scaleDown": "OnSuccess" })
    );
    let metrics = find(&docs, "AnalysisTemplate", "catalog-metrics");
    assert_eq!(
        metrics["spec"]["metrics"][0]["successCondition"],
        "result >= 90 && result <= 100"
    );

    // Argo conditions, rewritten into CEL.
    let docs = converted("argo-analysis-conditions.yaml", &[]);
    let t = find(&docs, "AnalysisTemplate", "latency-and-errors");
    let conditions: Vec<(&str, &str)> = t["spec"]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default(),
                m["successCondition"]
                    .as_str()
                    .or(m["failureCondition"].as_str())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        vec![
            ("error-rate", "result < 0.01 && result >= 0"),
            ("p99", "max(result) < 500"),
            ("success-nan", "result >= 0.95"),
            ("no-data", "result >= 0.99"),
        ]
    );
}

#[test]
fn folders_and_stdin_are_read() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import_cases");
    let out = run(
        &["import", "-f", &folder.to_string_lossy(), "--allow-partial"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let docs = documents(&out.stdout);
    assert!(docs.iter().filter(|d| is_cutover(d)).count() >= 20);
    let text = std::fs::read_to_string(folder.join("argo-bluegreen-manual-promotion.yaml"))
        .expect("a case");
    let out = run(&["import", "-f", "-"], Some(&text));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let docs = documents(&out.stdout);
    let bgd = find(&docs, "BlueGreenDeployment", "shop");
    assert_eq!(
        bgd["spec"]["strategy"]["autoPromotion"],
        json!({ "enabled": false, "afterSeconds": 0 })
    );
    let broken = run(&["import", "-f", "-"], Some("kind: [unclosed\n"));
    assert_eq!(broken.code, 1);
    assert!(broken.stderr.contains("invalid YAML"), "{}", broken.stderr);
    let missing = run(&["import", "-f", "/nonexistent/x.yaml"], None);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("cannot read"), "{}", missing.stderr);
}

#[tokio::test]
async fn dry_run_every_imported_object_is_accepted_by_the_api_server() {
    let ns = cutover_test_support::TestNamespace::new("import").await;
    cutover_test_support::controller::install_crds(&ns.client).await;
    let mut failures = Vec::new();
    let mut created = 0;
    for case in cases() {
        let out = import(&case, &["--allow-partial"]);
        assert_eq!(out.code, 0, "{}: {}", case.name, out.stderr);
        for object in documents(&out.stdout).into_iter().filter(is_cutover) {
            let label = format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            match common::dry_run_create(&ns.client, &ns.name, object).await {
                Ok(()) => created += 1,
                Err(message) => failures.push(format!("{}: {label}: {message}", case.name)),
            }
        }
    }
    println!("{created} objects accepted");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
