//! `kubectl cutover import -f FILE...`: Argo Rollouts (`Rollout`, `AnalysisTemplate`,
//! `ClusterAnalysisTemplate`) and Flagger (`Canary`, `MetricTemplate`) manifests into Cutover
//! objects (`BlueGreenDeployment`, `AnalysisTemplate`, `ClusterAnalysisTemplate`).
//!
//! The conversion is pure: JSON documents in, Cutover objects plus the list of what could not
//! be translated out ([`import`]); only [`run`] reads files and prints. Every field of a
//! source document is either translated, or listed as [`Untranslated`] with its path and the
//! reason; nothing is dropped silently (apart from what the API server writes: `status`,
//! `metadata.uid`, `resourceVersion`, ...).
//!
//! Other documents of the input (a user runs `import` on a whole folder) are passed through
//! unchanged, except where the translation takes their place, each with a note on stderr:
//! - Services the source names (Argo's `activeService`, `previewService`, `stableService`,
//!   `canaryService`, SMI `rootService`) or that carry a name Cutover gives its own Services
//!   (`<name>`, `<name>-preview`, `<name>-blue`, `<name>-green`) are left out: Cutover
//!   creates and owns those (their port becomes `spec.service`). With `workloadRef`, a
//!   Service named `<name>` is kept: Cutover adopts it.
//! - The HTTPRoute or VirtualService the source routes through gets its backends renamed from
//!   the stable/canary Services to `<name>-blue`/`<name>-green`, the Services Cutover weighs.
//! - A HorizontalPodAutoscaler that scales the Rollout (or, with Flagger's `autoscalerRef`,
//!   the target Deployment) is pointed at the BlueGreenDeployment.
//! - A TrafficSplit named by SMI routing is left out: Cutover creates and owns it.
//! - Flagger `MetricTemplate`s are folded into the Canary's AnalysisTemplate; one that no
//!   Canary of the input uses is left out.

mod argo;
mod argo_analysis;
mod conditions;
mod flagger;
mod passthrough;

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cutover_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::Output;

/// A field of a source document that has no Cutover counterpart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    /// The source document, `Kind/name`.
    pub source: String,
    /// The field, in Kubernetes style (`spec.strategy.canary.steps[3].experiment`).
    pub path: String,
    /// Why it was not translated, and what to do.
    pub why: String,
}

impl fmt::Display for Untranslated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.path, self.why)
    }
}

/// Settings of an import that the source documents do not carry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The Prometheus that Flagger's built-in metrics query (Flagger's `-metrics-server`).
    pub metrics_server: Option<String>,
}

/// What an import produced.
#[derive(Debug, Default)]
pub struct Imported {
    /// The output documents, in input order: Cutover objects and passed-through documents.
    pub objects: Vec<Value>,
    /// What could not be translated.
    pub untranslated: Vec<Untranslated>,
    /// What was changed in passed-through documents, or left out, and why.
    pub notes: Vec<String>,
}

/// A change to a passed-through document that a translation asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Claim {
    /// Leave the document out: Cutover makes and owns its own.
    Drop { index: usize, why: String },
    /// Rename Service backends of a route (HTTPRoute or VirtualService): `(old, new, weight
    /// when none is set)`; `routes` limits a VirtualService to the HTTP routes of these names.
    RenameBackends {
        index: usize,
        renames: Vec<(String, String, i64)>,
        routes: Vec<String>,
    },
    /// Point a HorizontalPodAutoscaler at the BlueGreenDeployment `name`.
    Retarget { index: usize, name: String },
}

impl Claim {
    fn index(&self) -> usize {
        match self {
            Claim::Drop { index, .. }
            | Claim::RenameBackends { index, .. }
            | Claim::Retarget { index, .. } => *index,
        }
    }
}

/// What the translation of one source document produced.
#[derive(Debug, Default)]
pub(crate) struct Translation {
    pub objects: Vec<Value>,
    pub claims: Vec<Claim>,
}

/// Where the untranslated fields of one source document are recorded.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    /// `Kind/name`.
    pub name: String,
    out: &'a mut Vec<Untranslated>,
}

impl Source<'_> {
    /// Records that `path` was not translated, and why.
    pub fn skip(&mut self, path: &str, why: impl Into<String>) {
        self.out.push(Untranslated {
            source: self.name.clone(),
            path: path.to_owned(),
            why: why.into(),
        });
    }

    /// The same record, for another source document (a Canary's MetricTemplate).
    pub fn other(&mut self, name: String) -> Source<'_> {
        Source {
            name,
            out: self.out,
        }
    }

    /// Records a field this importer does not know.
    pub fn unknown(&mut self, path: &str) {
        self.skip(
            path,
            "not a field the importer knows for this kind; nothing was written for it",
        );
    }
}

/// Every document of the input, for lookups across documents (a Rollout's Services, a
/// Canary's MetricTemplates).
#[derive(Debug)]
pub(crate) struct Inventory<'a> {
    docs: &'a [Value],
}

impl<'a> Inventory<'a> {
    /// The document of `kind` (in an API group for which `group` holds) named `name` in the
    /// namespace of `near` (a document without a namespace matches any).
    pub fn find(
        &self,
        group: impl Fn(&str) -> bool,
        kind: &str,
        name: &str,
        near: &Value,
    ) -> Option<(usize, &'a Value)> {
        self.docs.iter().enumerate().find(|(_, d)| {
            kind_of(d) == Some(kind)
                && group(group_of(d))
                && name_of(d) == Some(name)
                && same_namespace(d, near)
        })
    }

    /// Every document with its index.
    pub fn all(&self) -> impl Iterator<Item = (usize, &'a Value)> {
        self.docs.iter().enumerate()
    }
}

/// The core API group (`v1`).
pub(crate) fn core_group(group: &str) -> bool {
    group.is_empty()
}

/// The `kind` of a document.
pub(crate) fn kind_of(doc: &Value) -> Option<&str> {
    doc.get("kind").and_then(Value::as_str)
}

/// The API group of a document (`""` for the core group).
pub(crate) fn group_of(doc: &Value) -> &str {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// `metadata.name` of a document.
pub(crate) fn name_of(doc: &Value) -> Option<&str> {
    doc.pointer("/metadata/name").and_then(Value::as_str)
}

/// `metadata.namespace` of a document.
pub(crate) fn namespace_of(doc: &Value) -> Option<&str> {
    doc.pointer("/metadata/namespace").and_then(Value::as_str)
}

fn same_namespace(a: &Value, b: &Value) -> bool {
    match (namespace_of(a), namespace_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// `path.key`, or `path[key]` when the key is not a plain name.
pub(crate) fn field(path: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (_, false) => format!("{path}[{key}]"),
        (false, true) => format!("{path}.{key}"),
    }
}

/// `path[i]`.
pub(crate) fn at(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The fields of an object (none for anything else), in key order.
pub(crate) fn entries(value: Option<&Value>) -> Vec<(&str, &Value)> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// The items of a list (none for anything else).
pub(crate) fn items(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// An integer field, or a report that it is not one.
pub(crate) fn int(value: &Value, path: &str, src: &mut Source<'_>) -> Option<i64> {
    match value {
        Value::Number(n) if n.as_i64().is_some() => n.as_i64(),
        Value::String(s) if s.parse::<i64>().is_ok() => s.parse().ok(),
        other => {
            src.skip(path, format!("expected a whole number, found {other}"));
            None
        }
    }
}

/// A string field, or a report that it is not one.
pub(crate) fn text<'v>(value: &'v Value, path: &str, src: &mut Source<'_>) -> Option<&'v str> {
    match value.as_str() {
        Some(s) => Some(s),
        None => {
            src.skip(path, format!("expected a string, found {value}"));
            None
        }
    }
}

/// A boolean field, or a report that it is not one.
pub(crate) fn boolean(value: &Value, path: &str, src: &mut Source<'_>) -> Option<bool> {
    match value.as_bool() {
        Some(b) => Some(b),
        None => {
            src.skip(path, format!("expected true or false, found {value}"));
            None
        }
    }
}

/// A scalar as text (an argument value written as a number in YAML).
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Go duration strings as Cutover's schema accepts them (`30s`, `1m30s`, `500ms`).
pub(crate) fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        let valid_number = !number.is_empty()
            && !number.starts_with('.')
            && !number.ends_with('.')
            && number.matches('.').count() <= 1;
        if !valid_number {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .into_iter()
            .filter(|u| rest.starts_with(u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The length of a Go duration in seconds (`1m30s` → 90).
pub(crate) fn duration_seconds(s: &str) -> Option<f64> {
    if !is_duration(s) {
        return None;
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .filter(|(u, _)| rest.starts_with(u))
        .max_by_key(|(u, _)| u.len())?;
        total += n * scale;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// Seconds written as a Go duration (`90` → `90s`).
pub(crate) fn seconds(n: i64) -> String {
    format!("{n}s")
}

/// The fields of a source's `metadata` that the API server writes: not the user's intent.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// `metadata.name` of a source document translated into a Cutover object (`what`: `a
/// Rollout`); `None`, reported, when it has none.
pub(crate) fn required_name<'d>(
    doc: &'d Value,
    what: &str,
    src: &mut Source<'_>,
) -> Option<&'d str> {
    let name = name_of(doc).filter(|n| !n.is_empty());
    if name.is_none() {
        src.skip(
            "metadata.name",
            format!("{what} needs a name; nothing was written"),
        );
    }
    name
}

/// The metadata of a Cutover object made from `doc` and named `name`: its namespace,
/// labels and annotations; reports the top-level fields of the source other than
/// `apiVersion`, `kind`, `metadata`, `spec` and `status`, and what of its metadata does not
/// carry over.
pub(crate) fn metadata(doc: &Value, name: &str, src: &mut Source<'_>) -> ObjectMeta {
    for (key, _) in entries(Some(doc)) {
        if !matches!(key, "apiVersion" | "kind" | "metadata" | "spec" | "status") {
            src.unknown(key);
        }
    }
    let mut meta = ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    };
    for (key, value) in entries(doc.get("metadata")) {
        let path = field("metadata", key);
        match key {
            "name" => {}
            "namespace" => meta.namespace = value.as_str().map(str::to_owned),
            "labels" => {
                let labels = entries(Some(value))
                    .into_iter()
                    .filter_map(|(k, v)| scalar_text(v).map(|v| (k.to_owned(), v)))
                    .collect();
                meta.labels = Some(labels);
            }
            "annotations" => {
                let mut kept = std::collections::BTreeMap::new();
                for (k, v) in entries(Some(value)) {
                    if k == "kubectl.kubernetes.io/last-applied-configuration" {
                        continue;
                    }
                    let domain = k.split_once('/').map_or("", |(d, _)| d);
                    if domain.ends_with("argoproj.io") || domain.ends_with("flagger.app") {
                        src.skip(
                            &field(&path, k),
                            "an annotation Argo Rollouts or Flagger reads; Cutover does not \
                             (notifications: spec.notify with a NotificationChannel)",
                        );
                        continue;
                    }
                    if let Some(v) = scalar_text(v) {
                        kept.insert(k.to_owned(), v);
                    }
                }
                if !kept.is_empty() {
                    meta.annotations = Some(kept);
                }
            }
            _ if SERVER_METADATA.contains(&key) => {}
            "finalizers" | "ownerReferences" => src.skip(
                &path,
                "belongs to the source object and its controller; not carried over",
            ),
            "generateName" => src.skip(
                &path,
                "Cutover object names are fixed (they name the owned Deployments and Services)",
            ),
            _ => src.unknown(&path),
        }
    }
    meta
}

/// `Kind/name` of a document, `Kind/<document N>` without a name.
fn label(doc: &Value, index: usize) -> String {
    let kind = kind_of(doc).unwrap_or("<no kind>");
    match name_of(doc) {
        Some(name) if !name.is_empty() => format!("{kind}/{name}"),
        _ => format!("{kind}/<document {}>", index + 1),
    }
}

/// Converts every document; see the module documentation for what happens to each kind.
pub fn import(documents: &[Value], options: &Options) -> Imported {
    let inventory = Inventory { docs: documents };
    let mut untranslated = Vec::new();
    let mut translated: Vec<Option<Vec<Value>>> = vec![None; documents.len()];
    let mut claims: Vec<Claim> = Vec::new();
    let mut notes = Vec::new();
    let mut used_metric_templates = Vec::new();
    let mut reported_metric_templates = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        let mut src = Source {
            name: label(doc, index),
            out: &mut untranslated,
        };
        let group = group_of(doc);
        let kind = kind_of(doc).unwrap_or("");
        let translation = match (group, kind) {
            ("argoproj.io", "Rollout") => argo::rollout(doc, &inventory, &mut src),
            ("argoproj.io", "AnalysisTemplate" | "ClusterAnalysisTemplate") => {
                argo_analysis::template(doc, &mut src)
            }
            ("argoproj.io", other) => {
                src.skip(
                    "spec",
                    format!("Cutover has no counterpart of Argo Rollouts' {other}"),
                );
                Translation::default()
            }
            ("flagger.app", "Canary") => flagger::canary(
                doc,
                &inventory,
                options,
                &mut src,
                &mut flagger::TemplateUse {
                    used: &mut used_metric_templates,
                    reported: &mut reported_metric_templates,
                },
            ),
            ("flagger.app", "MetricTemplate") => {
                // Folded into the Canaries that use it (below, once all are known).
                Translation::default()
            }
            ("flagger.app", other) => {
                src.skip(
                    "spec",
                    format!(
                        "Cutover has no counterpart of Flagger's {other} (notifications: a \
                         NotificationChannel and spec.notify)"
                    ),
                );
                Translation::default()
            }
            _ => continue,
        };
        translated[index] = Some(translation.objects);
        claims.extend(translation.claims);
    }
    let mut objects = Vec::new();
    for (index, doc) in documents.iter().enumerate() {
        if let Some(made) = translated[index].take() {
            objects.extend(made);
            continue;
        }
        let mine: Vec<&Claim> = claims.iter().filter(|c| c.index() == index).collect();
        if let Some(kept) = passthrough::apply(doc, &label(doc, index), &mine, &mut notes) {
            objects.push(kept);
        }
    }
    for (index, doc) in documents.iter().enumerate() {
        if group_of(doc) == "flagger.app"
            && kind_of(doc) == Some("MetricTemplate")
            && !used_metric_templates.contains(&index)
        {
            notes.push(format!(
                "{}: left out: no Canary of the input uses it (its query becomes a metric of \
                 the AnalysisTemplate of each Canary that does)",
                label(doc, index)
            ));
        }
    }
    Imported {
        objects,
        untranslated,
        notes,
    }
}

// ---------------------------------------------------------------------------------------
// The command

/// The files to read: `-` (stdin), files, and the `*.yaml`/`*.yml` of folders (sorted).
fn expand(files: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() != "-" && f.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| format!("cannot read the folder {}: {e}", f.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<(String, String), String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(("<stdin>".to_owned(), s));
    }
    std::fs::read_to_string(path)
        .map(|t| (path.display().to_string(), t))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The output: YAML documents separated by `---`, or one JSON `v1` List (what `kubectl
/// apply -f` and `kubectl cutover lint` read).
fn render(objects: &[Value], output: Output) -> Result<String, String> {
    match output {
        Output::Yaml => {
            let mut out = String::new();
            for o in objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(o).map_err(|e| e.to_string())?);
            }
            Ok(out)
        }
        Output::Json => {
            let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects });
            serde_json::to_string_pretty(&list)
                .map(|s| s + "\n")
                .map_err(|e| e.to_string())
        }
    }
}

/// `import -f FILE... [--allow-partial] [-o yaml|json]`: prints the Cutover objects on
/// stdout and, on stderr, one line per field that could not be translated; exit 1 when there
/// are any (or an input cannot be read), unless `allow_partial`.
pub fn run(
    files: &[PathBuf],
    allow_partial: bool,
    output: Option<Output>,
    options: &Options,
) -> ExitCode {
    let paths = match expand(files) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut documents = Vec::new();
    for path in &paths {
        let (label, text) = match read(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (i, doc) in crate::lint::documents(&text).into_iter().enumerate() {
            match doc {
                Ok(Value::Null) => {}
                Ok(value) => documents.push(value),
                Err(e) => {
                    eprintln!("error: {label}: document {}: {e}", i + 1);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let imported = import(&documents, options);
    match render(&imported.objects, output.unwrap_or(Output::Yaml)) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    for u in &imported.untranslated {
        eprintln!("{u}");
    }
    let n = imported.untranslated.len();
    if n == 0 {
        return ExitCode::SUCCESS;
    }
    if allow_partial {
        eprintln!("warning: {n} field(s) were not translated (listed above)");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {n} field(s) could not be translated (listed above); --allow-partial \
             accepts the output without them"
        );
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_paths() {
        for ok in ["30s", "1m30s", "500ms", "1.5h", "2h"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "30", "s", "1x", ".5s", "1.s", "{{args.d}}"] {
            assert!(!is_duration(bad), "{bad}");
        }
        assert_eq!(field("spec", "steps"), "spec.steps");
        assert_eq!(field("", "spec"), "spec");
        assert_eq!(
            field("spec.plugins", "argoproj-labs/gatewayAPI"),
            "spec.plugins[argoproj-labs/gatewayAPI]"
        );
        assert_eq!(at("spec.steps", 3), "spec.steps[3]");
        assert_eq!(duration_seconds("1m30s"), Some(90.0));
        assert_eq!(duration_seconds("500ms"), Some(0.5));
        assert_eq!(duration_seconds("2h"), Some(7200.0));
        assert_eq!(duration_seconds("x"), None);
    }
}
